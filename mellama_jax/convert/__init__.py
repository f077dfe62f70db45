"""Conversion between Hugging Face checkpoints (safetensors, PEFT adapters) and mellama_jax checkpoints."""
from __future__ import annotations

import sys
from typing import Callable


def run_conversion(run: Callable[..., int], args) -> int:
    """Run a conversion tool's `run(args)`. Bad input raises ValueError / OSError whose message names the
    file, tensor or field; print that as one `error:` line and exit with status 2 instead of a traceback."""
    try:
        return run(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
