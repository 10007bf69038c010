"""Which files of a repository a source needs, and which path the engine loads. Pure."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from .errors import InvalidModelSource, ModelSourceNotFound
from .types import RemoteFile

# llama.cpp's split naming: model-00001-of-00003.gguf
SPLIT_GGUF = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
MAX_LISTED = 8


def safe_relative(path: str) -> PurePosixPath:
    """``path`` as a relative path that stays inside its folder, else ``InvalidModelSource``."""
    relative = PurePosixPath(path)
    if (
        not path
        or "\\" in path
        or "\x00" in path
        or relative.is_absolute()
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise InvalidModelSource(
            f"the hub listed a file path the cache refuses to write: {path!r}; "
            "check the repository or use a local path"
        )
    return relative


def select_files(
    files: Sequence[RemoteFile], pattern: str | None, *, what: str
) -> tuple[RemoteFile, ...]:
    """The files ``pattern`` names: all when None, an exact path, else a glob on the path.

    A glob's ``*`` also matches ``/`` (as ``huggingface_hub``'s ``allow_patterns``). Choosing
    one shard of a split GGUF brings its sibling shards along: llama.cpp needs them all.
    """
    if pattern is None:
        chosen = list(files)
    else:
        chosen = [f for f in files if f.path == pattern] or [
            f for f in files if fnmatch.fnmatchcase(f.path, pattern)
        ]
    if not chosen:
        if pattern is None:
            raise ModelSourceNotFound(f"{what} has no files; check the repository and revision")
        names = sorted(f.path for f in files)
        listed = ", ".join(names[:MAX_LISTED]) + (", ..." if len(names) > MAX_LISTED else "")
        raise ModelSourceNotFound(
            f"no file of {what} matches {pattern!r}; files there: {listed or 'none'}"
        )
    return _with_split_siblings(files, chosen)


def _with_split_siblings(
    files: Sequence[RemoteFile], chosen: Iterable[RemoteFile]
) -> tuple[RemoteFile, ...]:
    wanted = {f.path for f in chosen}
    groups = {_split_group(path) for path in wanted} - {None}
    if groups:
        wanted |= {f.path for f in files if _split_group(f.path) in groups}
    return tuple(f for f in files if f.path in wanted)


def _split_group(path: str) -> tuple[str, str] | None:
    match = SPLIT_GGUF.match(path)
    return (match["stem"], match["count"]) if match else None


def entry_point(folder: Path, files: Sequence[RemoteFile], pattern: str | None) -> Path:
    """What the engine loads: the one file, the first shard of one split GGUF, else the folder."""
    if pattern is None or not files:
        return folder
    if len(files) == 1:
        return folder / files[0].path
    groups = {_split_group(f.path) for f in files}
    if len(groups) == 1 and None not in groups:
        return folder / sorted(f.path for f in files)[0]
    return folder


def folder_of(local_file: Path, relative: str) -> Path:
    """The snapshot folder holding ``local_file``, the local copy of ``relative``."""
    return local_file.parents[len(PurePosixPath(relative).parts) - 1]


def missing_bytes(sizes: Iterable[tuple[int | None, int]]) -> int:
    """Bytes still to fetch for (size, bytes present) pairs; unknown sizes count as 0."""
    return sum(max(0, size - present) for size, present in sizes if size is not None)
