"""What every model family provides: the typed interfaces the pipeline relies on (no TVM here)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Param:
    """One tensor of the compiled model and the source tensors it is made of (concatenated on axis 0).

    `shape` is what the fused tensor must measure, so a checkpoint that does not match its config fails
    with a clear message instead of a compiler error."""

    name: str
    sources: tuple[str, ...]
    kind: str  # "embedding" | "linear" | "norm" | "bias"
    shape: tuple[int, ...] | None = None


# meta(key, default=None): a GGUF metadata value under the file's architecture prefix ("<arch>.<key>").
GgufMeta = Callable[..., Any]


@dataclass(frozen=True)
class GgufLayout:
    """How llama.cpp stores one architecture in a GGUF, where it differs from its Llama layout: what the
    generic reader (sources/gguf_file.py) and the server copy's writer (gguf_export.py) ask the family."""

    # llama.cpp block tensor name (after `blk.<i>.`) -> Hugging Face name, overriding the Llama table.
    block_names: Mapping[str, str] = field(default_factory=dict)
    # llama.cpp stores RMSNorm weights as shift + w (Gemma's 1 + w): subtracted on import.
    norm_shift: float = 0.0
    # llama.cpp permutes the q/k rows of this architecture (its `llama` only).
    permuted_qk: bool = False
    # config.json fields beyond the Llama ones, from the metadata (and the reader, for tensors such as
    # Phi-3's rope factors).
    config: Callable[[GgufMeta, Any], dict] | None = None
    # `config` reads the rope scaling itself (Phi-3's LongRoPE): the generic GGUF rope-scaling keys are
    # not read for this architecture.
    own_rope_scaling: bool = False


class ModelConfig(Protocol):
    """A family's parsed config.json (a frozen dataclass, so read-only here). The fields every stage reads."""

    @property
    def family(self) -> str: ...

    @property
    def hidden_size(self) -> int: ...

    @property
    def intermediate_size(self) -> int: ...

    @property
    def num_hidden_layers(self) -> int: ...

    @property
    def num_attention_heads(self) -> int: ...

    @property
    def num_key_value_heads(self) -> int: ...

    @property
    def head_dim(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def rms_norm_eps(self) -> float: ...

    @property
    def rope_theta(self) -> float: ...

    @property
    def tie_word_embeddings(self) -> bool: ...

    @property
    def max_position_embeddings(self) -> int: ...

    @property
    def rope_scaling(self) -> dict | None: ...

    def to_dict(self) -> dict:
        """The `model_config` of mlc-chat-config.json; also part of every compiled library's cache key."""
        ...

    def rope_inv_freq(self) -> np.ndarray:
        """Inverse RoPE frequencies (float64) including scaling: one source for reference and export."""
        ...


class CausalLM(Protocol):
    """The family's `nn.Module` (model.py): web-llm's single-sequence ABI, exported with its own spec."""

    # Window of the KV cache's `mha_sliding` layers (TVM's per-layer sliding window), None if it has none:
    # the compiler then keeps the sliding-window attention kernels it otherwise drops.
    layer_sliding_window: int | None
    # Attention-logit soft-cap (scores -> cap * tanh(scores / cap) before softmax; Gemma 2), None if none:
    # the compiler adds it to the KV cache's attention kernels (compiler/attention_softcap.py).
    attention_logit_softcap: float | None

    def export_tvm(self, spec: Any, **kwargs: Any) -> Any: ...

    def get_default_spec(self) -> dict: ...


class Reference(Protocol):
    """The numpy yardstick (reference.py) a compiled build is verified against."""

    def reset(self) -> None: ...

    def forward(self, tokens: Any) -> np.ndarray: ...

    def hidden(self, tokens: Any) -> np.ndarray: ...

    def logit_blocks(self, x: np.ndarray, rows: int) -> Iterator[np.ndarray]: ...

    def generate_greedy(self, prompt_ids: Any, max_new_tokens: int, stop_ids: Any = ()) -> list[int]: ...
