"""``maas-base model ...``: deploy, list, show, scale, delete and evaluate models."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from maasbase.cli.client import ApiClient

app = typer.Typer(help="Deploy and manage models.", no_args_is_help=True)
out = Console()

ServerOpt = Annotated[
    str | None, typer.Option("--server-url", help="Server [MAAS_SERVER_URL or 127.0.0.1:8080].")
]
KeyOpt = Annotated[str | None, typer.Option("--api-key", help="API key [MAAS_API_KEY].")]


def _source(source: str) -> dict[str, Any]:
    """``hf:org/repo[:file]``, ``ms:org/repo[:file]`` or a local path."""
    for prefix, kind in (("hf:", "huggingface"), ("ms:", "modelscope")):
        if source.startswith(prefix):
            repo, _, file = source[len(prefix) :].partition(":")
            return {"type": kind, "repo_id": repo, **({"file": file} if file else {})}
    return {"type": "local_path", "path": str(Path(source).expanduser().resolve())}


def _pairs(items: list[str], what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{what} {item!r}: expected KEY=VALUE")
        result[key] = value
    return result


def _spec(
    source: str,
    backend: str,
    backend_version: str | None,
    param: list[str],
    env: list[str],
    secret_env: list[str],
    replicas: int,
    placement: str,
    selector: list[str],
    gpu: list[str],
    gpus_per_replica: int | None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": _source(source),
        "backend": backend,
        "backend_parameters": param,
        "env": _pairs(env, "--env"),
        "secret_env": secret_env,
        "replicas": replicas,
        "placement": placement,
        "worker_selector": _pairs(selector, "--worker-selector"),
    }
    if backend_version:
        spec["backend_version"] = backend_version
    if gpu:
        spec["gpu_selector"] = gpu
        spec["gpus_per_replica"] = gpus_per_replica or len(gpu)
    return spec


SourceArg = Annotated[
    str, typer.Option("--source", help="hf:org/repo[:file], ms:org/repo[:file] or a local path.")
]
BackendOpt = Annotated[str, typer.Option(help="vllm, sglang, llama.cpp, ... or a custom one.")]
ParamOpt = Annotated[
    list[str], typer.Option("--param", help="Backend CLI argument (repeat), e.g. --param=-c.")
]
EnvOpt = Annotated[
    list[str],
    typer.Option(
        "--env",
        help="KEY=VALUE (repeat). Names like *_TOKEN, *_KEY, *_SECRET, *_PASSWORD are "
        "secret: stored encrypted and never shown again.",
    ),
]
SecretEnvOpt = Annotated[
    list[str], typer.Option("--secret-env", help="Another --env NAME whose value is secret.")
]
SelectorOpt = Annotated[list[str], typer.Option("--worker-selector", help="label=value (repeat).")]
GpuOpt = Annotated[list[str], typer.Option("--gpu", help="Manual GPU worker:index (repeat).")]


@app.command()
def deploy(
    name: str,
    source: SourceArg,
    backend: BackendOpt = "llama.cpp",
    backend_version: Annotated[str | None, typer.Option()] = None,
    param: ParamOpt = [],  # noqa: B006 - typer reads list defaults
    env: EnvOpt = [],  # noqa: B006
    secret_env: SecretEnvOpt = [],  # noqa: B006
    replicas: int = 1,
    placement: Annotated[str, typer.Option(help="spread or binpack.")] = "spread",
    worker_selector: SelectorOpt = [],  # noqa: B006
    gpu: GpuOpt = [],  # noqa: B006
    gpus_per_replica: int | None = None,
    server_url: ServerOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Deploy a model."""
    body = _spec(
        source, backend, backend_version, param, env, secret_env, replicas, placement,
        worker_selector, gpu, gpus_per_replica,
    )  # fmt: skip
    client = ApiClient(server_url, api_key)
    model = client.request("POST", "/api/v1/models", json={"name": name, **body})
    out.print(
        f"deployed [bold]{model['name']}[/] (id {model['id']}, {model['replicas']} replica(s))"
    )
    out.print(f"follow it with: maas-base model show {model['name']}")


@app.command()
def evaluate(
    source: SourceArg,
    backend: BackendOpt = "llama.cpp",
    param: ParamOpt = [],  # noqa: B006
    placement: str = "spread",
    worker_selector: SelectorOpt = [],  # noqa: B006
    gpu: GpuOpt = [],  # noqa: B006
    server_url: ServerOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Would one replica fit now, and where? (Creates nothing.)"""
    body = _spec(source, backend, None, param, [], [], 1, placement, worker_selector, gpu, None)
    result = ApiClient(server_url, api_key).request("POST", "/api/v1/model-evaluations", json=body)
    colour = "green" if result["schedulable"] else "red"
    out.print(
        f"[{colour}]{'fits' if result['schedulable'] else 'does not fit'}[/]: {result['message']}"
    )
    if result.get("estimate"):
        out.print(f"estimate: {result['estimate']}")
    for worker, reason in result.get("reasons", {}).items():
        out.print(f"  {worker}: {reason or 'could take it'}")


@app.command("list")
def list_models(server_url: ServerOpt = None, api_key: KeyOpt = None) -> None:
    """List models."""
    models = ApiClient(server_url, api_key).get("/api/v1/models", per_page=1000)["items"]
    table = Table("ID", "NAME", "BACKEND", "REPLICAS", "RUNNING", "CATEGORIES", "SOURCE")
    for m in models:
        source = m["source"]
        where = source.get("repo_id") or source.get("path") or ""
        table.add_row(
            str(m["id"]), m["name"], m["backend"], str(m["replicas"]),
            f"{m['instances']['running']}/{m['instances']['total']}",
            ",".join(m["categories"]), where,
        )  # fmt: skip
    out.print(table)


def _instances_table(instances: list[dict[str, Any]]) -> Table:
    table = Table("INSTANCE", "STATE", "WORKER", "GPUS", "PORT", "RESTARTS", "PROGRESS", "MESSAGE")
    for i in instances:
        gpus = ",".join(str(g) for g in i["gpu_indexes"]) or ("cpu" if i["worker_name"] else "")
        message = i["state_message"].splitlines()[0] if i["state_message"] else ""
        progress: Any = ""
        download = i.get("download") or {}
        if i["state"] == "downloading" and download.get("bytes_total"):
            done, total = download["bytes_done"], download["bytes_total"]
            progress = Table.grid(padding=(0, 1))
            progress.add_row(
                ProgressBar(total=total, completed=done, width=20),
                f"{100 * done / total:.0f}% {done / 2**20:.0f}/{total / 2**20:.0f} MiB",
            )
        table.add_row(
            i["name"], i["state"], i["worker_name"] or "", gpus, str(i["port"] or ""),
            str(i["restart_count"]), progress, message[:80],
        )  # fmt: skip
    return table


def _env_line(model: dict[str, Any]) -> str:
    """The model's variables; secret ones as set, their values are never sent back."""
    plain = [f"{name}={value}" for name, value in sorted(model.get("env", {}).items())]
    secret = [f"{name}=(secret, set)" for name in model.get("secret_env", [])]
    return ", ".join(plain + secret)


@app.command()
def show(
    name: str,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh until every instance runs.")
    ] = False,
    server_url: ServerOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Show a model and where each of its instances runs (or why not)."""
    client = ApiClient(server_url, api_key)
    model = client.find_model(name)
    out.print(f"[bold]{model['name']}[/] (id {model['id']}): {model['backend']}, "
              f"{model['replicas']} replica(s), placement {model['placement']}")  # fmt: skip
    if variables := _env_line(model):
        out.print(f"env: {variables}", highlight=False, markup=False)

    def fetch() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = client.get(
            "/api/v1/model-instances", model_id=model["id"], per_page=1000
        )["items"]
        return items

    if not watch:
        out.print(_instances_table(fetch()))
        return
    with Live(_instances_table(fetch()), console=out, refresh_per_second=4) as live:
        try:
            while True:
                instances = fetch()
                live.update(_instances_table(instances))
                if instances and all(i["state"] == "running" for i in instances):
                    break
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass


@app.command()
def scale(name: str, replicas: int, server_url: ServerOpt = None, api_key: KeyOpt = None) -> None:
    """Set the number of replicas."""
    client = ApiClient(server_url, api_key)
    model = client.find_model(name)
    client.request("PATCH", f"/api/v1/models/{model['id']}", json={"replicas": replicas})
    out.print(f"{model['name']}: {replicas} replica(s)")


@app.command()
def delete(name: str, server_url: ServerOpt = None, api_key: KeyOpt = None) -> None:
    """Delete a model and stop its instances."""
    client = ApiClient(server_url, api_key)
    model = client.find_model(name)
    client.request("DELETE", f"/api/v1/models/{model['id']}")
    out.print(f"deleted {model['name']}")


def logs_command(
    instance: Annotated[str, typer.Argument(help="Instance name or id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming.")] = False,
    tail: Annotated[int, typer.Option(help="Lines from the end.")] = 100,
    server_url: ServerOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Print (and follow) the log of a model instance."""
    client = ApiClient(server_url, api_key)
    instance_id = instance
    if not instance.isdigit():
        items = client.get("/api/v1/model-instances", per_page=1000)["items"]
        matches = [i["id"] for i in items if i["name"] == instance]
        if not matches:
            raise typer.BadParameter(f"no instance named {instance!r}; see 'maas-base model show'")
        instance_id = str(matches[0])
    try:
        for chunk in client.stream_text(
            f"/api/v1/model-instances/{instance_id}/logs", tail=tail, follow=follow
        ):
            print(chunk, end="", flush=True)
    except KeyboardInterrupt:
        pass
