"""Model families: one typed `Family` record per architecture, the single registry every stage reads.

Each family is a package: `config.py` (frozen dataclass + `config_from_hf`, no TVM), `weights.py`
(compiled param name <- source tensor names) and `model.py` (top-level `nn.Module` classes; imports
TVM, so it is imported only by `Family.create_model`). A family that differs from another only by
config features reuses that one's weights/model explicitly here (Qwen2, Qwen3, Mistral -> Llama).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from build_pipeline.errors import BuildError
from build_pipeline.families.gemma import config as gemma_config
from build_pipeline.families.gemma import gguf as gemma_gguf
from build_pipeline.families.gemma import weights as gemma_weights
from build_pipeline.families.gemma.reference import GemmaReference
from build_pipeline.families.interface import CausalLM, GgufLayout, ModelConfig, Param, Reference
from build_pipeline.families.llama import config as llama_config
from build_pipeline.families.llama import gguf as llama_gguf
from build_pipeline.families.llama import weights as llama_weights
from build_pipeline.families.mistral import config as mistral_config
from build_pipeline.families.phi3 import config as phi3_config
from build_pipeline.families.phi3 import gguf as phi3_gguf
from build_pipeline.families.phi3 import weights as phi3_weights
from build_pipeline.families.phi3.reference import Phi3Reference
from build_pipeline.families.qwen2 import config as qwen2_config
from build_pipeline.families.qwen3 import config as qwen3_config
from build_pipeline.reference import ReferenceModel

__all__ = [
    "FAMILIES",
    "CausalLM",
    "Family",
    "GgufLayout",
    "ModelConfig",
    "Param",
    "Reference",
    "family_of_gguf_arch",
    "family_of_hf_config",
    "get_family",
]


C = TypeVar("C", bound=ModelConfig)


@dataclass(frozen=True)
class Family(Generic[C]):
    """Everything the pipeline knows about one architecture (C: its config dataclass)."""

    name: str
    hf_architectures: tuple[str, ...]  # config.json `architectures` entries; the first is written for GGUF
    gguf_architectures: tuple[str, ...]  # GGUF `general.architecture` values imported as this family
    config_from_hf: Callable[[dict], C]
    weight_map: Callable[[C], list[Param]]
    model_module: str  # dotted name of the model.py holding `create_model` (imported on demand: TVM)
    reference: Callable[[C, dict[str, np.ndarray]], Reference] = ReferenceModel
    gguf_export_as: str | None = None  # GGUF arch the server copy is written as, if not gguf_architectures[0]
    gguf: GgufLayout = GgufLayout()  # how llama.cpp stores it, where that differs from Llama (<family>/gguf.py)

    @property
    def gguf_export_architecture(self) -> str | None:
        """What llama.cpp calls this family in the server's exported GGUF (None: no export)."""
        return self.gguf_export_as or next(iter(self.gguf_architectures), None)

    def create_model(self, config: C, scheme, target, context_window: int, prefill_chunk_size: int) -> CausalLM:
        """The family's nn.Module for `config` (imports TVM through model.py)."""
        try:
            create = importlib.import_module(self.model_module).create_model
        except (ModuleNotFoundError, AttributeError) as exc:
            if isinstance(exc, ModuleNotFoundError) and not self.model_module.startswith(exc.name or "?"):
                raise  # a dependency of model.py is missing, not the model definition
            raise BuildError(
                f"model family {self.name} has no compiler model definition ({self.model_module}.create_model)",
                f"add create_model() (building the nn.Module) to {self.model_module}",
            ) from None
        return create(config, scheme, target, context_window, prefill_chunk_size)


_LLAMA_MODEL = "build_pipeline.families.llama.model"

FAMILIES: dict[str, Family[Any]] = {
    f.name: f
    for f in (
        Family(
            "llama",
            ("LlamaForCausalLM",),
            ("llama",),
            llama_config.config_from_hf,
            llama_weights.weight_map,
            _LLAMA_MODEL,
            gguf=llama_gguf.LAYOUT,
        ),
        # Llama's weights and model with config.qkv_bias.
        Family(
            "qwen2",
            ("Qwen2ForCausalLM",),
            ("qwen2",),
            qwen2_config.config_from_hf,
            llama_weights.weight_map,
            _LLAMA_MODEL,
        ),
        # Llama's weights and model with config.qk_norm.
        Family(
            "qwen3",
            ("Qwen3ForCausalLM",),
            ("qwen3",),
            qwen3_config.config_from_hf,
            llama_weights.weight_map,
            _LLAMA_MODEL,
        ),
        # Llama's weights and model with config.sliding_window (Mistral GGUFs say `llama`: they import as llama).
        Family(
            "mistral",
            ("MistralForCausalLM",),
            (),
            mistral_config.config_from_hf,
            llama_weights.weight_map,
            _LLAMA_MODEL,
            gguf_export_as="llama",
        ),
        # Gemma 2 and 3 share one package (config features: q/k norms, soft-caps, layer types).
        Family(
            "gemma2",
            ("Gemma2ForCausalLM",),
            ("gemma2",),
            gemma_config.config_from_hf,
            gemma_weights.weight_map,
            "build_pipeline.families.gemma.model",
            reference=GemmaReference,
            gguf=gemma_gguf.GEMMA2,
        ),
        Family(
            "gemma3",
            ("Gemma3ForCausalLM",),
            ("gemma3",),
            gemma_config.config_from_hf,
            gemma_weights.weight_map,
            "build_pipeline.families.gemma.model",
            reference=GemmaReference,
            gguf=gemma_gguf.GEMMA3,
        ),
        Family(
            "phi3",
            ("Phi3ForCausalLM",),
            ("phi3",),
            phi3_config.config_from_hf,
            phi3_weights.weight_map,
            "build_pipeline.families.phi3.model",
            reference=Phi3Reference,
            gguf=phi3_gguf.LAYOUT,
        ),
    )
}


def get_family(name: str) -> Family[Any]:
    try:
        return FAMILIES[name]
    except KeyError:
        raise BuildError(
            f"unknown architecture family {name!r}",
            f"set `family` to one of: {', '.join(FAMILIES)} (other architectures are not supported yet)",
        ) from None


def family_of_hf_config(hf_config: dict) -> str:
    """The family a source's config.json belongs to, or a clear error."""
    archs = hf_config.get("architectures") or []
    for arch in archs:
        for family in FAMILIES.values():
            if arch in family.hf_architectures:
                return family.name
    known = sorted(a for f in FAMILIES.values() for a in f.hf_architectures)
    raise BuildError(
        f"unknown architecture {', '.join(archs) or '(none given in config.json)'}",
        f"Lantern builds {', '.join(known)}; pick a model of one of those architectures",
    )


def family_of_gguf_arch(arch: str | None, file_name: str) -> Family[Any]:
    """The family of a GGUF's `general.architecture`, or a clear error."""
    for family in FAMILIES.values():
        if arch in family.gguf_architectures:
            return family
    known = [a for f in FAMILIES.values() for a in f.gguf_architectures]
    raise BuildError(
        f"unknown architecture {arch!r} in GGUF file {file_name}",
        f"Lantern builds GGUF models of architecture {', '.join(known)}",
    )
