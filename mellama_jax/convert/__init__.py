"""Conversion between Hugging Face checkpoints (safetensors, PEFT adapters) and mellama_jax checkpoints."""
