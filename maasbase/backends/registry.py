"""All backends the platform knows: built-ins shipped in the package plus user ones.

Built-in definitions are the YAML files in ``maasbase/backends/builtin``. User
definitions come from a folder of YAML files or from dicts (the server keeps
them in its database and passes them in). A user definition with the name of a
built-in replaces that built-in; two user definitions with one name conflict.
"""

from __future__ import annotations

import difflib
import functools
import logging
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from maasbase.backends.definition import (
    BackendDefinition,
    BackendDefinitionError,
    BackendVersion,
)
from maasbase.common.errors import Conflict, NotFound

logger = logging.getLogger(__name__)

BUILTIN_FOLDER = "builtin"
YAML_SUFFIXES = (".yaml", ".yml")


class UnknownBackendError(NotFound):
    """No backend (or version) of that name."""


class DuplicateBackendError(Conflict):
    """Two user definitions claim the same name."""


def definition_from_dict(data: Mapping[str, Any], *, source: str) -> BackendDefinition:
    """Validate one definition; errors name ``source`` and the offending fields."""
    try:
        return BackendDefinition.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise BackendDefinitionError(
            f"invalid backend definition in {source}: {problems}",
            details={"source": source, "errors": exc.errors(include_url=False)[:20]},
        ) from exc


def definition_from_yaml(text: str, *, source: str) -> BackendDefinition:
    """Parse and validate one YAML document."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BackendDefinitionError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise BackendDefinitionError(
            f"{source} must hold one mapping with name, executable, command, ...; "
            f"found {type(data).__name__}"
        )
    return definition_from_dict(data, source=source)


@functools.cache
def builtin_definitions() -> tuple[BackendDefinition, ...]:
    """The definitions shipped with the package, sorted by name."""
    folder = resources.files("maasbase.backends").joinpath(BUILTIN_FOLDER)
    found = [
        definition_from_yaml(entry.read_text(encoding="utf-8"), source=f"built-in {entry.name}")
        for entry in folder.iterdir()
        if entry.name.endswith(YAML_SUFFIXES)
    ]
    return tuple(sorted(found, key=lambda d: d.name))


def load_definitions_dir(folder: Path) -> list[BackendDefinition]:
    """Every ``*.yaml``/``*.yml`` file in ``folder`` (not recursive), by file name."""
    if not folder.is_dir():
        raise BackendDefinitionError(
            f"backend definitions folder {folder} does not exist; create it or fix the path"
        )
    return [
        definition_from_yaml(path.read_text(encoding="utf-8"), source=str(path))
        for path in sorted(folder.iterdir())
        if path.suffix in YAML_SUFFIXES and path.is_file()
    ]


class BackendRegistry:
    """Backend definitions by name."""

    def __init__(
        self,
        builtins: Iterable[BackendDefinition] = (),
        user: Iterable[BackendDefinition] = (),
    ) -> None:
        self._builtin_names = set()
        self._definitions: dict[str, BackendDefinition] = {}
        for definition in builtins:
            self._builtin_names.add(definition.name)
            self._definitions[definition.name] = definition
        user_names: set[str] = set()
        for definition in user:
            if definition.name in user_names:
                raise DuplicateBackendError(
                    f"backend {definition.name!r} is defined twice; rename or remove one",
                    details={"backend": definition.name},
                )
            user_names.add(definition.name)
            if definition.name in self._builtin_names:
                logger.info("user definition replaces built-in backend %s", definition.name)
            self._definitions[definition.name] = definition
        self._user_names = user_names

    @classmethod
    def default(
        cls,
        *,
        user: Iterable[BackendDefinition | Mapping[str, Any]] = (),
        user_dir: Path | None = None,
    ) -> BackendRegistry:
        """Built-ins, then definitions from ``user_dir``, then ``user`` ones."""
        extra = load_definitions_dir(user_dir) if user_dir is not None else []
        for index, item in enumerate(user):
            if isinstance(item, BackendDefinition):
                extra.append(item)
            else:
                extra.append(definition_from_dict(item, source=f"user definition #{index}"))
        return cls(builtin_definitions(), extra)

    def names(self) -> list[str]:
        return sorted(self._definitions)

    def is_builtin(self, name: str) -> bool:
        """Whether ``name`` is served by a shipped (not user-replaced) definition."""
        return name in self._builtin_names and name not in self._user_names

    def get(self, name: str) -> BackendDefinition:
        key = name.strip().lower()
        found = self._definitions.get(key)
        if found is None:
            known = ", ".join(self.names()) or "none"
            close = difflib.get_close_matches(key, self.names(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownBackendError(
                f"unknown backend {name!r}; known: {known}.{hint}",
                details={"backend": name, "known": self.names()},
            )
        return found

    def get_version(
        self, name: str, version: str | None = None
    ) -> tuple[BackendDefinition, BackendVersion]:
        """The definition and the named (or default) version of it."""
        definition = self.get(name)
        return definition, definition.resolve_version(version)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._definitions

    def __iter__(self) -> Iterator[BackendDefinition]:
        return iter(self._definitions[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._definitions)
