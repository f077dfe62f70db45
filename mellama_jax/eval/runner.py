"""Running the benchmark: records → prompts → greedy decoding (or log-likelihood choice) → metrics.

`evaluate(model, cfg)` accepts any object with the interface of the model `mellama_jax.load` returns:

* `model.tokenizer` with `.encode(text, bos=True, eos=False)`, `.decode(ids)`, `.eos_id`
  (and optionally `.pad_id`);
* `model.generate(prompt_ids: list[list[int]], max_new_tokens=..., temperature=0.0, eos_id=...)`
  returning the new tokens of each prompt (generation mode);
* `model.logits(tokens int32 [B, T])` → logits [B, T, V] (log-likelihood mode);
* `model.config.max_position_embeddings` (the context window; overridable with `EvalConfig.max_length`).

Every record of every requested task is read and validated before the model runs, so a bad line fails
the run in seconds, naming `file:line`.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Sequence

import jax
from tqdm.auto import tqdm

from mellama_jax.data.templates import TEMPLATE_NAMES, render_prompt, strip_response
from mellama_jax.eval import scoring
from mellama_jax.eval.parsing import MATCHING_MODES, check_matching
from mellama_jax.eval.records import EvalRecord, find_task_file, iter_records
from mellama_jax.eval.tasks.base import ChoiceTask, Example, Task
from mellama_jax.eval.tasks.registry import resolve_tasks

log = logging.getLogger(__name__)

TEMPLATES = TEMPLATE_NAMES  # none, me_llama, llama2_chat, alpaca (mellama_jax/data/templates.py)
MODES = ("generate", "loglik")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    tasks: tuple[str, ...]
    data_dir: str
    max_new_tokens: int = 256  # MIBE: at most 256 new tokens, stop at EOS
    template: str = "none"  # chat/instruction template wrapped around each query (data/templates.py)
    matching: str = "mibe"  # answer matching: "mibe" (loose, first choice found) or "strict"
    mode: str = "generate"  # "loglik": multiple-choice tasks pick the most likely choice instead
    length_normalize: bool = False  # loglik mode: compare mean per-token log-likelihoods
    limit: int | None = None  # first N records of each task
    batch_size: int = 8
    max_length: int | None = None  # context window; default: the model's max_position_embeddings
    progress: bool = True

    def __post_init__(self):
        check_matching(self.matching)
        if self.template not in TEMPLATES:
            raise ValueError(f"template={self.template!r}; expected one of {TEMPLATES}")
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}; expected one of {MODES}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    @property
    def show_progress(self) -> bool:
        return self.progress and jax.process_index() == 0  # one progress bar per run, not per host


@dataclasses.dataclass(frozen=True)
class TaskResult:
    task: Task
    data_file: str
    mode: str  # how predictions were made for this task: "generate" or "loglik"
    examples: tuple[Example, ...]  # judged under the run's matching mode (`other` holds the other mode)
    metrics: dict[str, float]  # under the run's matching mode
    seconds: float
    metrics_by_matching: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # both modes


@dataclasses.dataclass(frozen=True)
class _Prepared:
    task: Task
    data_file: str
    records: tuple[EvalRecord, ...]
    golds: tuple[Any, ...]


def load_tasks(cfg: EvalConfig) -> list[_Prepared]:
    """Read and validate every record of every task (raises RecordError / FileNotFoundError)."""
    prepared = []
    for task in resolve_tasks(list(cfg.tasks)):
        path = find_task_file(cfg.data_dir, task.name, task.file_names)
        records = tuple(iter_records(path, cfg.limit))
        if not records:
            raise ValueError(f"{path}: no records for task {task.name}")
        golds = tuple(task.gold(r) for r in records)
        prepared.append(_Prepared(task, path, records, golds))
    return prepared


def context_window(model, cfg: EvalConfig) -> int:
    if cfg.max_length:
        return cfg.max_length
    config = getattr(model, "config", None)
    length = getattr(config, "max_position_embeddings", None)
    if not length:
        raise ValueError("cannot tell the model's context window; set EvalConfig.max_length (--max_length)")
    return int(length)


def fit_prompt(ids: list[int], budget: int, keep_head: int = 1) -> tuple[list[int], bool]:
    """Cut a prompt to `budget` tokens keeping its first `keep_head` (BOS) and its end (the answer cue)."""
    if len(ids) <= budget:
        return ids, False
    if budget <= keep_head:
        raise ValueError(f"no room for the prompt: budget of {budget} tokens")
    return ids[:keep_head] + ids[len(ids) - (budget - keep_head):], True


def _generate_outputs(model, prompts: Sequence[str], cfg: EvalConfig, window: int, desc: str):
    tok = model.tokenizer
    budget = window - cfg.max_new_tokens
    encoded = [fit_prompt(tok.encode(p, bos=True), budget) for p in prompts]
    # Longest first, in batches of similar length: little padding, and the slowest batch comes first.
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i][0]))
    outputs: list[str] = [""] * len(prompts)
    with tqdm(total=len(prompts), desc=desc, disable=not cfg.show_progress) as bar:
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start:start + cfg.batch_size]
            new_tokens = model.generate([encoded[i][0] for i in rows], max_new_tokens=cfg.max_new_tokens,
                                        temperature=0.0, eos_id=tok.eos_id)
            for i, ids in zip(rows, new_tokens):
                ids = list(ids)
                if tok.eos_id in ids:  # generators may or may not return the EOS that stopped a row
                    ids = ids[:ids.index(tok.eos_id)]
                # A chat model may run on into a next turn ("\nHuman:", "[INST]"): cut it like SFT data does.
                outputs[i] = strip_response(tok.decode(ids), cfg.template)
            bar.update(len(rows))
    return outputs, [t for _, t in encoded]


def run_task(model, prepared: _Prepared, cfg: EvalConfig) -> TaskResult:
    task, records, golds = prepared.task, prepared.records, prepared.golds
    started = time.perf_counter()
    prompts = [render_prompt(cfg.template, task.prompt(r)) for r in records]
    window = context_window(model, cfg)
    use_loglik = cfg.mode == "loglik" and isinstance(task, ChoiceTask)
    if use_loglik:
        tok = model.tokenizer
        candidates = [task.candidates(r) for r in records]
        picks = scoring.score_choices(model.logits, lambda s: tok.encode(s, bos=True), prompts, candidates,
                                      max_length=window, batch_size=cfg.batch_size,
                                      length_normalize=cfg.length_normalize, pad_id=getattr(tok, "pad_id", 0),
                                      progress=cfg.show_progress)
        outputs = [cands[i] for cands, i in zip(candidates, picks)]
        truncated = [False] * len(records)
        judged = {m: [task.judge_choice_index(i, r, g) for i, r, g in zip(picks, records, golds)]
                  for m in MATCHING_MODES}
    else:
        outputs, truncated = _generate_outputs(model, prompts, cfg, window, desc=task.name)
        # Matching is applied after decoding, so both modes cost one generation: the report shows both.
        judged = {m: [task.judge(o, r, g, m) for o, r, g in zip(outputs, records, golds)] for m in MATCHING_MODES}
    by_mode = {m: tuple(Example(id=r.id, where=r.where, prompt=p, output=o, prediction=j.prediction, gold=g,
                                correct=j.correct, scores=dict(j.scores), truncated=t)
                        for r, p, o, j, g, t in zip(records, prompts, outputs, judged[m], golds, truncated))
               for m in MATCHING_MODES}
    metrics = {m: task.aggregate(by_mode[m], m) for m in MATCHING_MODES}
    (other_mode,) = [m for m in MATCHING_MODES if m != cfg.matching]
    examples = tuple(dataclasses.replace(e, other={"matching": other_mode, "prediction": x.prediction,
                                                   "correct": x.correct, "scores": x.scores})
                     for e, x in zip(by_mode[cfg.matching], by_mode[other_mode]))
    if any(truncated):
        log.warning("%s: %d prompts were cut to fit %d tokens (with %d new tokens)", task.name, sum(truncated),
                    window, cfg.max_new_tokens)
    return TaskResult(task, prepared.data_file, "loglik" if use_loglik else "generate", examples,
                      metrics[cfg.matching], time.perf_counter() - started, metrics)


def evaluate(model, cfg: EvalConfig, prepared: Sequence[_Prepared] | None = None) -> list[TaskResult]:
    """Run every task of `cfg` on `model`; results in task order. `prepared`: the output of
    `load_tasks(cfg)` when the caller already validated the records (read again otherwise)."""
    prepared = load_tasks(cfg) if prepared is None else prepared
    results = []
    for p in prepared:
        result = run_task(model, p, cfg)
        log.info("%s: %s", p.task.name, {k: round(v, 4) for k, v in result.metrics.items()})
        results.append(result)
    return results
