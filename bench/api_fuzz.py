"""A longer API fuzz run than CI's: schemathesis with all its phases (explicit examples,
boundary values, random inputs, stateful sequences) against a real server, once with an
admin's API key and once with a user's.

Run: ``python bench/api_fuzz.py``. ``MAAS_FUZZ_EXAMPLES`` sets examples per operation
(default 100), ``MAAS_FUZZ_SECONDS`` a time budget per principal (default: none, each
phase runs to its end), ``MAAS_FUZZ_DATABASE_URL`` the database (default: a fresh SQLite
file; give an empty PostgreSQL or MySQL database to fuzz those). Prints schemathesis's
report and exits non-zero when it found a failure.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maasbase.common.config import Settings
from maasbase.server.app import create_app
from maasbase.server.runtime import close_server, open_server
from tests.support.api_fuzz import principals, run_schemathesis, serve

ADMIN_PASSWORD = "fuzz-admin-password-1"


async def main() -> int:
    examples = int(os.environ.get("MAAS_FUZZ_EXAMPLES", "100"))
    seconds = int(os.environ.get("MAAS_FUZZ_SECONDS", "0")) or None
    # Model evaluations would ask a hub for metadata: keep them on this machine.
    os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
    os.environ.setdefault("MODELSCOPE_DOMAIN", "http://127.0.0.1:9")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="maas-fuzz-") as folder:
        for who in ("admin", "user"):
            data = Path(folder) / who
            url = os.environ.get("MAAS_FUZZ_DATABASE_URL") or f"sqlite:///{data}.db"
            settings = Settings(data_dir=data, bootstrap_password=ADMIN_PASSWORD)
            opened = await open_server(settings, url)
            try:
                app = create_app(opened.state, run_controllers=False)
                async with serve(app) as base_url:
                    principal = (await principals(base_url, ADMIN_PASSWORD))[who]
                    result = await run_schemathesis(
                        base_url, principal, max_examples=examples, max_time=seconds
                    )
            finally:
                await close_server(opened.state)
            print(f"=== as {who} ===\n{result.output}", flush=True)
            failed += result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
