"""lm-evaluation-harness's own command line, with our model registered as "mellama_jax".

    mellama-lm-eval run --model mellama_jax --model_args pretrained=PATH --batch_size 8 --tasks pubmedqa,medmcqa

Everything after the program name is lm-eval's (`mellama-lm-eval --help`); the backend is
mellama_jax/eval/lm_eval_adapter.py. Needs the [lm_eval] extra. The shipped MIBE tasks (--include_path
configs/lm_eval) read their data from --metadata '{"data_dir": "DIR"}' or $MELLAMA_MIBE_DATA.
"""
from __future__ import annotations

import sys

from lm_eval.__main__ import cli_evaluate

from mellama_jax.eval import lm_eval_adapter  # importing it registers the "mellama_jax" model


def main(argv=None) -> int:
    if argv is not None:  # lm-eval's parser reads sys.argv itself
        sys.argv = [sys.argv[0], *argv]
    try:
        cli_evaluate()
    except lm_eval_adapter.MibeDataError as e:  # a user's mistake: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
