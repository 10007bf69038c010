"""Model shape facts that drive memory estimates, independent of the file format.

Both readers (GGUF and safetensors + ``config.json``) produce a :class:`ModelMetadata`;
the estimator in :mod:`.memory` only ever sees this type.
"""

from __future__ import annotations

from dataclasses import dataclass

from maasbase.common.errors import InvalidRequest, NotFound

# Architectures (GGUF ``general.architecture`` or HF ``model_type``, normalised with
# :func:`normalise_architecture`) that are bidirectional encoders: they serve embeddings
# or scores and keep no KV cache between steps.
ENCODER_ONLY_ARCHITECTURES = frozenset(
    {
        "bert",
        "camembert",
        "deberta-v2",
        "distilbert",
        "electra",
        "jina-bert-v2",
        "jina-bert-v3",
        "modern-bert",
        "modernbert",
        "neo-bert",
        "new",
        "nomic-bert",
        "nomic-bert-moe",
        "roberta",
        "t5encoder",
        "xlm-roberta",
    }
)


class ModelFormatError(InvalidRequest):
    """A model file or config cannot be read as the format it claims to be."""

    code = "invalid_model_file"


class HeaderIncomplete(ModelFormatError):
    """The bytes given end before the header does; ``needed_bytes`` is a lower bound."""

    code = "model_header_incomplete"

    def __init__(self, message: str, *, needed_bytes: int) -> None:
        super().__init__(message, details={"needed_bytes": needed_bytes})
        self.needed_bytes = needed_bytes


class ModelFileNotFound(NotFound):
    code = "model_file_not_found"


def normalise_architecture(name: str) -> str:
    """Lower-case, ``_`` → ``-``: HF ``nomic_bert`` and GGUF ``nomic-bert`` compare equal."""
    return name.strip().lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What the estimator needs to know about a model; every size is in bytes.

    ``num_kv_heads``/``head_dim`` describe the attention cache of every layer unless
    ``layer_kv_heads`` lists a per-layer count (hybrid models with attention-free layers).
    ``value_head_dim`` is the V width when it differs from K (``None`` = same; ``0`` for
    latent-attention caches that store a single compressed vector per token).
    """

    architecture: str
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    max_context: int
    weight_bytes: int
    dtype: str
    vocab_size: int
    is_embedding: bool = False
    sliding_window: int | None = None
    intermediate_size: int | None = None
    value_head_dim: int | None = None
    layer_kv_heads: tuple[int, ...] | None = None
    source_format: str = ""

    def __post_init__(self) -> None:
        positive = {
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "max_context": self.max_context,
        }
        non_negative = {
            "num_attention_heads": self.num_attention_heads,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "weight_bytes": self.weight_bytes,
            "vocab_size": self.vocab_size,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ModelFormatError(f"model metadata has {name}={value}; expected > 0")
        for name, value in non_negative.items():
            if value < 0:
                raise ModelFormatError(f"model metadata has {name}={value}; expected >= 0")
        if self.layer_kv_heads is not None and len(self.layer_kv_heads) != self.num_layers:
            raise ModelFormatError(
                f"per-layer KV head list has {len(self.layer_kv_heads)} entries "
                f"for {self.num_layers} layers"
            )

    @property
    def kv_heads_by_layer(self) -> tuple[int, ...]:
        """KV head count of each layer (0 for layers without an attention cache)."""
        if not self.has_kv_cache:
            return (0,) * self.num_layers
        if self.layer_kv_heads is not None:
            return self.layer_kv_heads
        return (self.num_kv_heads,) * self.num_layers

    @property
    def v_head_dim(self) -> int:
        return self.head_dim if self.value_head_dim is None else self.value_head_dim

    @property
    def has_kv_cache(self) -> bool:
        """Decoders keep K/V per token; encoders and attention-free models do not."""
        if normalise_architecture(self.architecture) in ENCODER_ONLY_ARCHITECTURES:
            return False
        return self.num_kv_heads > 0 and self.head_dim > 0
