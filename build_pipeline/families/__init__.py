"""Model families. Each is a config dataclass, a weight-name map and (for compiling) an nn.Module."""

from __future__ import annotations

from build_pipeline.errors import BuildError
from build_pipeline.families import gemma, llama, phi3, qwen2

FAMILIES = {"llama": llama, "qwen2": qwen2, "gemma2": gemma, "gemma3": gemma, "phi3": phi3}

# Hugging Face `architectures` entries -> family.
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "Phi3ForCausalLM": "phi3",
}


def get_family(name: str):
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
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    raise BuildError(
        f"unknown architecture {', '.join(archs) or '(none given in config.json)'}",
        f"Lantern builds {', '.join(sorted(ARCHITECTURES))}; pick a model of one of those architectures",
    )
