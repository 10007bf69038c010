"""Wire contract for model instances between the server and workers.

The server tells each worker which instances it should run (``WorkerAssignments``,
delivered by a long-poll watch); the worker reports how each one is doing
(``InstanceReport``). New fields must come with defaults.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from maasbase.common.bounds import DbInt, Id, PositiveDbInt, Text


class InstanceState(StrEnum):
    PENDING = "pending"  # created, not yet looked at
    ANALYZING = "analyzing"  # reading model metadata, estimating memory
    SCHEDULED = "scheduled"  # placed on a worker and GPUs
    DOWNLOADING = "downloading"  # worker fetches model files
    STARTING = "starting"  # engine process started, waiting for its health check
    RUNNING = "running"  # healthy, serving
    ERROR = "error"  # failed; restarted with backoff
    UNREACHABLE = "unreachable"  # its worker is unreachable


class SourceType(StrEnum):
    HUGGINGFACE = "huggingface"
    MODELSCOPE = "modelscope"
    LOCAL_PATH = "local_path"


class ModelSource(BaseModel):
    """Where a model's files come from."""

    model_config = ConfigDict(extra="forbid")

    type: SourceType
    repo_id: Text | None = Field(
        default=None, max_length=256, description="Hub repository, e.g. org/name."
    )
    file: Text | None = Field(
        default=None,
        max_length=1024,
        description="One file (or glob) in the repository, e.g. *Q4_K_M.gguf.",
    )
    revision: Text | None = Field(default=None, max_length=256)
    path: Text | None = Field(
        default=None, max_length=4096, description="local_path: file or folder."
    )

    @model_validator(mode="after")
    def _complete(self) -> ModelSource:
        if self.type is SourceType.LOCAL_PATH:
            if not self.path:
                raise ValueError("a local_path source needs 'path'")
        elif not self.repo_id:
            raise ValueError(f"a {self.type.value} source needs 'repo_id'")
        return self

    def describe(self) -> str:
        if self.type is SourceType.LOCAL_PATH:
            return f"local path {self.path}"
        suffix = f" ({self.file})" if self.file else ""
        return f"{self.type.value} {self.repo_id}{suffix}"


class InstanceAssignment(BaseModel):
    """One instance a worker should run, with everything it needs to launch it."""

    model_config = ConfigDict(extra="ignore")

    instance_id: int
    name: str = Field(description="Unique instance name, e.g. qwen-7b-3f9a.")
    model_id: int
    model_name: str = Field(description="The name clients use in 'model'.")
    source: ModelSource
    backend: str
    backend_version: str | None = None
    backend_parameters: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    gpu_vendor: str | None = Field(default=None, description="None: runs on CPU.")
    gpu_indexes: list[int] = Field(default_factory=list)
    tensor_parallel_size: int = 1
    categories: list[str] = Field(default_factory=list)
    restart_count: int = Field(default=0, description="A change asks the worker to restart it.")
    backend_definition: dict[str, Any] | None = Field(
        default=None, description="Full definition of a user-defined backend."
    )


class WorkerAssignments(BaseModel):
    """Everything one worker should run. ``revision`` changes whenever the list does."""

    revision: str
    instances: list[InstanceAssignment] = Field(default_factory=list)


class DownloadProgress(BaseModel):
    bytes_done: int = 0
    bytes_total: int | None = None

    @property
    def percent(self) -> float | None:
        if not self.bytes_total:
            return None
        return min(100.0, 100.0 * self.bytes_done / self.bytes_total)


class InstanceReport(BaseModel):
    """How an assigned instance is doing on its worker."""

    model_config = ConfigDict(extra="ignore")

    instance_id: Id
    restart_count: DbInt = 0
    state: Literal[
        InstanceState.DOWNLOADING,
        InstanceState.STARTING,
        InstanceState.RUNNING,
        InstanceState.ERROR,
    ]
    message: str = ""
    port: DbInt | None = None
    pid: DbInt | None = None
    download: DownloadProgress | None = None
    log_tail: str | None = Field(default=None, description="Last log lines, on error.")
    context_length: PositiveDbInt | None = Field(
        default=None, description="Tokens of context the running engine takes, when it says."
    )


class InstanceReports(BaseModel):
    reports: list[InstanceReport]
