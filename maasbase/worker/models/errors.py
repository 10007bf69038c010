"""Typed errors of the model cache; each message says what to do next."""

from __future__ import annotations

import errno

from maasbase.common.errors import (
    ConfigurationError,
    Forbidden,
    InvalidRequest,
    MaasError,
    NotFound,
    Unavailable,
)


class ModelSourceNotFound(NotFound):
    """A local path, repository, revision or file that does not exist (permanent)."""

    code = "model_source_not_found"


class ModelAccessDenied(Forbidden):
    """The hub or the file system refused access: a token or permissions problem (permanent)."""

    code = "model_access_denied"


class ModelHubUnavailable(Unavailable):
    """Network failure, hub outage or a broken transfer (retryable)."""

    code = "model_hub_unavailable"


class InvalidModelSource(InvalidRequest):
    """A source the cache cannot use as given, e.g. a repository path that escapes the cache."""

    code = "invalid_model_source"


class InsufficientDiskSpace(MaasError):
    """Not enough free space for the files to download (permanent until space is freed)."""

    code = "insufficient_disk_space"
    status_code = 507

    def __init__(self, message: str, *, needed: int, free: int, where: str) -> None:
        super().__init__(message, details={"needed": needed, "free": free, "where": where})
        self.needed = needed
        self.free = free
        self.where = where


class DownloadCancelled(Exception):
    """Raised inside a download thread when its caller was cancelled; never leaves the cache."""


def from_os_error(exc: OSError, what: str) -> MaasError:
    """The typed error for a file-system (or ``OSError``-shaped transfer) failure on ``what``."""
    if exc.errno == errno.ENOSPC:
        return InsufficientDiskSpace(
            f"the disk filled up while downloading {what}; free space or point --data-dir "
            "elsewhere",
            needed=0,
            free=0,
            where=str(exc.filename or ""),
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ConfigurationError(
            f"cannot write the model cache ({exc}); fix its permissions or point --data-dir "
            "elsewhere"
        )
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    return ModelHubUnavailable(f"downloading {what} failed: {reason}; retrying later")
