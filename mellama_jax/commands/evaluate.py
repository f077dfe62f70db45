"""Run the Me-LLaMA medical benchmark (MIBE tasks) on a model.

    mellama-evaluate --model PATH --tasks pubmedqa,medqa,mednli --data_dir DIR --out_dir DIR \
        [--max_new_tokens 256] [--template none|me_llama|llama2_chat|alpaca] [--matching mibe|strict] \
        [--mode generate|loglik] [--limit N] [--batch_size 8] \
        [--num_fewshot K --fewshot_seeds N --fewshot_dir DIR] [--self_consistency N --temperature T] [--seed S]

--model: anything `mellama_jax.load` opens (HF directory, model checkpoint, training workdir).
--data_dir: Me-LLaMA's released test sets ({id, query, answer, choices, gold, text}) as `<task>.jsonl`,
`<task>/test.jsonl`, a hub snapshot `<name>/data/test-*.parquet` or a `datasets.save_to_disk` directory, under
the task name or the released name (HoC_test, ...); nothing is downloaded (docs/evaluation.md). --tasks all
runs every task. Every output is scored both by Me-LLaMA's rules (mibe) and the corrected scorer (strict);
--matching picks the main one. Writes summary.json, report.md and examples/<task>.jsonl to --out_dir (see
mellama_jax/eval/report.py) and prints the table.
--template: defaults to the prompt template the model was instruction-tuned with when its directory records
one (training_run.json of an export or model checkpoint, the run config of a workdir), else none.

On a pod (or several devices), the model is sharded over a mesh set as in training: `--config.mesh.data=2
--config.mesh.tensor=4` (data: batch rows over replicas, for throughput; tensor: heads and MLP split, for
latency; fsdp: parameters split, rows too). Weights go straight onto their shards. Several hosts: the same
command on every host (jax.distributed as in training: cluster detection, or --coordinator/--num_processes/
--process_id as launch/local.py passes them); each batch's rows are split over the data-parallel replicas,
results come back in record order and process 0 writes the report.

Each finished batch is kept in `<out_dir>.partial/`: a killed run, rerun with the same command, continues
there and writes the report an uninterrupted run writes (eval/resume.py). --out_dir may be gs://.
"""
from __future__ import annotations

import dataclasses
import logging
import sys

from mellama_jax import cli, paths
from mellama_jax.api import load
from mellama_jax.commands.mesh_flags import parse_mesh_command
from mellama_jax.eval.parsing import MATCHING_MODES
from mellama_jax.eval.report import markdown_table, write_report
from mellama_jax.eval.resume import Progress, ResumeError, run_settings
from mellama_jax.eval.runner import MODES, TEMPLATES, EvalConfig, check_data_parallel, evaluate, load_tasks
from mellama_jax.eval.tasks.registry import task_names
from mellama_jax.parallel import (
    MeshConfig,
    axis_rules,
    data_parallel_size,
    make_mesh,
)


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog="mellama-evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF directory, model checkpoint directory or training workdir")
    p.add_argument("--tasks", required=True, help=f"comma-separated task names or 'all'; known: {','.join(task_names())}")
    p.add_argument("--data_dir", required=True,
                   help="directory with each task's records: <task>.jsonl, <task>/test.jsonl, a parquet snapshot "
                        "<name>/data/test-*.parquet or a save_to_disk directory")
    p.add_argument("--out_dir", required=True, help="output directory (must not exist unless --overwrite)")
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--template", choices=TEMPLATES, default=None,
                   help="prompt template around each query (default: the model's recorded one, else none)")
    p.add_argument("--matching", choices=MATCHING_MODES, default="mibe",
                   help="main answer matching: mibe (Me-LLaMA's reference rules) or strict (both are reported)")
    p.add_argument("--mode", choices=MODES, default="generate",
                   help="loglik: multiple-choice tasks pick the most likely choice instead of generating")
    p.add_argument("--length_normalize", action="store_true", help="loglik mode: mean per-token log-likelihood")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N records of each task")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_length", type=int, default=None, help="context window (default: the model's)")
    p.add_argument("--num_fewshot", type=int, default=0, help="k solved examples before each query (needs "
                   "--fewshot_dir)")
    p.add_argument("--fewshot_seeds", type=int, default=1, help="few-shot: runs with different shot draws, "
                   "reported as mean and std")
    p.add_argument("--fewshot_dir", default=None, help="directory holding each task's train split (<task>/train.jsonl, "
                   "<name>/data/train-*.parquet, a save_to_disk DatasetDict, ...)")
    p.add_argument("--self_consistency", type=int, default=0,
                   help="n > 1: sample n answers per multiple-choice record at --temperature, majority vote")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature of --self_consistency")
    p.add_argument("--seed", type=int, default=0, help="seed of shot draws, sampling and mibe's ROUGE bootstrap")
    p.add_argument("--bertscore_model", default=None,
                   help="summaries: local directory of the BERTScore model (the reference uses "
                        "bert-base-multilingual-cased); absent: BERTScore is not computed")
    p.add_argument("--bertscore_num_layers", type=int, default=None,
                   help="BERTScore layer (default: bert_score's layer for bert-base-multilingual-cased, 9)")
    p.add_argument("--bartscore_model", default=None,
                   help="summaries: local directory of facebook/bart-large-cnn for BARTScore; absent: not computed")
    p.add_argument("--bartscore_weights", default=None,
                   help="BARTScore: the bart_score.pth state dict the reference loads into that model")
    p.add_argument("--spacy_model", default=None,
                   help="NER mibe: an installed spaCy model, name or path (the reference loads en_core_web_lg); "
                        "default: spacy.blank('en')")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out_dir (and discard the partial results of an interrupted run)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    cli.add_distributed_flags(p)
    p.epilog = ("Mesh (as in training): --config.mesh.data=N --config.mesh.fsdp=N --config.mesh.tensor=N "
                "(-1: the remaining devices; default: one device).")
    return p


def main(argv: list[str] | None = None) -> int:
    # KeyError: an unknown task name. The report is written whole at the end; finished batches are kept.
    return cli.run(_main, argv, user_errors=(KeyError, ResumeError),
                   on_interrupt="no report was written; rerun the same command to continue where it stopped")


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args, mesh_cfg = parse_mesh_command(parser, argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cli.quiet_third_party_logs()
    # Fail on a bad flag, a missing file or a bad record before spending time loading the model.
    cfg = EvalConfig(tasks=tuple(t for t in args.tasks.split(",") if t.strip()), data_dir=args.data_dir,
                     max_new_tokens=args.max_new_tokens, template=args.template or "none", matching=args.matching,
                     mode=args.mode, length_normalize=args.length_normalize, limit=args.limit,
                     batch_size=args.batch_size, max_length=args.max_length, progress=not args.no_progress,
                     num_fewshot=args.num_fewshot, fewshot_seeds=args.fewshot_seeds,
                     fewshot_dir=args.fewshot_dir, self_consistency=args.self_consistency,
                     temperature=args.temperature, seed=args.seed, bertscore_model=args.bertscore_model,
                     bertscore_num_layers=args.bertscore_num_layers, bartscore_model=args.bartscore_model,
                     bartscore_weights=args.bartscore_weights, spacy_model=args.spacy_model)
    prepared = load_tasks(cfg)
    if paths.resolve(args.out_dir).exists() and not args.overwrite:
        raise cli.UsageError(f"--out_dir {args.out_dir}: already holds a report; pass --overwrite to replace it")
    mesh = None
    with axis_rules((mesh_cfg or MeshConfig()).rules):
        if mesh_cfg is not None:
            mesh = make_mesh(mesh_cfg)  # a mesh that does not fit the devices fails here, before any weight is read
            check_data_parallel(prepared, data_parallel_size(mesh), cfg.batch_size)
        # Per-layer weights: the layout decoding wants. On a mesh, a model the mesh cannot split fails here too.
        model = load(args.model, mesh=mesh, scan_layers=False)
        if args.template is None and model.template:
            sys.stderr.write(f"template: {model.template} (recorded with the model; --template overrides it)\n")
            cfg = dataclasses.replace(cfg, template=model.template)
        progress = Progress.open(args.out_dir, run_settings(cfg, args.model), overwrite=args.overwrite)
        results = evaluate(model, cfg, prepared, progress)
    summary = write_report(args.out_dir, results, cfg, args.model, overwrite=args.overwrite)
    progress.done()
    sys.stdout.write(markdown_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
