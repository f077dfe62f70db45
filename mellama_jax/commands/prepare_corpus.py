"""Tokenize a data config's raw sources into ArrayRecord shards laid out as TFDS datasets.

    mellama-prepare-corpus --data_config configs/data/demo_mix.py:runs/demo/data \
        --tokenizer runs/demo/data/tokenizer/tokenizer.model --out_dir runs/demo/prepared --workers 2

    # Apache Beam (pip install -e .[beam]); DirectRunner here, the same code on Dataflow / Flink / Spark:
    mellama-prepare-corpus ... --runner beam --beam_options=--runner=DirectRunner,--direct_num_workers=4

Sources may be JSONL / Parquet / ArrayRecord files or the corpus sources as distributed (format: pubmed_xml,
pmc_jats, mimic_notes_csv, mimic_cxr_reports; docs/corpus_sources.md). With `dedup` / `decontaminate` in the
data config, duplicates and documents overlapping the evaluation test sets are removed first.

Reads back with `tfds.data_source("mellama_corpus/<component>", data_dir=OUT_DIR, split="train")`; set
`prepared_dir=OUT_DIR` in the data config to train from it. Prints token counts per domain, what dedup and
decontamination removed, and the bad-input report (all in OUT_DIR/corpus_report.json). OUT_DIR must be new,
empty, or a previous output (with --overwrite); a failed run leaves nothing in it. Sources and OUT_DIR may be on
gs:// (--runner beam: the Beam workers write the shards there themselves, on any runner; local runner: shards
are staged locally and uploaded; docs/cloud_storage.md).
"""
import json
import logging
import sys

from mellama_jax import cli
from mellama_jax.config import ConfigError, config_module
from mellama_jax.data.errors import DataError
from mellama_jax.data.prepare import prepare_corpus
from mellama_jax.data.tokenizer import Tokenizer


def load_config_file(spec: str):
    """`path.py[:arg]` → the module's get_config(arg) (the ml_collections config-file convention)."""
    path, _, arg = spec.partition(":")
    try:
        module = config_module(path)
    except ConfigError as e:
        raise DataError(str(e)) from e
    return module.get_config(arg) if arg else module.get_config()


def main(argv=None) -> int:
    return cli.run(_main, argv)


def _main(argv) -> int:
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--data_config", required=True, help="configs/data/<name>.py[:arg]")
    p.add_argument("--tokenizer", required=True, help="tokenizer.model, or a directory holding one")
    p.add_argument("--out_dir", required=True, help="local directory or gs://bucket/path")
    p.add_argument("--staging_dir", default=None,
                   help="local runner with a gs:// --out_dir: local directory for the shards before upload (default: the "
                        "system's temporary directory; needs room for the largest component)")
    p.add_argument("--workers", type=int, default=0, help="local worker processes (0 = all cores)")
    p.add_argument("--runner", choices=("local", "beam"), default="local")
    p.add_argument("--beam_options", default="", help="comma-separated Beam pipeline options")
    p.add_argument("--strict", action="store_true", help="fail on the first bad record")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cli.quiet_third_party_logs()
    cfg = load_config_file(args.data_config)
    if args.strict:
        cfg.strict = True
    tok = Tokenizer.load(args.tokenizer)
    options = [o for o in args.beam_options.split(",") if o]
    try:
        report = prepare_corpus(cfg, tok, args.out_dir, workers=args.workers, runner=args.runner,
                                beam_options=options, overwrite=args.overwrite, staging_dir=args.staging_dir)
    except DataError as e:  # a user's input or config: one line naming the file / field, not a traceback
        print(f"prepare_corpus: {e}", file=sys.stderr)
        return 2
    for name, counts in report["components"].items():
        print(f"{name:>12}: train {counts['train']['documents']:>9} docs {counts['train']['tokens']:>13,} tokens"
              f" | heldout {counts['heldout']['documents']:>7} docs {counts['heldout']['tokens']:>11,} tokens")
    if "dedup" in report:
        print(f"dedup: removed {report['dedup']['removed']} of {report['dedup']['documents_seen']} documents")
    if "decontamination" in report:
        for task, info in report["decontamination"]["tasks"].items():
            print(f"decontamination {task}: {info['items_found']}/{info['test_items']} test items found in "
                  f"{info['documents']} training documents ({', '.join(info['sources']) or 'none'})")
    print(json.dumps({"bad_input": report["bad_input"]["counts"], "total_tokens": report["total_tokens"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
