from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from maasbase.common.bounds import MultilineText, Text, shorten
from maasbase.common.instances import DownloadProgress, InstanceState, ModelSource
from maasbase.common.workers import validate_labels
from maasbase.server.schemas.common import Strict

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"
GPU_SELECTOR_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}:\d{1,3}$"
ENV_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,255}"

BackendName = Annotated[Text, Field(min_length=1, max_length=64)]
BackendVersion = Annotated[Text, Field(max_length=64)]
EngineArgument = Annotated[MultilineText, Field(max_length=8192)]
EnvValue = Annotated[MultilineText, Field(max_length=32768)]
Description = Annotated[MultilineText, Field(max_length=1024)]


class Category(StrEnum):
    LLM = "llm"
    EMBEDDING = "embedding"
    RERANKER = "reranker"
    SPEECH_TO_TEXT = "speech-to-text"
    TEXT_TO_SPEECH = "text-to-speech"
    IMAGE = "image"


class ModelSpec(Strict):
    """Everything that describes a deployment (shared by create and evaluation)."""

    source: ModelSource
    backend: BackendName = "llama.cpp"
    backend_version: BackendVersion | None = None
    backend_parameters: list[EngineArgument] = Field(default_factory=list, max_length=256)
    env: dict[str, EnvValue] = Field(
        default_factory=dict,
        max_length=256,
        description="Environment variables of the engine. Those named like a secret "
        "(*_TOKEN, *_KEY, *_SECRET, *_PASSWORD, HF_TOKEN, HUGGING_FACE_HUB_TOKEN) and those "
        "listed in secret_env are stored encrypted and never shown again.",
    )
    secret_env: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Names in env whose values are secret besides those named like one.",
    )
    replicas: int = Field(default=1, ge=0, le=1000)
    placement: Literal["spread", "binpack"] = "spread"
    worker_selector: dict[str, str] = Field(default_factory=dict, max_length=64)
    gpu_selector: list[str] | None = Field(
        default=None,
        max_length=1024,
        description='Manual GPUs, e.g. ["worker-1:0", "worker-1:1"].',
    )
    gpus_per_replica: int | None = Field(default=None, ge=1, le=64)
    categories: list[Category] = Field(default_factory=list)

    @field_validator("worker_selector")
    @classmethod
    def _selector(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_labels(value)

    @field_validator("gpu_selector")
    @classmethod
    def _gpus(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for item in value:
            if not re.fullmatch(GPU_SELECTOR_PATTERN, item):
                raise ValueError(
                    f"bad GPU {shorten(item)}: use <worker name>:<gpu index>, e.g. w1:0"
                )
        if len(set(value)) != len(value):
            raise ValueError("gpu_selector lists a GPU twice")
        return value

    @field_validator("env", "secret_env")
    @classmethod
    def _env(cls, value: dict[str, str] | list[str]) -> dict[str, str] | list[str]:
        check_env_names(value)
        return value

    @model_validator(mode="after")
    def _selector_fits(self) -> ModelSpec:
        selector, per_replica = self.gpu_selector, self.gpus_per_replica
        if selector is not None and per_replica is not None and len(selector) < per_replica:
            raise ValueError("gpu_selector names fewer GPUs than gpus_per_replica")
        return self


def check_env_names(names: Iterable[str]) -> None:
    for key in names:
        if not re.fullmatch(ENV_NAME_PATTERN, key):
            raise ValueError(
                f"bad environment variable name {shorten(key)}: use letters, digits and _, "
                "not starting with a digit"
            )


def spec_of_row(row: object) -> ModelSpec:
    """The spec of a stored model (a ``tables.Model`` row), without the values of its
    secret variables: ``env`` holds the plain ones, ``secret_env`` names the others."""
    fields = (
        "source", "backend", "backend_version", "backend_parameters", "env", "replicas",
        "placement", "worker_selector", "gpu_selector", "gpus_per_replica", "categories",
    )  # fmt: skip
    data = {name: getattr(row, name) for name in fields}
    data["secret_env"] = sorted(getattr(row, "secret_env", None) or {})
    return ModelSpec.model_validate(data)


class ModelCreate(ModelSpec):
    name: str = Field(pattern=MODEL_NAME_PATTERN, description="The name clients use in 'model'.")
    description: Description = ""


class ModelUpdate(Strict):
    """Absent fields stay as they are; changing how instances run rolls them one by one.

    The merged result is validated as a whole ``ModelSpec`` by the route."""

    description: Description | None = None
    source: ModelSource | None = None
    backend: BackendName | None = None
    backend_version: BackendVersion | None = None
    backend_parameters: list[EngineArgument] | None = Field(default=None, max_length=256)
    env: dict[str, EnvValue | None] | None = Field(
        default=None,
        max_length=256,
        description="Merged into the stored variables: a value sets one, null removes one, "
        "a variable left out keeps its value (a secret one without sending it again).",
    )
    secret_env: list[str] | None = Field(
        default=None,
        max_length=256,
        description="Names to make secret (encrypted, never shown): given in env now or "
        "stored already. A secret variable stays secret until removed.",
    )
    replicas: int | None = Field(default=None, ge=0, le=1000)
    placement: Literal["spread", "binpack"] | None = None
    worker_selector: dict[str, str] | None = Field(default=None, max_length=64)
    gpu_selector: list[str] | None = Field(default=None, max_length=1024)
    gpus_per_replica: int | None = Field(default=None, ge=1, le=64)
    categories: list[Category] | None = None

    @field_validator("env", "secret_env")
    @classmethod
    def _env(
        cls, value: dict[str, str | None] | list[str] | None
    ) -> dict[str, str | None] | list[str] | None:
        check_env_names(value or [])
        return value

    @model_validator(mode="after")
    def _null_only_where_optional(self) -> ModelUpdate:
        optional = {"description", "backend_version", "gpu_selector", "gpus_per_replica"}
        for field in sorted(self.model_fields_set - optional):
            if getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null; leave it out to keep it")
        return self


def infer_categories(spec: ModelSpec, name: str) -> list[Category]:
    if spec.categories:
        return spec.categories
    text = " ".join(
        [name, spec.source.repo_id or "", spec.source.file or "", spec.source.path or ""]
    )
    lowered = text.lower()
    if "--embedding" in spec.backend_parameters or "--embeddings" in spec.backend_parameters:
        return [Category.EMBEDDING]
    if any(word in lowered for word in ("rerank",)):
        return [Category.RERANKER]
    if any(word in lowered for word in ("embed", "minilm", "bge-", "e5-", "gte-")):
        return [Category.EMBEDDING]
    if any(word in lowered for word in ("whisper", "sensevoice", "paraformer")):
        return [Category.SPEECH_TO_TEXT]
    if any(word in lowered for word in ("tts", "cosyvoice", "bark")):
        return [Category.TEXT_TO_SPEECH]
    if any(word in lowered for word in ("stable-diffusion", "sdxl", "flux")):
        return [Category.IMAGE]
    return [Category.LLM]


def spec_hash(spec: ModelSpec) -> str:
    """Hash of what changes how an instance runs (not replicas or placement strategy)."""
    relevant = spec.model_dump(
        mode="json",
        include={
            "source", "backend", "backend_version", "backend_parameters", "env",
            "worker_selector", "gpu_selector", "gpus_per_replica",
        },
    )  # fmt: skip
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


class InstanceSummary(BaseModel):
    total: int = 0
    running: int = 0
    by_state: dict[str, int] = Field(default_factory=dict)


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    source: ModelSource
    backend: str
    backend_version: str | None
    backend_parameters: list[str]
    env: dict[str, str] = Field(description="The plain variables, with their values.")
    secret_env: list[str] = Field(
        default_factory=list,
        description="Names of the secret variables that are set; their values are "
        "write-only (sent to the worker running the instance, never shown).",
    )
    replicas: int
    placement: str
    worker_selector: dict[str, str]
    gpu_selector: list[str] | None
    gpus_per_replica: int | None
    categories: list[Category]
    instances: InstanceSummary = Field(default_factory=InstanceSummary)
    created_at: datetime
    updated_at: datetime

    @field_validator("secret_env", mode="before")
    @classmethod
    def _names_only(cls, value: object) -> object:
        """From a row: the names of its encrypted variables, never their values."""
        if value is None:
            return []
        if isinstance(value, dict):
            return sorted(value)
        return value


class InstanceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    model_id: int
    model_name: str
    state: InstanceState
    state_message: str
    worker_id: int | None
    worker_name: str | None
    gpu_vendor: str | None
    gpu_indexes: list[int]
    tensor_parallel_size: int
    claim: dict[str, object]
    port: int | None
    pid: int | None
    context_length: int | None = Field(
        default=None, description="Tokens of context the running engine takes, as it reports."
    )
    download: DownloadProgress | None
    restart_count: int
    next_restart_at: datetime | None
    outdated: bool = Field(description="Runs an older spec; a rolling update replaces it.")
    state_changed_at: datetime
    created_at: datetime


class EvaluationPlacement(BaseModel):
    worker_id: int
    worker_name: str
    gpu_vendor: str | None
    gpu_indexes: list[int]
    tensor_parallel_size: int
    claim: dict[str, object]
    score: float


class EvaluationOut(BaseModel):
    """Would one replica fit now, where, and with what claim (nothing is created)."""

    schedulable: bool
    message: str
    placement: EvaluationPlacement | None = None
    estimate: str | None = Field(default=None, description="The memory estimate, explained.")
    reasons: dict[str, str | None] = Field(
        default_factory=dict, description="Per worker: why it cannot take it (null: it can)."
    )
