"""Model files on a worker: hub downloads, local paths, a shared cache, progress."""

from .cache import ModelCache, ProgressCallback, local_model_path
from .disk import check_free_space, format_bytes
from .errors import (
    InsufficientDiskSpace,
    InvalidModelSource,
    ModelAccessDenied,
    ModelHubUnavailable,
    ModelSourceNotFound,
)
from .types import HubSettings, ModelHub, RemoteFile, Snapshot

__all__ = [
    "HubSettings",
    "InsufficientDiskSpace",
    "InvalidModelSource",
    "ModelAccessDenied",
    "ModelCache",
    "ModelHub",
    "ModelHubUnavailable",
    "ModelSourceNotFound",
    "ProgressCallback",
    "RemoteFile",
    "Snapshot",
    "check_free_space",
    "format_bytes",
    "local_model_path",
]
