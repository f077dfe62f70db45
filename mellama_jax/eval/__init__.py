"""Me-LLaMA medical evaluation (MIBE tasks) and the lm-evaluation-harness adapter.

    from mellama_jax.eval.runner import EvalConfig, evaluate
    from mellama_jax.eval.report import write_report
    results = evaluate(mellama_jax.load(path), EvalConfig(tasks=("pubmedqa",), data_dir="data/mibe"))

Modules: records (JSONL reading), parsing (mibe / strict answer matching), spans (NER span format → BIO),
mibe/ (Me-LLaMA's scoring rules, prompts and test-set builders),
metrics, scoring (log-likelihood), tasks/ (one module per task family), runner, report, lm_eval_adapter.
CLI: `python -m mellama_jax.evaluate`.
"""
