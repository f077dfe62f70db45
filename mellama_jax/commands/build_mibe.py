"""Build a MIBE test set from a dataset's original distribution, with Me-LLaMA's prompt templates.

    mellama-build-mibe --task pubmedqa --raw ori_pqal.json --out data/mibe
    mellama-build-mibe --task ddi2013 --raw DDICorpus/Test/ --out data/mibe
    mellama-build-mibe --task medmcqa --raw dev.json --out data/mibe [--cop_base 1]
    mellama-build-mibe --task i2b2 --raw concept_assertion_relation_test/ --out data/mibe
    mellama-build-mibe --task emrqa --raw data.json --out data/mibe

Writes OUT/<task>.jsonl in the released record form after checking every record as
`mellama-evaluate` will read it (nothing is written when one fails). Formats: mellama_jax/eval/mibe/build.py and build_notes.py.
"""
from __future__ import annotations

import os
import sys

from mellama_jax import cli
from mellama_jax.eval.mibe import build, build_notes
from mellama_jax.eval.mibe.build import BuildError, write_records
from mellama_jax.eval.records import RecordError, parse_record
from mellama_jax.eval.tasks import get_task

# Every builder by task name: the single-file originals, then the note collections and research releases.
BUILDERS = {**build.BUILDERS, **build_notes.BUILDERS}


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, choices=sorted(BUILDERS))
    p.add_argument("--raw", required=True, help="the original file (a directory for DDI XML and i2b2 *.txt + *.con)")
    p.add_argument("--out", required=True, help="output directory; OUT/<task>.jsonl is written")
    p.add_argument("--cop_base", type=int, choices=(0, 1), default=None,
                   help="medmcqa: 1 if 'cop' counts options 1-4 (original release), 0 if 0-3 (HF copy)")
    args = p.parse_args(argv)
    if not os.path.exists(args.raw):
        sys.stderr.write(f"error: --raw {args.raw}: no such file or directory\n")
        return 2
    kwargs = {"cop_base": args.cop_base} if args.task == "medmcqa" else {}
    try:
        records = BUILDERS[args.task](args.raw, **kwargs)
        if not records:
            raise BuildError(f"{args.raw}: no records")
        task = get_task(args.task)
        for i, record in enumerate(records):  # checked as the evaluation will read them, before writing
            task.gold(parse_record(record, f"{args.raw}: built record {i} ({record['id']})", i))
        path = write_records(records, args.out, args.task)
    except (BuildError, RecordError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    print(f"{args.task}: {len(records)} records -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
