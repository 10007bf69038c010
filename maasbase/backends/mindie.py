"""The service configuration file Ascend MindIE reads at start.

``mindieservice_daemon`` takes no command-line arguments: it reads one JSON
document (listening address, NPUs, model, sequence limits, scheduling) from the
path in ``MIES_CONFIG_JSON_PATH``. :func:`mindie_config` builds that document
from an instance's :class:`~maasbase.backends.launch.LaunchContext`; it is pure.

The user's backend parameters tune a few documented knobs of the document (see
:data:`MINDIE_FLAGS`); any other flag is refused, since MindIE has no command
line to pass it to. The NPU memory fraction is an environment variable of
MindIE (``NPU_MEMORY_FRACTION``), set through the instance's environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from maasbase.backends.definition import ParameterError, flatten_parameters, group_parameters

if TYPE_CHECKING:
    from maasbase.backends.launch import LaunchContext

DEFAULT_MAX_SEQ_LEN = 8192
ALL_ZERO_HOSTS = frozenset({"0.0.0.0", "::"})
LOG_LEVELS = ("Critical", "Error", "Warn", "Info", "Debug")

# Accepted backend parameters: flag -> what it sets in the configuration.
MINDIE_FLAGS: dict[str, str] = {
    "--max-seq-len": "ModelDeployConfig.maxSeqLen (default: the context length, else 8192)",
    "--max-input-token-len": "ModelDeployConfig.maxInputTokenLen (default: max-seq-len)",
    "--max-batch-size": "ScheduleConfig.maxBatchSize (default 200)",
    "--max-prefill-batch-size": "ScheduleConfig.maxPrefillBatchSize (default 50)",
    "--max-prefill-tokens": "ScheduleConfig.maxPrefillTokens (default: max-seq-len)",
    "--max-iter-times": "ScheduleConfig.maxIterTimes (default: max-seq-len)",
    "--cpu-mem-size": "ModelConfig.cpuMemSize in GB (default 0)",
    "--log-level": "LogConfig.logLevel: " + ", ".join(LOG_LEVELS) + " (default Info)",
    "--trust-remote-code": "ModelConfig.trustRemoteCode (a switch, default off)",
}
_SWITCHES = frozenset({"--trust-remote-code"})


class MindIEParameterError(ParameterError):
    """A backend parameter cannot be expressed in MindIE's configuration."""


def _accepted() -> str:
    return "; ".join(f"{flag}: {what}" for flag, what in MINDIE_FLAGS.items())


def parse_mindie_parameters(parameters: list[str]) -> dict[str, str]:
    """User parameters as ``{flag: value}``; switches map to ``"true"``.
    A later occurrence of a flag replaces an earlier one."""
    parsed: dict[str, str] = {}
    for group in group_parameters(flatten_parameters(parameters)):
        head, _, inline = group[0].partition("=")
        flag = head[:2] + head[2:].replace("_", "-") if head.startswith("--") else head
        if flag not in MINDIE_FLAGS:
            raise MindIEParameterError(
                f"backend parameter {head!r} is not a MindIE setting; "
                f"MindIE accepts: {_accepted()}",
                details={"flag": head, "accepted": sorted(MINDIE_FLAGS)},
            )
        values = [inline] if "=" in group[0] else group[1:]
        if flag in _SWITCHES:
            if values:
                raise MindIEParameterError(f"{flag} is a switch and takes no value")
            parsed[flag] = "true"
        elif len(values) != 1:
            raise MindIEParameterError(f"{flag} takes exactly one value, e.g. '{flag} 4096'")
        else:
            parsed[flag] = values[0]
    return parsed


def _positive(parsed: dict[str, str], flag: str, default: int, *, minimum: int = 1) -> int:
    if flag not in parsed:
        return default
    try:
        value = int(parsed[flag])
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise MindIEParameterError(
            f"{flag} must be an integer of at least {minimum}; got {parsed[flag]!r}"
        )
    return value


def _log_level(parsed: dict[str, str]) -> str:
    given = parsed.get("--log-level", "Info")
    wanted = "warn" if given.lower() == "warning" else given.lower()
    for level in LOG_LEVELS:
        if level.lower() == wanted:
            return level
    raise MindIEParameterError(f"--log-level must be one of {', '.join(LOG_LEVELS)}; got {given!r}")


def mindie_config(context: LaunchContext, *, port: int) -> dict[str, Any]:
    """MindIE's service ``config.json`` for ``context``, listening on ``port``.

    NPUs are numbered as the process sees them: ``ASCEND_RT_VISIBLE_DEVICES``
    holds the assigned devices, which MindIE renumbers from 0. Health, metrics
    and management endpoints share the serving address and port, so one port
    per instance serves all of them.
    """
    parsed = parse_mindie_parameters(context.backend_parameters)
    npus = len(context.gpu_ids)
    max_seq_len = _positive(parsed, "--max-seq-len", context.context_length or DEFAULT_MAX_SEQ_LEN)
    max_input = _positive(parsed, "--max-input-token-len", max_seq_len)
    max_batch = _positive(parsed, "--max-batch-size", 200)
    max_prefill_batch = _positive(parsed, "--max-prefill-batch-size", min(50, max_batch))
    max_prefill_tokens = _positive(parsed, "--max-prefill-tokens", max(max_seq_len, max_input))
    max_iter_times = _positive(parsed, "--max-iter-times", max_seq_len)
    cpu_mem_size = _positive(parsed, "--cpu-mem-size", 0, minimum=0)
    if max_input > max_seq_len:
        raise MindIEParameterError(
            f"--max-input-token-len {max_input} must not exceed --max-seq-len {max_seq_len}"
        )
    if max_prefill_tokens < max_input:
        raise MindIEParameterError(
            f"--max-prefill-tokens {max_prefill_tokens} must be at least "
            f"--max-input-token-len {max_input}"
        )
    if max_prefill_batch > max_batch:
        raise MindIEParameterError(
            f"--max-prefill-batch-size {max_prefill_batch} must not exceed "
            f"--max-batch-size {max_batch}"
        )
    if max_iter_times > max_seq_len:
        raise MindIEParameterError(
            f"--max-iter-times {max_iter_times} must not exceed --max-seq-len {max_seq_len}"
        )

    server: dict[str, Any] = {
        "ipAddress": context.host,
        "managementIpAddress": context.host,
        "port": port,
        "managementPort": port,
        "metricsPort": port,
        "allowAllZeroIpListening": context.host in ALL_ZERO_HOSTS,
        "maxLinkNum": 1000,
        "httpsEnabled": False,
        "fullTextEnabled": False,
        "inferMode": "standard",
        "interCommTLSEnabled": False,
        "openAiSupport": "vllm",
        "tokenTimeout": 600,
        "e2eTimeout": 600,
        "maxRequestLength": 40,
        "distDPServerEnabled": False,
    }
    model: dict[str, Any] = {
        "modelInstanceType": "Standard",
        "modelName": context.model_name,
        "modelWeightPath": context.model_path,
        "worldSize": npus,
        "cpuMemSize": cpu_mem_size,
        "npuMemSize": -1,
        "backendType": "atb",
        "trustRemoteCode": parsed.get("--trust-remote-code") == "true",
    }
    schedule: dict[str, Any] = {
        "templateType": "Standard",
        "templateName": "Standard_LLM",
        "cacheBlockSize": 128,
        "maxPrefillBatchSize": max_prefill_batch,
        "maxPrefillTokens": max_prefill_tokens,
        "prefillTimeMsPerReq": 150,
        "prefillPolicyType": 0,
        "decodeTimeMsPerReq": 50,
        "decodePolicyType": 0,
        "maxBatchSize": max_batch,
        "maxIterTimes": max_iter_times,
        "maxPreemptCount": 0,
        "supportSelectBatch": False,
        "maxQueueDelayMicroseconds": 5000,
    }
    backend: dict[str, Any] = {
        "backendName": "mindieservice_llm_engine",
        "modelInstanceNumber": 1,
        "npuDeviceIds": [list(range(npus))],
        "tokenizerProcessNumber": 8,
        "multiNodesInferEnabled": False,
        "interNodeTLSEnabled": False,
        "ModelDeployConfig": {
            "maxSeqLen": max_seq_len,
            "maxInputTokenLen": max_input,
            "truncation": False,
            "ModelConfig": [model],
        },
        "ScheduleConfig": schedule,
    }
    return {
        "Version": "1.0.0",
        "LogConfig": {"logLevel": _log_level(parsed), "dynamicLogLevelValidHours": 2},
        "ServerConfig": server,
        "BackendConfig": backend,
    }
