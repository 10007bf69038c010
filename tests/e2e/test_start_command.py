"""`maas-base start` as a user runs it: a real process on the embedded PostgreSQL."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.processes import MAAS, free_port, wait_until

pytestmark = pytest.mark.e2e


def _postgres_pids(data_dir: Path) -> list[int]:
    pids = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(data_dir / "postgres") in cmdline:
            pids.append(proc.pid)
    return pids


@contextmanager
def running(data_dir: Path, port: int, *extra: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [
            MAAS,
            "start",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--worker-port",
            str(free_port()),
            "--simulate-gpus",
            "2xL4:24",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"maas-base exited early:\n{proc.stdout.read()}"  # type: ignore[union-attr]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "maas-base did not become ready in 60 s"
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stop(proc: subprocess.Popen[str]) -> tuple[float, str]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    return time.monotonic() - started, output


def _login(base: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{base}/api/v1/auth/login", json={"username": "admin", "password": password}, timeout=10
    )


def test_start_restart_stop_and_reset_password(shared_tmp: Path) -> None:
    data_dir = shared_tmp / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    with running(data_dir, port) as proc:
        password_file = data_dir / "initial_admin_password"
        token_file = data_dir / "token"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        password = password_file.read_text().strip()
        login = _login(base, password)
        assert login.status_code == 200
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        key = httpx.post(f"{base}/api/v1/api-keys", json={"name": "e2e"}, headers=headers).json()

        def local_worker() -> list[dict[str, object]]:
            items: list[dict[str, object]] = httpx.get(
                f"{base}/api/v1/workers", headers=headers
            ).json()["items"]
            return items

        wait_until(
            lambda: [w["state"] for w in local_worker()] == ["ready"],
            timeout=30,
            what="the local worker",
        )
        assert len(local_worker()[0]["hardware"]["gpus"]) == 2  # type: ignore[index]
        assert _postgres_pids(data_dir), "embedded PostgreSQL should be running"
        elapsed, output = _stop(proc)
    assert str(password_file) in output.replace("\n", "")
    assert password not in output, "the admin password must not be printed"
    assert elapsed < 10, f"stopping took {elapsed:.1f} s"
    assert not _postgres_pids(data_dir), "embedded PostgreSQL left running after stop"

    with running(data_dir, port) as proc:
        assert _login(base, password).status_code == 200
        me = httpx.get(f"{base}/api/v1/users/me", headers={"Authorization": f"Bearer {key['key']}"})
        assert me.status_code == 200
        assert "first start" not in _stop(proc)[1]

    reset = subprocess.run(
        [MAAS, "reset-admin-password", "--data-dir", str(data_dir), "--password", "brand-new-pw"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert not _postgres_pids(data_dir)

    with running(data_dir, port) as proc:
        assert _login(base, password).status_code == 401
        assert _login(base, "brand-new-pw").status_code == 200
        _stop(proc)


def test_bad_flags_fail_with_a_clear_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [MAAS, "start", "--data-dir", str(tmp_path), "--database-url", "oracle://x/y"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode != 0
    assert "unsupported database" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
