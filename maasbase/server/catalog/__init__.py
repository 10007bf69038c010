"""The model catalog: deployable presets, resolved to a concrete source at deploy time."""

from __future__ import annotations

import importlib.util
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from maasbase.common.errors import NotFound, Unavailable
from maasbase.common.instances import ModelSource, SourceType
from maasbase.server.schemas.models import Category, ModelSpec


class PackageSource(BaseModel):
    """Weights shipped inside an installed Python package (no download)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["python_package"]
    package: str
    path: str = Field(description="File or folder inside the package.")
    install: str = Field(default="", description="How to install the package.")

    def resolve(self) -> ModelSource | None:
        # find_spec locates the package without importing it (some fail to import).
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        candidate = Path(next(iter(spec.submodule_search_locations))) / self.path
        if not candidate.exists():
            return None
        return ModelSource(type=SourceType.LOCAL_PATH, path=str(candidate))


class HubSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["huggingface", "modelscope"]
    repo_id: str
    file: str | None = None

    def resolve(self) -> ModelSource:
        return ModelSource(type=SourceType(self.type), repo_id=self.repo_id, file=self.file)


class CatalogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    categories: list[Category]
    backend: str
    backend_parameters: list[str] = Field(default_factory=list)
    sources: list[Annotated[PackageSource | HubSource, Field(discriminator="type")]]

    def source(self, *, offline_only: bool = False) -> ModelSource:
        """The first source available here: an installed package, else a hub."""
        hints = []
        for source in self.sources:
            if isinstance(source, PackageSource):
                found = source.resolve()
                if found is not None:
                    return found
                if source.install:
                    hints.append(source.install)
            elif not offline_only:
                return source.resolve()
        hint = f"; install it with: {' or '.join(hints)}" if hints else ""
        raise Unavailable(f"no offline copy of {self.name} is installed{hint}")

    def spec(self, *, replicas: int = 1) -> ModelSpec:
        return ModelSpec(
            source=self.source(),
            backend=self.backend,
            backend_parameters=self.backend_parameters,
            replicas=replicas,
            categories=self.categories,
        )

    def available_offline(self) -> bool:
        return any(isinstance(s, PackageSource) and s.resolve() is not None for s in self.sources)


@cache
def entries() -> tuple[CatalogEntry, ...]:
    text = resources.files(__package__).joinpath("models.yaml").read_text()
    data: list[dict[str, Any]] = yaml.safe_load(text)
    return tuple(CatalogEntry.model_validate(item) for item in data)


def find(name: str) -> CatalogEntry:
    for entry in entries():
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in entries())
    raise NotFound(f"no catalog model named {name!r}; the catalog has: {known}")
