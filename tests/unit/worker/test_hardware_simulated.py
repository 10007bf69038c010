"""Simulated GPUs: the spec grammar, vendor inference, UUIDs and the shipped fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maasbase.common.errors import InvalidRequest
from maasbase.common.hardware import GpuDevice, GpuVendor, HardwareReport, SystemInfo
from maasbase.worker.hardware.simulated import (
    MAX_COUNT,
    GpuSpecEntry,
    GpuSpecError,
    devices_from_spec,
    fixture_names,
    format_gpu_spec,
    infer_vendor,
    load_fixture,
    load_simulation,
    parse_gpu_spec,
)

GIB = 1024**3
SHIPPED = {"8xH100-80GB", "mixed-4090-4080", "8xAscend-910B-64GB", "apple-m2-max-96GB", "cpu-only"}


def test_counts_names_vendors_and_memory() -> None:
    assert parse_gpu_spec("4xH100:80,2xL4:24") == [
        GpuSpecEntry(count=4, vendor=GpuVendor.NVIDIA, name="H100", memory_gib=80.0),
        GpuSpecEntry(count=2, vendor=GpuVendor.NVIDIA, name="L4", memory_gib=24.0),
    ]


def test_count_defaults_to_one_and_vendor_prefix_wins() -> None:
    assert parse_gpu_spec("H100:80") == [GpuSpecEntry(1, GpuVendor.NVIDIA, "H100", 80.0)]
    assert parse_gpu_spec("2xamd/MI300X:192") == [GpuSpecEntry(2, GpuVendor.AMD, "MI300X", 192.0)]
    assert parse_gpu_spec("1xNVIDIA/Foo:7.5") == [GpuSpecEntry(1, GpuVendor.NVIDIA, "Foo", 7.5)]


def test_spaces_in_names_and_around_parts() -> None:
    assert parse_gpu_spec(" 2 x RTX 4090 : 24 , M2 Max:96 ") == [
        GpuSpecEntry(2, GpuVendor.NVIDIA, "RTX 4090", 24.0),
        GpuSpecEntry(1, GpuVendor.APPLE, "M2 Max", 96.0),
    ]


@pytest.mark.parametrize(
    ("name", "vendor"),
    [
        ("H100", GpuVendor.NVIDIA),
        ("H200", GpuVendor.NVIDIA),
        ("A100-SXM4-80GB", GpuVendor.NVIDIA),
        ("L4", GpuVendor.NVIDIA),
        ("L40S", GpuVendor.NVIDIA),
        ("T4", GpuVendor.NVIDIA),
        ("B200", GpuVendor.NVIDIA),
        ("GH200", GpuVendor.NVIDIA),
        ("RTX 4090", GpuVendor.NVIDIA),
        ("NVIDIA H100 80GB HBM3", GpuVendor.NVIDIA),
        ("MI300X", GpuVendor.AMD),
        ("MI250", GpuVendor.AMD),
        ("Radeon RX 7900 XTX", GpuVendor.AMD),
        ("910B", GpuVendor.ASCEND),
        ("910B3", GpuVendor.ASCEND),
        ("Ascend 910B", GpuVendor.ASCEND),
        ("310P3", GpuVendor.ASCEND),
        ("M1", GpuVendor.APPLE),
        ("M2 Max", GpuVendor.APPLE),
        ("M4 Pro", GpuVendor.APPLE),
        ("Apple M3 Ultra", GpuVendor.APPLE),
        ("Gaudi3", None),
        ("Max 1550", None),
    ],
)
def test_vendor_inference(name: str, vendor: GpuVendor | None) -> None:
    assert infer_vendor(name) is vendor


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "4xH100",
            "bad GPU spec '4xH100': expected COUNTxNAME:MEMORY_GIB, e.g. 4xH100:80,2xL4:24",
        ),
        ("", "empty GPU spec: expected COUNTxNAME:MEMORY_GIB, e.g. 4xH100:80,2xL4:24"),
        ("0xH100:80", "bad GPU spec '0xH100:80': count must be from 1 to 1024, got 0;"),
        ("1025xH100:80", "count must be from 1 to 1024, got 1025"),
        ("4xH100:0", "bad GPU spec '4xH100:0': memory must be more than 0 GiB, got 0;"),
        ("4xH100:-80", "memory must be more than 0 GiB, got -80"),
        ("4xH100:lots", "memory 'lots' is not a number of GiB"),
        ("4xH100:nan", "memory 'nan' is not a number of GiB"),
        ("4xH100:99999", "memory must be at most 16384 GiB, got 99999"),
        ("4xH100:80,,2xL4:24", "bad GPU spec '4xH100:80,,2xL4:24': entry 2 is empty;"),
        ("4xH100:80,", "entry 2 is empty"),
        ("4x:80", "the GPU name is empty"),
        ("2xH100!:80", "GPU name 'H100!' may only hold letters"),
        ("2xintel/Arc:16", "unknown vendor 'intel', use one of nvidia, amd, apple, ascend"),
        ("2xGaudi3:128", "cannot tell the vendor of 'Gaudi3'; prefix it with nvidia/"),
        ("4xH100:80:1", "expected COUNTxNAME:MEMORY_GIB"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(GpuSpecError) as caught:
        parse_gpu_spec(spec)
    assert message in caught.value.message
    assert isinstance(caught.value, InvalidRequest)
    assert caught.value.status_code == 400


def test_a_spec_without_memory_points_at_the_fixtures() -> None:
    with pytest.raises(GpuSpecError, match="or a fixture: 8xAscend-910B-64GB, 8xH100-80GB"):
        load_simulation("8xH100-80G")


def test_simulated_devices_are_idle_and_numbered_per_vendor() -> None:
    devices = devices_from_spec(parse_gpu_spec("2xH100:80,amd/MI300X:192,L4:24"))

    assert [(d.vendor, d.index, d.uuid) for d in devices] == [
        (GpuVendor.NVIDIA, 0, "SIM-GPU-H100-0"),
        (GpuVendor.NVIDIA, 1, "SIM-GPU-H100-1"),
        (GpuVendor.AMD, 0, "SIM-GPU-MI300X-2"),
        (GpuVendor.NVIDIA, 2, "SIM-GPU-L4-3"),
    ]
    assert devices[0].memory_total == 80 * GIB
    assert all(d.simulated and d.memory_used == 0 for d in devices)
    assert all(d.utilization == 0.0 and d.temperature is None for d in devices)


def test_uuids_are_stable_and_unique_per_worker() -> None:
    entries = parse_gpu_spec("2xRTX 4090:24")
    plain = [d.uuid for d in devices_from_spec(entries)]
    first = [d.uuid for d in devices_from_spec(entries, salt="worker-a")]
    again = [d.uuid for d in devices_from_spec(entries, salt="worker-a")]
    other = [d.uuid for d in devices_from_spec(entries, salt="worker-b")]

    assert plain == ["SIM-GPU-RTX-4090-0", "SIM-GPU-RTX-4090-1"]
    assert first == again
    assert first[0].startswith("SIM-GPU-")
    assert first[0].endswith("-RTX-4090-0")
    assert not set(first) & set(other)


_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,10}( [A-Za-z0-9._+-]{1,6})?", fullmatch=True)
_entries = st.builds(
    GpuSpecEntry,
    count=st.integers(min_value=1, max_value=MAX_COUNT),
    vendor=st.sampled_from(list(GpuVendor)),
    name=_names,
    memory_gib=st.one_of(
        st.integers(min_value=1, max_value=16384).map(float),
        st.floats(min_value=0.001, max_value=16384, allow_nan=False, allow_infinity=False),
    ),
)


@given(st.lists(_entries, min_size=1, max_size=6))
def test_format_then_parse_gives_the_entries_back(entries: list[GpuSpecEntry]) -> None:
    assert parse_gpu_spec(format_gpu_spec(entries)) == entries


_small_entries = st.builds(
    GpuSpecEntry,
    count=st.integers(min_value=1, max_value=64),
    vendor=st.sampled_from(list(GpuVendor)),
    name=_names,
    memory_gib=st.floats(min_value=0.5, max_value=1024),
)


@given(st.lists(_small_entries, min_size=1, max_size=5))
def test_every_simulated_device_is_distinct_and_matches_its_entry(
    entries: list[GpuSpecEntry],
) -> None:
    devices = devices_from_spec(entries, salt="w")

    assert len(devices) == sum(e.count for e in entries)
    assert len({d.uuid for d in devices}) == len(devices)
    assert len({(d.vendor, d.index) for d in devices}) == len(devices)
    expected = [(e.vendor, e.name, e.memory_bytes) for e in entries for _ in range(e.count)]
    assert [(d.vendor, d.name, d.memory_total) for d in devices] == expected


def test_shipped_fixtures_are_all_there_and_valid() -> None:
    assert set(fixture_names()) == SHIPPED
    for name in SHIPPED:
        fixture = load_fixture(name)
        assert fixture.name == name
        assert fixture.system.memory_used <= fixture.system.memory_total
        assert len({g.uuid for g in fixture.gpus}) == len(fixture.gpus)
        assert all(g.memory_used <= g.memory_total for g in fixture.gpus)
        assert all(not g.simulated for g in fixture.gpus)
        system = SystemInfo(
            **fixture.system.model_dump(), disk_total=1, disk_free=1, hostname="fixture"
        )
        HardwareReport(system=system, gpus=fixture.gpus)


def test_h100_fixture_matches_what_nvml_reports() -> None:
    fixture = load_fixture("8xH100-80GB")
    assert len(fixture.gpus) == 8
    assert {g.name for g in fixture.gpus} == {"NVIDIA H100 80GB HBM3"}
    assert {g.memory_total for g in fixture.gpus} == {85520809984}
    assert fixture.system.arch == "x86_64"


def test_other_fixtures() -> None:
    mixed = load_fixture("mixed-4090-4080")
    assert [(g.name, g.memory_total // 2**20) for g in mixed.gpus] == [
        ("NVIDIA GeForce RTX 4090", 24564),
        ("NVIDIA GeForce RTX 4080", 16376),
    ]
    ascend = load_fixture("8xAscend-910B-64GB")
    assert {(g.vendor, g.memory_total) for g in ascend.gpus} == {(GpuVendor.ASCEND, 64 * GIB)}
    assert len(ascend.gpus) == 8
    apple = load_fixture("apple-m2-max-96GB")
    assert [(g.vendor, g.memory_total) for g in apple.gpus] == [(GpuVendor.APPLE, 96 * GIB)]
    assert apple.system.memory_total == 96 * GIB
    assert load_fixture("cpu-only").gpus == []


def test_simulating_a_shipped_fixture() -> None:
    simulation = load_simulation("8xH100-80GB", salt="gpu-node-7")

    assert len(simulation.gpus) == 8
    assert all(g.simulated and g.memory_used == 0 for g in simulation.gpus)
    assert {g.memory_total for g in simulation.gpus} == {85520809984}
    assert all(g.uuid.startswith("SIM-GPU-") for g in simulation.gpus)
    assert simulation.system is not None
    assert simulation.system.cpu_count == 224


def test_simulating_a_fixture_file(tmp_path: Path) -> None:
    path = tmp_path / "box.json"
    gpu = GpuDevice(
        index=0,
        vendor=GpuVendor.NVIDIA,
        name="NVIDIA L4",
        uuid="GPU-1",
        memory_total=23034 * 2**20,
        memory_used=0,
    )
    fixture = {
        "name": "box",
        "system": {"cpu_count": 8, "memory_total": 32 * GIB, "os": "Linux 6.8", "arch": "x86_64"},
        "gpus": [gpu.model_dump(mode="json")],
    }
    path.write_text(json.dumps(fixture))

    simulation = load_simulation(str(path))

    assert [(g.name, g.uuid, g.simulated) for g in simulation.gpus] == [
        ("NVIDIA L4", "SIM-GPU-NVIDIA-L4-0", True)
    ]


def test_bad_fixture_files_are_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(GpuSpecError, match="cannot read GPU fixture file"):
        load_simulation(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x", "gpus": []}')
    with pytest.raises(GpuSpecError, match="is not valid"):
        load_simulation(str(broken))


def test_unknown_fixture_name() -> None:
    with pytest.raises(GpuSpecError, match="no GPU fixture 'nope'"):
        load_fixture("nope")
