"""f16 WGSL on a device that has shader-f16 (SwiftShader in Chromium has none).

Needs Python `wgpu` and a Vulkan driver offering shader-f16: Debian's mesa-vulkan-drivers gives
llvmpipe (lavapipe), which does; the Makefile installs both. Every kernel of the f16 libraries must pass WGSL validation and pipeline
creation with web-llm's limits (10 storage buffers, 256 invocations, 32 KiB workgroup memory).
"""

from __future__ import annotations

import os

import pytest
import wgpu


@pytest.fixture(scope="module")
def f16_device():
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    assert adapter is not None and "shader-f16" in adapter.features, (
        "no WebGPU adapter with shader-f16: install Debian's mesa-vulkan-drivers (make install-test)"
    )
    return adapter.request_device_sync(
        required_features=["shader-f16"],
        required_limits={
            "max_storage_buffers_per_shader_stage": 10,
            "max_compute_invocations_per_workgroup": 256,
            "max_compute_workgroup_storage_size": 32768,
        },
    )


@pytest.mark.parametrize("quant", ["q4f16_1", "q0f16"])
def test_f16_kernels_compile_on_an_f16_device(f16_device, quant):
    from build_pipeline.compiler.library import compile_executable, webgpu_source, webgpu_target
    from build_pipeline.compiler.limits import split_kernels
    from build_pipeline.compiler.module import LibrarySettings
    from build_pipeline.compiler.profiles import resolve_profiles
    from build_pipeline.families import get_family
    from build_pipeline.quantization import get_scheme
    from testing.tiny_model import tiny_llama_config

    config = tiny_llama_config()
    scheme = get_scheme(quant)
    prof = resolve_profiles(None, scheme)[0]
    ex, _ = compile_executable(
        get_family("llama"), config, scheme, LibrarySettings(256, 64, prof.name), prof, webgpu_target()
    )
    kernels = split_kernels(webgpu_source(ex))
    assert any("enable f16;" in src for src in kernels.values())
    failed = {}
    for name, src in kernels.items():
        try:
            module = f16_device.create_shader_module(code=src)
            f16_device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": name})
        except Exception as err:  # noqa: BLE001 - wgpu reports shader errors as various types
            failed[name] = str(err)[:300]
    assert not failed, failed
