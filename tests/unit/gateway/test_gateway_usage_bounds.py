"""Usage records within the bounds the server stores, the server's answer to a batch,
and the durable spool of standalone gateways (real files in a temporary folder)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from maasbase.common.errors import Unavailable
from maasbase.common.routing import MAX_TOKENS, MODEL_CHARS, Usage, UsageRecord
from maasbase.gateway.app import create_gateway_app
from maasbase.gateway.config import GatewayConfig
from maasbase.gateway.fakes import FakeKeyResolver, FakeRoutingSource, MemoryUsageSink
from maasbase.gateway.metering import HttpUsageSink, UsageMeter
from maasbase.gateway.spool import UsageSpool


def usage(i: int = 0, **fields: Any) -> Usage:
    record = Usage(1_700_000_000.0 + i, 1, 2, "m", "chat.completions", "u", 200, 3, 4, 1.5)
    for name, value in fields.items():
        setattr(record, name, value)
    return record


GOOD = usage().row()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt_tokens", -995_754),
        ("completion_tokens", 2**63),
        ("model", "x" * (MODEL_CHARS + 1)),
        ("model", "nul\x00inside"),
        ("endpoint", "e" * 65),
        ("upstream_id", "u" * 129),
        ("status", 0),
        ("status", 600),
        ("latency_ms", float("nan")),
        ("ttft_ms", -1.0),
        ("api_key_id", 2**63),
        ("time", "2026-01-01T00:00:00"),  # no time zone
        ("time", "1970-01-01T00:00:00Z"),
    ],
)
def test_a_record_outside_the_columns_is_invalid(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        UsageRecord.model_validate(GOOD | {field: value})
    assert caught.value.errors()[0]["loc"] == (field,)


def test_the_gateway_fits_what_upstreams_report_into_the_bounds() -> None:
    meter = UsageMeter(MemoryUsageSink())
    wild = usage(
        prompt_tokens=-5,
        completion_tokens=2**63,
        status=0,
        model="y" * 5000,
        latency_ms=float("inf"),
        ttft_ms=float("nan"),
    )
    meter.record(wild)
    record = wild.to_record()  # valid now
    assert (record.prompt_tokens, record.completion_tokens) == (0, MAX_TOKENS)
    assert record.status == 500
    assert record.model == "y" * MODEL_CHARS
    assert record.ttft_ms is None


class AnsweringClient:
    """Stands in for ``ControlPlaneClient``: answers each POST with the next reply."""

    def __init__(self, *replies: tuple[int, bytes]) -> None:
        self.replies = list(replies)
        self.bodies: list[dict[str, Any]] = []

    async def request(
        self, method: str, path: str, *, body: bytes | None = None
    ) -> tuple[int, bytes]:
        assert body is not None
        self.bodies.append(orjson.loads(body))
        status, data = self.replies.pop(0)
        if status >= 500:
            raise Unavailable(f"HTTP {status}")
        return status, data

    async def aclose(self) -> None:
        pass


async def test_rejected_records_are_logged_once_and_never_sent_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answer = {"stored": 2, "rejected": [{"index": 1, "reason": "API key 9 does not exist"}]}
    client = AnsweringClient((503, b""), (202, orjson.dumps(answer)))
    sink = HttpUsageSink("http://server", "t", client=client)  # type: ignore[arg-type]
    meter = UsageMeter(sink)
    for i in range(3):
        meter.record(usage(i, api_key_id=9 if i == 1 else 1))
    assert not await meter.flush()  # the server is down: kept
    assert meter.pending == 3
    with caplog.at_level(logging.ERROR, "maasbase.gateway.metering"):
        assert await meter.flush()
    assert meter.pending == 0
    assert len(client.bodies) == 2
    assert client.bodies[0] == client.bodies[1]
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "key 9" in line
    assert "API key 9 does not exist" in line
    assert await meter.flush()  # nothing left to send
    assert len(client.bodies) == 2


async def test_a_batch_refused_as_a_whole_is_dropped_not_retried() -> None:
    client = AnsweringClient((422, b'{"detail": "bad"}'))
    meter = UsageMeter(HttpUsageSink("http://server", "t", client=client))  # type: ignore[arg-type]
    meter.record(usage())
    assert await meter.flush()
    assert meter.pending == 0


def spooled_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.json"))


async def test_spooled_usage_survives_a_restart(tmp_path: Path) -> None:
    sink = MemoryUsageSink()
    sink.failing = True
    spool = UsageSpool(tmp_path)
    spool.open()
    meter = UsageMeter(sink, batch_size=2, spool=spool)
    for i in range(5):
        meter.record(usage(i))
    assert not await meter.flush()
    assert meter.pending == 0  # on disk, not in memory
    assert spool.pending == 5
    assert len(spooled_files(tmp_path)) == 3
    spool.close()

    # The process restarts: a new spool finds the batches and sends them first.
    sink.failing = False
    again = UsageSpool(tmp_path)
    again.open()
    restarted = UsageMeter(sink, spool=again)
    restarted.record(usage(5))
    assert await restarted.flush()
    assert [r.time.timestamp() for r in sink.records] == [1_700_000_000.0 + i for i in range(6)]
    assert spooled_files(tmp_path) == []
    again.close()


async def test_each_process_takes_its_own_slot_and_adopts_abandoned_ones(tmp_path: Path) -> None:
    first, second = UsageSpool(tmp_path), UsageSpool(tmp_path)
    first.open()
    second.open()
    second.append([usage(0), usage(1)])
    first.append([usage(2)])
    assert len({path.parent for path in spooled_files(tmp_path)}) == 2
    second.close()  # its process stops with a batch unsent
    first.close()
    third = UsageSpool(tmp_path)
    third.open()
    assert third.pending == 3
    assert len({path.parent for path in spooled_files(tmp_path)}) == 1
    third.close()


async def test_the_spool_is_bounded_and_drops_the_oldest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = UsageSpool(tmp_path, max_bytes=1000)
    spool.open()
    with caplog.at_level(logging.ERROR, "maasbase.gateway.spool"):
        for i in range(20):
            spool.append([usage(i)])
    assert spool.dropped > 0
    assert spool.pending == 20 - spool.dropped
    assert sum(path.stat().st_size for path in spooled_files(tmp_path)) <= 1000
    assert "over its cap" in caplog.text
    oldest = spool.oldest()
    assert oldest is not None
    assert spool.read(oldest)[0].time == 1_700_000_000.0 + spool.dropped
    spool.close()


async def test_an_unreadable_spool_file_is_dropped(tmp_path: Path) -> None:
    sink = MemoryUsageSink()
    spool = UsageSpool(tmp_path)
    spool.open()
    spool.append([usage(0)])
    spool.append([usage(1)])
    [broken, _] = spooled_files(tmp_path)
    broken.write_bytes(b"not json")
    meter = UsageMeter(sink, spool=spool)
    assert await meter.flush()
    assert [r.time.timestamp() for r in sink.records] == [1_700_000_001.0]
    assert spooled_files(tmp_path) == []
    spool.close()


async def test_a_flush_cut_by_shutdown_finishes_and_sends_nothing_twice() -> None:
    release = asyncio.Event()

    class SlowSink(MemoryUsageSink):
        async def send(self, usages: list[Usage]) -> None:
            await super().send(usages)
            await release.wait()  # the server stored the batch; its answer is slow

    sink = SlowSink()
    sending = asyncio.Event()

    async def sleep(_: float) -> None:
        await asyncio.sleep(0)
        sending.set()

    meter = UsageMeter(sink, sleep=sleep)
    meter.record(usage(0))
    task = asyncio.ensure_future(meter.run())
    await sending.wait()
    await asyncio.sleep(0)
    task.cancel()  # the gateway stops while the batch is on its way
    await asyncio.gather(task, return_exceptions=True)
    meter.record(usage(1))
    release.set()
    assert await meter.close()
    assert [r.time.timestamp() for r in sink.records] == [1_700_000_000.0, 1_700_000_001.0]


async def test_a_gateway_whose_spool_cannot_be_written_still_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("")
    sink = MemoryUsageSink()
    config = GatewayConfig(usage_spool=tmp_path / "a-file" / "spool")
    app = create_gateway_app(
        routes=FakeRoutingSource(), keys=FakeKeyResolver(), usage=sink, config=config
    )
    with caplog.at_level(logging.ERROR, "maasbase.gateway"):
        await app.start()
    try:
        assert app.meter.spool is None
        assert "usage is kept in memory only" in caplog.text
        app.meter.record(usage())
    finally:
        await app.aclose()
    assert len(sink.records) == 1
