"""The build pipeline's stages, one module each, in the order build.py runs them:

source -> quantize -> shards -> compile -> verify -> quality -> manifest (build_pipeline/manifest.py).
docs/architecture.md maps each stage to its module and says how to see its output.
"""
