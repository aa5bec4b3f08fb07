"""Lantern build pipeline: open model -> quantized MLC-format shards -> WebGPU library -> manifest."""
