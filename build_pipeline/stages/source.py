"""Stage 1, source: open a model config's weights (GGUF file, HF folder or Hub snapshot; sources/) and
parse its family config, checked against the model config before anything is written."""

from __future__ import annotations

from dataclasses import dataclass

from build_pipeline.errors import BuildError
from build_pipeline.families import Family, ModelConfig, family_of_hf_config, get_family
from build_pipeline.model_config import ModelSpec
from build_pipeline.sources import SourceModel, open_source


@dataclass
class LoadedModel:
    """A model config with its source opened and its family config parsed: shared by all variants."""

    spec: ModelSpec
    source: SourceModel
    family: Family
    config: ModelConfig


def load_model(spec: ModelSpec) -> LoadedModel:
    source = open_source(spec.source, spec.path.parent)
    detected = family_of_hf_config(source.hf_config)
    if detected != spec.family:
        raise BuildError(
            f"{spec.path.name} says family {spec.family!r} but the weights are a {detected!r} model",
            f'set family = "{detected}" in {spec.path.name}',
        )
    family = get_family(spec.family)
    config = family.config_from_hf(source.hf_config)
    if spec.context_window > config.max_position_embeddings:
        raise BuildError(
            f"context_window {spec.context_window} exceeds the model's trained context "
            f"({config.max_position_embeddings})",
            f"lower context_window in {spec.path.name}",
        )
    return LoadedModel(spec, source, family, config)
