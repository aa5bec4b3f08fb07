"""Several built models on one site: the fallback answers for each by its id, one engine process each.

Real builds (SmolLM2-135M and the tiny random Llama) in one models dir, real child processes, a real socket.
"""

from __future__ import annotations

import shutil

import pytest

from testing.fallback import FRANCE, MODEL_ID, make_app, running
from testing.tiny_model import write_hf_folder, write_model_config

TINY_ID = "tiny-llama"


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, smollm2_models):
    """SmolLM2 (the config's default) and the tiny model, built into the same models dir."""
    from build_pipeline.build import build
    from build_pipeline.model_config import load_model_config

    tmp = tmp_path_factory.mktemp("two-models")
    models = tmp / "models"
    shutil.copytree(smollm2_models / MODEL_ID, models / MODEL_ID)
    config = write_model_config(tmp / "tiny.toml", write_hf_folder(tmp / "hf"), model_id=TINY_ID)
    build(load_model_config(config), models, ["q4f32_1"], compile_library=False)
    return models


@pytest.mark.slow
def test_each_built_model_is_served_by_its_id(two_models):
    app = make_app(two_models, MAX_CONCURRENT=1)
    with running(app) as client:
        listed = client.get("/v1/models").json["data"]
        assert [m["id"] for m in listed] == [MODEL_ID, TINY_ID]  # the config's default first
        service = app.extensions["lantern_fallback"]
        assert TINY_ID not in service.engines  # loaded on demand, not at start

        assert client.get(f"/v1/models/{TINY_ID}").status == 200  # asking for it starts its engine
        tiny_engine = service.engines[TINY_ID]
        assert tiny_engine.process.wait(120) == "ready", tiny_engine.error

        tiny = client.chat(model=TINY_ID, messages=FRANCE, temperature=0, max_tokens=4)
        assert tiny.status == 200, tiny.body
        assert tiny.json["model"] == TINY_ID and tiny.json["usage"]["completion_tokens"] > 0
        default = client.chat(model=MODEL_ID, messages=FRANCE, temperature=0, max_tokens=12)
        assert default.status == 200 and default.json["model"] == MODEL_ID
        # SmolLM2's words (its q4 GGUF greedily answers this one in French), not the random model's.
        words = default.json["choices"][0]["message"]["content"]
        assert words.strip() and words != tiny.json["choices"][0]["message"]["content"]
        # Two engine processes, one per model.
        assert service.engine.process.ready.pid != tiny_engine.process.ready.pid
        fallback = next(c for c in client.get("/healthz").json["checks"] if c["name"] == "fallback")
        assert fallback["ok"] and fallback["detail"]["models"] == [MODEL_ID, TINY_ID]
        assert fallback["detail"]["other_engines"] == {TINY_ID: "ready"}

        missing = client.chat(model="gpt-4", messages=FRANCE, max_tokens=2)
        assert missing.status == 404 and missing.json["error"]["code"] == "model_not_found"
