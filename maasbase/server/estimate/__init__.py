"""Resource estimation before placement, from model file headers alone.

Readers (GGUF, safetensors + ``config.json``, local or through a hub) produce
:class:`ModelMetadata`; :func:`estimate_memory` turns it and an engine's flags into a
:class:`MemoryEstimate` a scheduler can compare with GPU sizes.
"""

from .gguf_reader import (
    GGUFHeader,
    gguf_metadata,
    parse_gguf_header,
    read_gguf_header,
    read_gguf_metadata,
)
from .memory import (
    MemoryEstimate,
    claimed_bytes,
    estimate_memory,
    fits_gpu,
    kv_cache_bytes,
    required_gpu_total,
)
from .metadata import HeaderIncomplete, ModelFileNotFound, ModelFormatError, ModelMetadata
from .remote import (
    HttpHub,
    HuggingFaceHub,
    ModelScopeHub,
    RemoteAccessDenied,
    RemoteFile,
    RemoteHubUnavailable,
    RemoteModelNotFound,
    RemoteRequestRejected,
    fetch_remote_metadata,
)
from .safetensors_reader import (
    SafetensorsHeader,
    hf_metadata,
    parse_safetensors_header,
    read_hf_folder_metadata,
    read_safetensors_header,
)
from .settings import (
    CacheType,
    EngineSettings,
    EstimateRequest,
    InvalidBackendParameter,
    parse_flags,
    resolve_settings,
    valid_tensor_parallel_sizes,
)

__all__ = [
    "CacheType",
    "EngineSettings",
    "EstimateRequest",
    "GGUFHeader",
    "HeaderIncomplete",
    "HttpHub",
    "HuggingFaceHub",
    "InvalidBackendParameter",
    "MemoryEstimate",
    "ModelFileNotFound",
    "ModelFormatError",
    "ModelMetadata",
    "ModelScopeHub",
    "RemoteAccessDenied",
    "RemoteFile",
    "RemoteHubUnavailable",
    "RemoteModelNotFound",
    "RemoteRequestRejected",
    "SafetensorsHeader",
    "claimed_bytes",
    "estimate_memory",
    "fetch_remote_metadata",
    "fits_gpu",
    "gguf_metadata",
    "hf_metadata",
    "kv_cache_bytes",
    "parse_flags",
    "parse_gguf_header",
    "parse_safetensors_header",
    "read_gguf_header",
    "read_gguf_metadata",
    "read_hf_folder_metadata",
    "read_safetensors_header",
    "required_gpu_total",
    "resolve_settings",
    "valid_tensor_parallel_sizes",
]
