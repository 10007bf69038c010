"""From a backend definition and an instance's facts to the exact process to run.

Everything here is pure: :func:`build_launch_spec` turns a
:class:`~maasbase.backends.definition.BackendDefinition` and a
:class:`LaunchContext` into a :class:`LaunchSpec` (argv, environment, health
path). Nothing goes through a shell: argv is a list, so no parameter can inject
a command. The only outside fact consulted is whether an executable is on PATH,
through the injectable ``which``.

Argument precedence, lowest first: the definition's ``default_parameters``,
the template (``command`` plus matching ``conditional_args``, which carry facts
the platform decided), then the user's ``backend_parameters``. A later
parameter replaces every earlier one with the same flag (aliases, ``_``/``-``
spelling and ``--no-`` forms included). Flags the platform owns (host, port,
served model name, ...) are refused in user parameters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from maasbase.backends.definition import (
    ALLOWED_PLACEHOLDERS,
    BackendDefinition,
    Condition,
    ConditionalArgs,
    ModelCategory,
    ReservedParameterError,
    UnknownPlaceholderError,
    Vendor,
    merge_parameters,
    render_template,
    template_fields,
)
from maasbase.backends.mindie import mindie_config
from maasbase.common.errors import InvalidRequest

Which = Callable[[str], str | None]
ConfigGenerator = Callable[["LaunchContext"], dict[str, Any]]

# Backends configured through a generated JSON file instead of a command line:
# backend name -> (environment variable holding the file's path, generator).
# The file is written to that path before launch, and the user's backend
# parameters go to the generator, which validates them, rather than to argv.
CONFIG_FILES: dict[str, tuple[str, ConfigGenerator]] = {
    "mindie": ("MIES_CONFIG_JSON_PATH", lambda ctx: mindie_config(ctx, port=ctx.port)),
}

# Device visibility variables per vendor. AMD gets only HIP_VISIBLE_DEVICES:
# ROCR_VISIBLE_DEVICES filters first and renumbers, so setting both to the same
# host indexes would select the wrong GPUs.
DEVICE_ENV: dict[Vendor, tuple[str, ...]] = {
    Vendor.NVIDIA: ("CUDA_VISIBLE_DEVICES",),
    Vendor.AMD: ("HIP_VISIBLE_DEVICES",),
    Vendor.ASCEND: ("ASCEND_RT_VISIBLE_DEVICES",),
    Vendor.APPLE: (),
    Vendor.CPU: (),
}
PLATFORM_ENV = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "ASCEND_RT_VISIBLE_DEVICES",
        "ASCEND_VISIBLE_DEVICES",
    }
)
# Inside a container only the assigned devices exist, renumbered from 0.
# AMD containers see every GPU through /dev/dri, so host numbering stays.
RENUMBERED_IN_CONTAINER = frozenset({Vendor.NVIDIA, Vendor.ASCEND})

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LaunchError(InvalidRequest):
    """The instance cannot be launched as asked; the message says what to change."""


class Runtime(StrEnum):
    PROCESS = "process"
    CONTAINER = "container"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DistributedInfo(_Frozen):
    """This worker's part in an instance that spans several workers."""

    world_size: int = Field(ge=2, description="number of workers")
    node_rank: int = Field(ge=0, description="0 on the leader")
    ray_address: str | None = None
    dist_init_addr: str | None = None

    @model_validator(mode="after")
    def _rank_in_range(self) -> DistributedInfo:
        if self.node_rank >= self.world_size:
            raise ValueError(f"node_rank {self.node_rank} must be below {self.world_size}")
        return self


class LaunchContext(_Frozen):
    """Facts about one instance on one worker, decided by scheduler and user."""

    model_path: str = Field(min_length=1)
    model_root: str | None = Field(
        default=None,
        description="folder holding everything model_path refers to, e.g. a whole Hugging "
        "Face cache whose snapshot files link into its blobs; defaults to model_path",
    )
    model_name: str = Field(min_length=1)
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    vendor: Vendor = Vendor.CPU
    gpu_ids: list[int] = Field(default_factory=list, description="host GPU indexes")
    tp_size: int | None = Field(default=None, ge=1)
    pp_size: int = Field(default=1, ge=1)
    context_length: int | None = Field(default=None, ge=1)
    category: ModelCategory = ModelCategory.LLM
    backend_parameters: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    data_dir: str | None = None
    distributed: DistributedInfo | None = None
    run_command: list[str] | None = Field(
        default=None, description="whole command template, for backends without one"
    )
    runtime: Runtime = Runtime.PROCESS

    @model_validator(mode="after")
    def _devices_match_vendor(self) -> LaunchContext:
        if any(i < 0 for i in self.gpu_ids) or len(set(self.gpu_ids)) != len(self.gpu_ids):
            raise ValueError(f"gpu_ids must be distinct non-negative indexes: {self.gpu_ids}")
        if self.vendor is Vendor.CPU and self.gpu_ids:
            raise ValueError("vendor cpu takes no gpu_ids; set the GPUs' vendor")
        if self.vendor is not Vendor.CPU and not self.gpu_ids:
            raise ValueError(f"vendor {self.vendor} needs gpu_ids; use vendor cpu for none")
        return self


class LaunchSpec(_Frozen):
    """Exactly what to run. ``env`` holds the variables the backend and the model set;
    a process gets them on top of the few it inherits (``engine_env``), a container gets
    only them; ``gpu_ids`` are host indexes; ``files`` maps absolute
    paths to text that must be written there before the process starts."""

    backend: str
    version: str
    runtime: Runtime
    executable: list[str]
    args: list[str]
    env: dict[str, str]
    host: str
    port: int
    health_path: str
    metrics_path: str | None
    ready_timeout: float
    cwd: str | None
    vendor: Vendor
    gpu_ids: list[int]
    model_path: str
    model_root: str
    data_dir: str | None
    files: dict[str, str] = Field(default_factory=dict)

    @property
    def argv(self) -> list[str]:
        return [*self.executable, *self.args]

    def local_url(self, path: str = "") -> str:
        """URL to reach the server from the machine it runs on."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{path}"


def device_env(vendor: Vendor, visible_ids: Iterable[int]) -> dict[str, str]:
    """Device visibility variables for ``vendor``; empty for CPU and Apple."""
    value = ",".join(str(i) for i in visible_ids)
    return {name: value for name in DEVICE_ENV[vendor]}


def _applies(block: ConditionalArgs, context: LaunchContext) -> bool:
    if block.vendors and context.vendor not in block.vendors:
        return False
    checks = {
        None: True,
        Condition.GPU: bool(context.gpu_ids),
        Condition.CPU: not context.gpu_ids,
        Condition.MULTI_GPU: len(context.gpu_ids) > 1,
        Condition.DISTRIBUTED: context.distributed is not None,
        Condition.CONTEXT_LENGTH: context.context_length is not None,
        Condition.EMBEDDING: context.category is ModelCategory.EMBEDDING,
        Condition.RERANKER: context.category is ModelCategory.RERANKER,
    }
    return checks[block.when]


def _visible_ids(context: LaunchContext) -> list[int]:
    if context.runtime is Runtime.CONTAINER and context.vendor in RENUMBERED_IN_CONTAINER:
        return list(range(len(context.gpu_ids)))
    return list(context.gpu_ids)


def _values(context: LaunchContext, visible: list[int]) -> dict[str, str]:
    tp = context.tp_size or max(1, len(context.gpu_ids))
    values = {
        "model_path": context.model_path,
        "model_name": context.model_name,
        "host": context.host,
        "port": str(context.port),
        "gpu_ids": ",".join(str(i) for i in visible),
        "gpu_count": str(len(context.gpu_ids)),
        "tp_size": str(tp),
        "pp_size": str(context.pp_size),
        "vendor": str(context.vendor),
        "python": sys.executable,
        "world_size": "1",
        "node_rank": "0",
    }
    if context.data_dir:
        values["data_dir"] = context.data_dir
    if context.context_length is not None:
        values["context_length"] = str(context.context_length)
    if dist := context.distributed:
        values |= {"world_size": str(dist.world_size), "node_rank": str(dist.node_rank)}
        if dist.ray_address:
            values["ray_address"] = dist.ray_address
        if dist.dist_init_addr:
            values["dist_init_addr"] = dist.dist_init_addr
    return values


def _render(definition: str, template: str, values: dict[str, str], where: str) -> str:
    try:
        return render_template(template, values)
    except KeyError as exc:
        name = exc.args[0]
        raise LaunchError(
            f"backend {definition!r}: placeholder {{{name}}} in {where} has no value for this "
            f"instance; provide {name} in the launch context",
            details={"placeholder": name},
        ) from exc


def _check_fit(definition: BackendDefinition, context: LaunchContext) -> None:
    name = definition.name
    if context.vendor not in definition.supported_vendors:
        supported = ", ".join(definition.supported_vendors)
        raise LaunchError(
            f"backend {name!r} does not run on {context.vendor}; it supports: {supported}"
        )
    if context.category not in definition.categories:
        served = ", ".join(definition.categories)
        raise LaunchError(
            f"backend {name!r} serves {served}, not {context.category} models; pick another"
        )
    if definition.max_gpus is not None and len(context.gpu_ids) > definition.max_gpus:
        raise LaunchError(
            f"backend {name!r} uses at most {definition.max_gpus} GPU(s) per instance; "
            f"got {len(context.gpu_ids)}"
        )
    if context.distributed is not None and not definition.distributed:
        raise LaunchError(f"backend {name!r} cannot span workers; place it on one worker")
    if bad := sorted(PLATFORM_ENV & context.env.keys()):
        raise ReservedParameterError(
            f"environment variable {bad[0]} is set by the platform from the GPUs assigned to "
            "the instance; choose GPUs through the model's GPU selection instead"
        )
    if bad := [key for key in context.env if not _ENV_NAME.match(key)]:
        raise LaunchError(f"invalid environment variable name {bad[0]!r}")


def _command(definition: BackendDefinition, context: LaunchContext) -> list[str]:
    if definition.executable:
        if context.run_command is not None:
            raise LaunchError(
                f"backend {definition.name!r} builds its own command; "
                "put extra flags in backend parameters instead of a run command"
            )
        return []
    if not context.run_command:
        raise LaunchError(
            f"backend {definition.name!r} needs a run command, e.g. "
            '["my-server", "--model", "{model_path}", "--port", "{port}"]'
        )
    for token in context.run_command:
        try:
            fields = template_fields(token)
        except ValueError as exc:
            raise LaunchError(f"run command token {token!r}: {exc}") from exc
        for field in fields:
            if field not in ALLOWED_PLACEHOLDERS:
                raise UnknownPlaceholderError(definition.name, field, "run_command")
    return context.run_command


def _config_files(name: str, context: LaunchContext, env: dict[str, str]) -> dict[str, str]:
    if name not in CONFIG_FILES:
        return {}
    variable, generate = CONFIG_FILES[name]
    path = env.get(variable, "")
    if not os.path.isabs(path):
        raise LaunchError(
            f"backend {name!r} reads its configuration from the file named by {variable}, "
            f"which must be an absolute path (e.g. {{data_dir}}/config.json); got {path!r}"
        )
    return {path: json.dumps(generate(context), indent=2) + "\n"}


def build_launch_spec(
    definition: BackendDefinition,
    context: LaunchContext,
    *,
    version: str | None = None,
    which: Which = shutil.which,
) -> LaunchSpec:
    """The process (or container command) that serves ``context`` with ``definition``."""
    _check_fit(definition, context)
    chosen = definition.resolve_version(version)
    run_command = _command(definition, context)
    visible = _visible_ids(context)
    values = _values(context, visible)
    name = definition.name

    executable = list(chosen.executable or definition.executable or run_command[:1])
    command = list(chosen.command or definition.command or run_command[1:])
    if context.runtime is Runtime.CONTAINER:
        executable = list(definition.container.entrypoint or executable)
    elif definition.fallback_executable and which(executable[0]) is None:
        executable = list(definition.fallback_executable)

    env: dict[str, str] = {}
    for key, value in {**definition.env, **chosen.env}.items():
        env[key] = _render(name, value, values, f"env {key}")
    for block in definition.conditional_args:
        if _applies(block, context):
            command.extend(block.args)
            for key, value in block.env.items():
                env[key] = _render(name, value, values, f"conditional env {key}")

    args = [_render(name, token, values, "command") for token in command]
    user = [] if name in CONFIG_FILES else context.backend_parameters
    merged = merge_parameters(definition, args, definition.default_parameters, user)
    env |= context.env
    env |= device_env(context.vendor, visible)
    files = _config_files(name, context, env)

    return LaunchSpec(
        backend=name,
        version=chosen.version,
        runtime=context.runtime,
        executable=[_render(name, token, values, "executable") for token in executable],
        args=merged,
        env=env,
        host=context.host,
        port=context.port,
        health_path=definition.health_path,
        metrics_path=definition.metrics.path,
        ready_timeout=definition.ready_timeout,
        cwd=context.data_dir,
        vendor=context.vendor,
        gpu_ids=list(context.gpu_ids),
        model_path=context.model_path,
        model_root=context.model_root or context.model_path,
        data_dir=context.data_dir,
        files=files,
    )
