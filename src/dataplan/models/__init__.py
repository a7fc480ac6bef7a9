"""Model layer: resolve a model name to weights, choose device and dtype, attach LoRA adapters."""
