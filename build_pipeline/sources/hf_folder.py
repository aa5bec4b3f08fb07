"""A local Hugging Face model folder: config.json + *.safetensors + tokenizer.json (+ tokenizer_config.json)."""

from __future__ import annotations

import json
from pathlib import Path

from build_pipeline.contract import TOKENIZER_FILE
from build_pipeline.errors import BuildError
from build_pipeline.sources.safetensors_file import SafetensorsFile
from build_pipeline.sources.source_model import SourceModel

# Files a build needs from a model folder or hub repo; hub downloads fetch only these.
NEEDED_FILES = [
    "config.json",
    "generation_config.json",
    TOKENIZER_FILE,
    "tokenizer_config.json",
    "chat_template.jinja",
    "model.safetensors.index.json",
    "*.safetensors",
]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BuildError(f"{path} is not valid JSON ({exc})", "restore the file from the model's source") from None


def open_folder(folder: Path) -> SourceModel:
    if not folder.is_dir():
        raise BuildError(f"model folder {folder} does not exist", "check the [source] path in the model config")
    config_path = folder / "config.json"
    if not config_path.exists():
        raise BuildError(f"{folder} has no config.json", "point the source at a Hugging Face model folder")
    hf_config = _read_json(config_path)

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise BuildError(
            f"{folder} has no *.safetensors weights",
            "download the model's safetensors files (PyTorch .bin checkpoints are not supported)",
        )
    index = folder / "model.safetensors.index.json"
    if index.exists():
        listed = sorted(set(_read_json(index)["weight_map"].values()))
        missing = [n for n in listed if not (folder / n).exists()]
        if missing:
            raise BuildError(
                f"{folder} is missing weight shard(s) {', '.join(missing)} listed in model.safetensors.index.json",
                "download the complete model",
            )
        files = [folder / n for n in listed]
    owners: dict[str, SafetensorsFile] = {}
    for path in files:
        st = SafetensorsFile(path)
        for name in st.names():
            owners[name] = st

    tokenizer_json = folder / TOKENIZER_FILE
    if not tokenizer_json.exists():
        raise BuildError(
            f"{folder} has no tokenizer.json",
            "add the model's tokenizer.json (the fast-tokenizer file) to the folder",
        )
    tokenizer_files = {TOKENIZER_FILE: tokenizer_json.read_bytes()}
    tok_config = {}
    if (folder / "tokenizer_config.json").exists():
        tokenizer_files["tokenizer_config.json"] = (folder / "tokenizer_config.json").read_bytes()
        tok_config = _read_json(folder / "tokenizer_config.json")
    chat_template = tok_config.get("chat_template")
    if (folder / "chat_template.jinja").exists():
        chat_template = (folder / "chat_template.jinja").read_text()
    gen = _read_json(folder / "generation_config.json") if (folder / "generation_config.json").exists() else {}

    return SourceModel(
        origin=str(folder),
        hf_config=hf_config,
        tensor_names=list(owners),
        load=lambda name: owners[name].load(name),
        tokenizer_files=tokenizer_files,
        chat_template=chat_template,
        generation_config=gen,
    )
