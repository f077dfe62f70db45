"""lm-evaluation-harness's own command line, with our model registered as "mellama_jax".

    mellama-lm-eval run --model mellama_jax --model_args pretrained=PATH --batch_size 8 --tasks pubmedqa,medmcqa

Everything after the program name is lm-eval's (`mellama-lm-eval --help`); the backend is
mellama_jax/eval/lm_eval_adapter.py. Needs the [lm_eval] extra.
"""
from __future__ import annotations

import sys

from lm_eval.__main__ import cli_evaluate

from mellama_jax.eval import lm_eval_adapter  # noqa: F401 - importing it registers the "mellama_jax" model


def main(argv=None) -> int:
    if argv is not None:  # lm-eval's parser reads sys.argv itself
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
