"""What an inference backend is, as data.

A :class:`BackendDefinition` says how to launch one inference engine (vLLM,
SGLang, llama.cpp, ...): the executable, an argument template with
``{placeholders}``, environment templates, extra arguments that apply only in
some situations (GPUs present, several GPUs, spanning workers, ...), the health
and metrics endpoints, default parameters, the GPU vendors it runs on and the
container image of each version. Built-in definitions ship as YAML files in
``maasbase/backends/builtin``; users add their own the same way.

Templates are checked when a definition is loaded: an unknown placeholder is a
:class:`UnknownPlaceholderError` that names it and lists the allowed ones.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from maasbase.common.errors import InvalidRequest


class Vendor(StrEnum):
    """Where an instance runs: a GPU vendor, or plain CPU."""

    NVIDIA = "nvidia"
    AMD = "amd"
    ASCEND = "ascend"
    APPLE = "apple"
    CPU = "cpu"


class ModelCategory(StrEnum):
    LLM = "llm"
    EMBEDDING = "embedding"
    RERANKER = "reranker"
    SPEECH_TO_TEXT = "speech-to-text"
    TEXT_TO_SPEECH = "text-to-speech"
    IMAGE = "image"


class Condition(StrEnum):
    """When a block of :class:`ConditionalArgs` applies."""

    GPU = "gpu"  # the instance has at least one GPU
    CPU = "cpu"  # the instance runs on CPU only
    MULTI_GPU = "multi_gpu"  # more than one GPU on this worker
    DISTRIBUTED = "distributed"  # the instance spans several workers
    CONTEXT_LENGTH = "context_length"  # the platform chose a context length
    EMBEDDING = "embedding"  # the model is served for embeddings
    RERANKER = "reranker"  # the model is served for reranking


class CanonicalMetric(StrEnum):
    """Engine metrics under one vocabulary, whatever the engine calls them."""

    REQUESTS_RUNNING = "requests_running"
    REQUESTS_WAITING = "requests_waiting"
    KV_CACHE_USAGE = "kv_cache_usage"  # fraction 0-1
    PROMPT_TOKENS_TOTAL = "prompt_tokens_total"
    GENERATION_TOKENS_TOTAL = "generation_tokens_total"


ALLOWED_PLACEHOLDERS: dict[str, str] = {
    "model_path": "path of the model file or folder",
    "model_name": "name clients use to address the model",
    "host": "address the server binds to",
    "port": "port the server listens on",
    "gpu_ids": "comma-separated GPU indexes, e.g. 0,1",
    "gpu_count": "number of GPUs given to the instance",
    "tp_size": "tensor-parallel size",
    "pp_size": "pipeline-parallel size",
    "vendor": "nvidia, amd, ascend, apple or cpu",
    "data_dir": "folder the instance may write to",
    "context_length": "context length chosen by the platform",
    "world_size": "number of workers the instance spans",
    "node_rank": "rank of this worker among them (0 = leader)",
    "ray_address": "address of the Ray cluster head",
    "dist_init_addr": "host:port for the engine's own distributed init",
    "python": "the Python interpreter running MaaS-Base",
}


class BackendDefinitionError(InvalidRequest):
    """A backend definition is malformed; the message names the field to fix."""


class UnknownPlaceholderError(BackendDefinitionError):
    def __init__(self, backend: str, placeholder: str, where: str) -> None:
        allowed = ", ".join("{" + name + "}" for name in sorted(ALLOWED_PLACEHOLDERS))
        super().__init__(
            f"backend {backend!r}: unknown placeholder {{{placeholder}}} in {where}; "
            f"use one of: {allowed}",
            details={
                "backend": backend,
                "placeholder": placeholder,
                "allowed": sorted(ALLOWED_PLACEHOLDERS),
            },
        )
        self.placeholder = placeholder


def template_fields(template: str) -> list[str]:
    """Placeholder names in ``template``; ``{{`` and ``}}`` are literal braces.
    ValueError for malformed braces, format specs, conversions or attributes."""
    names: list[str] = []
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if spec or conversion or not field.isidentifier():
            raise ValueError(f"placeholder {{{field}}} must be a bare name like {{port}}")
        names.append(field)
    return names


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill ``template``; every placeholder must have a value in ``values``."""
    return template.format_map(values)


class UnknownVersionError(InvalidRequest):
    """The backend has no version of that name."""


class ParameterError(InvalidRequest):
    """Backend parameters cannot be used as given; the message says how to fix them."""


class ReservedParameterError(ParameterError):
    """A user parameter would override something the platform must control."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConditionalArgs(_Frozen):
    """Arguments and environment added only when ``when`` holds and, if
    ``vendors`` is set, the instance runs on one of them."""

    when: Condition | None = None
    vendors: list[Vendor] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_condition(self) -> ConditionalArgs:
        if self.when is None and not self.vendors:
            raise ValueError("conditional_args entries need `when`, `vendors` or both")
        return self


class MetricsSpec(_Frozen):
    """Where the engine exposes Prometheus metrics and how to read them."""

    path: str | None = None
    names: dict[str, CanonicalMetric] = Field(
        default_factory=dict, description="engine metric name -> canonical name"
    )


class ContainerSettings(_Frozen):
    """How to run the engine in a container."""

    entrypoint: list[str] | None = Field(
        default=None,
        description="executable inside the image; defaults to the definition's executable",
    )
    host_network: bool = True
    ipc_host: bool = False
    shm_size: str = "10g"


class BackendVersion(_Frozen):
    """One version of a backend: its image and what differs from the definition."""

    version: str = ""
    image: str | None = Field(default=None, description="image for vendors not in vendor_images")
    vendor_images: dict[Vendor, str] = Field(default_factory=dict)
    executable: list[str] | None = None
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)

    def image_for(self, vendor: Vendor) -> str | None:
        return self.vendor_images.get(vendor, self.image)


class BackendDefinition(_Frozen):
    """An inference backend: how to launch it, check it and read its metrics.

    The process argv is ``executable + command`` plus the matching
    ``conditional_args``, ``default_parameters`` and the user's parameters.
    An empty ``executable`` means the model supplies the whole command
    (the ``custom`` backend).
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)
    description: str = ""
    categories: list[ModelCategory] = Field(default_factory=lambda: [ModelCategory.LLM])
    versions: dict[str, BackendVersion] = Field(default_factory=dict)
    default_version: str | None = None
    executable: list[str] = Field(default_factory=list)
    fallback_executable: list[str] | None = Field(
        default=None, description="used when executable[0] is not on PATH"
    )
    command: list[str] = Field(default_factory=list)
    conditional_args: list[ConditionalArgs] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    default_parameters: list[str] = Field(default_factory=list)
    reserved_flags: list[str] = Field(
        default_factory=list, description="flags the platform sets; users may not"
    )
    flag_aliases: dict[str, str] = Field(
        default_factory=dict, description="short or alternative flag -> canonical flag"
    )
    served_name_flag: str | None = None
    health_path: str = Field(default="/health", pattern=r"^/")
    anthropic_messages: bool = Field(
        default=False,
        description="the engine serves Anthropic's POST /v1/messages itself; the gateway "
        "passes such requests through instead of translating them to chat",
    )
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    supported_vendors: list[Vendor] = Field(min_length=1)
    distributed: bool = False
    max_gpus: int | None = Field(default=None, ge=1, description="most GPUs one instance uses")
    container: ContainerSettings = Field(default_factory=ContainerSettings)
    ready_timeout: float = Field(default=600.0, gt=0, description="seconds")

    @model_validator(mode="before")
    @classmethod
    def _version_keys(cls, data: Any) -> Any:
        """Fill each version's ``version`` from its key in ``versions``."""
        if isinstance(data, dict) and isinstance(data.get("versions"), dict):
            versions = {}
            for key, value in data["versions"].items():
                entry = dict(value or {}) if not isinstance(value, BaseModel) else value
                if isinstance(entry, dict):
                    entry.setdefault("version", str(key))
                versions[str(key)] = entry
            data = {**data, "versions": versions}
        return data

    @model_validator(mode="after")
    def _check(self) -> BackendDefinition:
        for where, template in self.templates():
            try:
                fields = template_fields(template)
            except ValueError as exc:
                raise BackendDefinitionError(
                    f"backend {self.name!r}: bad template {template!r} in {where}: {exc}"
                ) from exc
            for field in fields:
                if field not in ALLOWED_PLACEHOLDERS:
                    raise UnknownPlaceholderError(self.name, field, f"{where} ({template!r})")
        if self.default_version is not None and self.default_version not in self.versions:
            known = ", ".join(self.versions) or "none"
            raise BackendDefinitionError(
                f"backend {self.name!r}: default_version {self.default_version!r} is not "
                f"one of its versions ({known})"
            )
        for key, version in self.versions.items():
            if version.version != key:
                raise BackendDefinitionError(
                    f"backend {self.name!r}: version key {key!r} and its version field "
                    f"{version.version!r} differ; drop the field or make them equal"
                )
        return self

    def templates(self) -> Iterator[tuple[str, str]]:
        """Every template string with a description of where it sits."""
        yield from (("executable", token) for token in self.executable)
        yield from (("fallback_executable", token) for token in self.fallback_executable or [])
        yield from (("command", token) for token in self.command)
        yield from ((f"env {key}", value) for key, value in self.env.items())
        yield from (("container.entrypoint", t) for t in self.container.entrypoint or [])
        for block in self.conditional_args:
            where = f"conditional_args[{block.when or ','.join(block.vendors)}]"
            yield from ((where, token) for token in block.args)
            yield from ((f"{where} env {key}", value) for key, value in block.env.items())
        for key, version in self.versions.items():
            where = f"versions[{key}]"
            yield from ((f"{where}.executable", t) for t in version.executable or [])
            yield from ((f"{where}.command", t) for t in version.command or [])
            yield from ((f"{where} env {k}", v) for k, v in version.env.items())

    def resolve_version(self, version: str | None = None) -> BackendVersion:
        """The named version, else the default, else an unversioned placeholder."""
        wanted = version or self.default_version
        if wanted is None:
            return BackendVersion(version="")
        found = self.versions.get(wanted)
        if found is None:
            known = ", ".join(self.versions) or "none"
            raise UnknownVersionError(
                f"backend {self.name!r} has no version {wanted!r}; known: {known}",
                details={"backend": self.name, "version": wanted, "known": list(self.versions)},
            )
        return found

    def canonical_flag(self, flag: str) -> str:
        """``flag`` under its canonical name (aliases resolved, ``_`` as ``-``)."""
        normalized = _normalize_flag(flag)
        aliases = {_normalize_flag(k): _normalize_flag(v) for k, v in self.flag_aliases.items()}
        return aliases.get(normalized, normalized)


def _normalize_flag(flag: str) -> str:
    dashes = len(flag) - len(flag.lstrip("-"))
    return flag[:dashes] + flag[dashes:].replace("_", "-")


_NUMBER = re.compile(r"^-\d+(\.\d+)?$")


def flatten_parameters(parameters: Iterable[str]) -> list[str]:
    """Split entries written as one string (``"--ctx-size 1024"``) into argv
    tokens, honouring quotes. ``--flag=value with spaces`` stays one token."""
    tokens: list[str] = []
    for item in parameters:
        text = item.strip()
        head = text.split("=", 1)[0]
        if text.startswith("-") and any(c.isspace() for c in head):
            try:
                tokens.extend(shlex.split(text))
            except ValueError as exc:
                raise ParameterError(f"cannot parse backend parameter {item!r}: {exc}") from exc
        elif text:
            tokens.append(text)
    return tokens


def _is_flag(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not _NUMBER.match(token)


def group_parameters(tokens: list[str]) -> list[list[str]]:
    """Group argv tokens as ``[flag, values...]``; a token before any flag is a
    group of its own. ``--flag=value`` is a one-token group."""
    groups: list[list[str]] = []
    for token in tokens:
        if _is_flag(token) or not groups or not _is_flag(groups[-1][0]) or "=" in groups[-1][0]:
            groups.append([token])
        else:
            groups[-1].append(token)
    return groups


def _flag_key(definition: BackendDefinition, group: list[str]) -> str | None:
    head = group[0]
    if not _is_flag(head):
        return None
    canonical = definition.canonical_flag(head.split("=", 1)[0])
    return "--" + canonical[5:] if canonical.startswith("--no-") else canonical


def merge_parameters(
    definition: BackendDefinition,
    template: list[str],
    defaults: list[str],
    user: list[str],
) -> list[str]:
    """Template args, then defaults the template does not set, then the user's
    parameters, each replacing earlier ones with the same flag."""
    reserved = {
        key
        for flag in [*definition.reserved_flags, definition.served_name_flag]
        if flag and (key := _flag_key(definition, [flag]))
    }
    user_groups = group_parameters(flatten_parameters(user))
    user_keys: set[str] = set()
    for group in user_groups:
        key = _flag_key(definition, group)
        if key is None:
            raise ParameterError(
                f"backend parameter {group[0]!r} is not a flag; "
                "write parameters as '--flag value' or '--flag=value'"
            )
        if key in reserved:
            raise ReservedParameterError(
                f"backend parameter {group[0].split('=', 1)[0]!r} is set by the platform for "
                f"backend {definition.name!r} and cannot be overridden; remove it "
                "(host, port and the served model name come from the deployment)",
                details={"flag": group[0], "reserved": sorted(reserved)},
            )
        user_keys.add(key)
    merged = group_parameters(template)
    template_keys = {_flag_key(definition, g) for g in merged}
    for group in group_parameters(flatten_parameters(defaults)):
        if _flag_key(definition, group) not in template_keys:
            merged.append(group)
    kept = [g for g in merged if _flag_key(definition, g) not in user_keys]
    return [token for group in [*kept, *user_groups] for token in group]
