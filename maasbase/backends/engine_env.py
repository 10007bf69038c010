"""The environment an engine process starts with: clean, not the worker's.

An engine gets what its backend definition and the model's ``env`` set (the launch spec's
``env``), plus the few variables of the worker's own environment it needs to run at all:
search paths, locale, time zone, temporary folder, user and home, and the GPU vendors'
runtime settings (CUDA, ROCm, Ascend CANN, NCCL/HCCL). Never a ``MAAS_*`` variable and
never anything whose name says it is a secret (``*_TOKEN``, ``*_KEY``, ...), even under an
allowed prefix: an engine that needs a token gets it from the model's ``env``.
"""

from __future__ import annotations

from collections.abc import Mapping

from maasbase.common.secret_env import is_secret_name

INHERITED_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
        "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX",
        "XDG_CACHE_HOME", "OMP_NUM_THREADS",
        # Ascend toolchain; Gloo's network interface for distributed runs.
        "TOOLCHAIN_HOME", "GLOO_SOCKET_IFNAME",
    }
)  # fmt: skip
INHERITED_PREFIXES = (
    "LC_",
    # NVIDIA: CUDA_HOME, CUDA_PATH, NVIDIA_DRIVER_CAPABILITIES, NCCL_SOCKET_IFNAME, ...
    "CUDA_", "NVIDIA_", "NCCL_",
    # AMD: ROCM_PATH, HIP_PATH, HSA_OVERRIDE_GFX_VERSION, ...
    "ROCM_", "HIP_", "HSA_",
    # Ascend (CANN's set_env.sh): ASCEND_HOME_PATH, ASCEND_OPP_PATH, HCCL_*, ATB_*, ...
    "ASCEND_", "HCCL_", "ATB_",
)  # fmt: skip
NEVER_PREFIX = "MAAS_"


def inherited(name: str) -> bool:
    """Whether an engine inherits ``name`` from the worker's environment."""
    if name.upper().startswith(NEVER_PREFIX) or is_secret_name(name):
        return False
    return name in INHERITED_NAMES or name.startswith(INHERITED_PREFIXES)


def engine_environment(parent: Mapping[str, str], spec_env: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of an engine: the allowed part of ``parent`` (the worker's
    environment), then ``spec_env`` (backend definition and model), which wins."""
    env = {name: value for name, value in parent.items() if inherited(name)}
    env.update(spec_env)
    return env
