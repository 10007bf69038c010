"""Running an inference engine in a Docker or Podman container.

:func:`build_container_run_kwargs` is pure: it turns a container-runtime
:class:`~maasbase.backends.launch.LaunchSpec` into the keyword arguments of
the Docker SDK's ``containers.run``: image of the backend version for the
vendor, entrypoint and command, environment, GPU access per vendor, the model
mounted read-only, host networking (or a port published on the host's loopback
only), shared memory and labels that let a worker find its containers again after a
restart.

:class:`DockerRuntime` is the one seam to a container engine. It imports the
SDK lazily and turns its failures into typed errors.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from docker.types import DeviceRequest

from maasbase.backends.definition import BackendDefinition, Vendor
from maasbase.backends.launch import LaunchSpec, Runtime
from maasbase.common.errors import InvalidRequest, MaasError, NotFound, Unavailable

if TYPE_CHECKING:
    import docker

logger = logging.getLogger(__name__)

LABEL_MANAGED = "maasbase.managed"
LABEL_INSTANCE = "maasbase.instance"
LABEL_BACKEND = "maasbase.backend"
LABEL_VERSION = "maasbase.backend-version"

AMD_DEVICES = ("/dev/kfd", "/dev/dri")
ASCEND_CONTROL_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
ASCEND_HOST_PATHS = (
    "/usr/local/Ascend/driver",
    "/usr/local/dcmi",
    "/usr/local/bin/npu-smi",
    "/etc/ascend_install.info",
)
PUBLISH_HOST = "127.0.0.1"
DEFAULT_ENGINE_URLS = ("unix:///var/run/docker.sock", "unix:///run/podman/podman.sock")


class ContainerSpecError(InvalidRequest):
    """The instance cannot run in a container as configured."""


class ContainerEngineUnavailable(Unavailable):
    """No container engine answers; retry once one runs, or use the process runtime."""


class ContainerNotFound(NotFound):
    pass


class ContainerEngineError(MaasError):
    """The engine refused an operation; its message is included."""

    code = "container_engine_error"
    status_code = 502


def container_name(instance_id: str) -> str:
    """A valid container name for an instance id."""
    return "maasbase-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", instance_id)


def _device(path: str) -> str:
    return f"{path}:{path}:rwm"


def _gpu_access(spec: LaunchSpec) -> dict[str, Any]:
    if spec.vendor is Vendor.NVIDIA:
        ids = [str(i) for i in spec.gpu_ids]
        return {"device_requests": [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]}
    if spec.vendor is Vendor.AMD:
        return {
            "devices": [_device(path) for path in AMD_DEVICES],
            "group_add": ["video"],
            "security_opt": ["seccomp=unconfined"],
        }
    if spec.vendor is Vendor.ASCEND:
        chips = [f"/dev/davinci{i}" for i in spec.gpu_ids]
        return {
            "devices": [_device(path) for path in [*chips, *ASCEND_CONTROL_DEVICES]],
            "volumes": {path: {"bind": path, "mode": "ro"} for path in ASCEND_HOST_PATHS},
        }
    if spec.vendor is Vendor.APPLE:
        raise ContainerSpecError(
            "Apple GPUs cannot be passed into containers; run this backend as a process"
        )
    return {}


def build_container_run_kwargs(
    spec: LaunchSpec,
    definition: BackendDefinition,
    *,
    instance_id: str,
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``DockerClient.containers.run`` (detached)."""
    if spec.runtime is not Runtime.CONTAINER:
        raise ContainerSpecError(
            "the launch spec was built for a process; build it with runtime=container "
            "so that GPU indexes and the executable match the container"
        )
    version = definition.resolve_version(spec.version or None)
    image = version.image_for(spec.vendor)
    if not image:
        raise ContainerSpecError(
            f"backend {definition.name!r} version {version.version or '(none)'} has no "
            f"container image for {spec.vendor}; add one to the version's image or "
            "vendor_images, or run it as a process"
        )
    settings = definition.container
    labels = {
        **(extra_labels or {}),
        LABEL_MANAGED: "true",
        LABEL_INSTANCE: instance_id,
        LABEL_BACKEND: definition.name,
        LABEL_VERSION: version.version,
    }
    volumes: dict[str, dict[str, str]] = {spec.model_root: {"bind": spec.model_root, "mode": "ro"}}
    if spec.data_dir:
        volumes[spec.data_dir] = {"bind": spec.data_dir, "mode": "rw"}
    access = _gpu_access(spec)
    volumes |= access.pop("volumes", {})
    kwargs: dict[str, Any] = {
        "image": image,
        "name": container_name(instance_id),
        "entrypoint": list(spec.executable),
        "command": list(spec.args),
        "environment": dict(spec.env),
        "labels": labels,
        "volumes": volumes,
        "shm_size": settings.shm_size,
        "detach": True,
        "init": True,
        "restart_policy": {"Name": "no"},
        **access,
    }
    if settings.host_network:
        kwargs["network_mode"] = "host"
    else:
        # Published on the host's loopback only: the worker's data-plane proxy is the
        # engine's one way in.
        kwargs["ports"] = {f"{spec.port}/tcp": (PUBLISH_HOST, spec.port)}
    if settings.ipc_host:
        kwargs["ipc_mode"] = "host"
    return kwargs


def engine_urls(env: Mapping[str, str], uid: int | None = None) -> list[str]:
    """Where to look for an engine: ``DOCKER_HOST`` if set, else the usual sockets
    of Docker, rootful Podman and rootless Podman."""
    if env.get("DOCKER_HOST"):
        return [env["DOCKER_HOST"]]
    urls = list(DEFAULT_ENGINE_URLS)
    runtime_dir = env.get("XDG_RUNTIME_DIR") or (f"/run/user/{uid}" if uid is not None else None)
    if runtime_dir:
        urls.append(f"unix://{runtime_dir}/podman/podman.sock")
    return urls


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    status: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)


class DockerRuntime:
    """Run, stop, remove, list and read logs of containers through the Docker SDK.

    ``base_url`` picks the engine (``unix:///var/run/docker.sock``,
    ``tcp://host:2375``, a Podman socket); without it the first reachable of
    :func:`engine_urls` is used.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        path_exists: Callable[[str], bool] = os.path.exists,
    ) -> None:
        self._urls = [base_url] if base_url else engine_urls(os.environ, os.getuid())
        self._timeout = timeout
        self._path_exists = path_exists
        self._client: docker.DockerClient | None = None

    def _connect(self) -> docker.DockerClient:
        if self._client is not None:
            return self._client
        import docker
        import requests

        problems = []
        for url in self._urls:
            if url.startswith("unix://") and not self._path_exists(url.removeprefix("unix://")):
                problems.append(f"{url} (no such socket)")
                continue
            try:
                client = docker.DockerClient(base_url=url, timeout=int(self._timeout))
                client.ping()
            except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
                problems.append(f"{url} ({exc})")
                continue
            logger.info("using container engine at %s", url)
            self._client = client
            return client
        raise ContainerEngineUnavailable(
            "no container engine reachable at " + ", ".join(problems) + ". Start Docker "
            "or Podman (`podman system service`), set DOCKER_HOST, or run backends as "
            "processes",
            details={"tried": list(self._urls)},
        )

    @contextmanager
    def _engine_errors(self, what: str) -> Iterator[None]:
        import docker
        import requests

        try:
            yield
        except docker.errors.NotFound as exc:
            raise ContainerNotFound(f"{what}: no such container or image ({exc})") from exc
        except docker.errors.APIError as exc:
            raise ContainerEngineError(f"{what}: the container engine refused: {exc}") from exc
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            raise ContainerEngineUnavailable(
                f"{what}: lost the container engine ({exc}); check that it still runs"
            ) from exc

    def ping(self) -> None:
        """Raise :class:`ContainerEngineUnavailable` unless an engine answers."""
        self._connect()

    def run(self, run_kwargs: Mapping[str, Any]) -> str:
        """Start a detached container; returns its id."""
        client = self._connect()
        with self._engine_errors(f"starting container {run_kwargs.get('name')}"):
            container = client.containers.run(**{**run_kwargs, "detach": True})
            return str(container.id)

    def stop(self, container_id: str, *, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        client = self._connect()
        with self._engine_errors(f"stopping container {container_id}"):
            client.containers.get(container_id).stop(timeout=int(timeout))

    def remove(self, container_id: str, *, force: bool = False) -> None:
        client = self._connect()
        with self._engine_errors(f"removing container {container_id}"):
            client.containers.get(container_id).remove(force=force)

    def list(self, instance_id: str | None = None) -> list[ContainerInfo]:
        """Containers this platform started (running or not), or one instance's."""
        label = f"{LABEL_INSTANCE}={instance_id}" if instance_id else f"{LABEL_MANAGED}=true"
        client = self._connect()
        with self._engine_errors("listing containers"):
            found = client.containers.list(all=True, filters={"label": label})
            return [
                ContainerInfo(
                    id=str(c.id),
                    name=str(c.name),
                    status=str(c.status),
                    image=str(c.attrs.get("Config", {}).get("Image", "")),
                    labels=dict(c.labels),
                )
                for c in found
            ]

    def logs(self, container_id: str, *, tail: int | None = 200) -> str:
        """The container's stdout and stderr, the last ``tail`` lines (all if None)."""
        client = self._connect()
        with self._engine_errors(f"reading logs of container {container_id}"):
            raw = client.containers.get(container_id).logs(tail="all" if tail is None else tail)
            return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
