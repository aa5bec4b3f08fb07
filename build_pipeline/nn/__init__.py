"""Model building blocks the families' nn.Modules are made of (quantization-aware linears and embeddings
that dequantize every weight format inside the kernel). Below both the families, which use them, and the
compiler, which compiles what the families define: nothing here imports either."""
