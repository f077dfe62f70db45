"""Running the benchmark: records → prompts → greedy decoding (or log-likelihood choice) → metrics.

Few-shot prompts and self-consistency sampling are the protocols of eval/protocols.py.

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
import random
import time
from typing import Any, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from mellama_jax.data.templates import TEMPLATE_NAMES, render_prompt, strip_response
from mellama_jax.eval import protocols, scoring
from mellama_jax.eval.parsing import MATCHING_MODES, check_matching
from mellama_jax.eval.records import EvalRecord, find_task_file, iter_records
from mellama_jax.eval.resume import NOWHERE, BatchStore, Progress
from mellama_jax.eval.tasks.base import ChoiceTask, Example, Judgement, ScoringOptions, Task
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
    # Protocols (eval/protocols.py): few-shot from a train split, self-consistency by sampling.
    num_fewshot: int = 0
    fewshot_seeds: int = 1
    fewshot_dir: str | None = None  # where each task's train split is found (as data_dir holds the test split)
    self_consistency: int = 0  # samples per record (> 1 switches it on for multiple-choice tasks)
    temperature: float = 0.0  # sampling temperature of self-consistency
    seed: int = 0  # seeds shot draws, sampling and the ROUGE bootstrap of `mibe`
    bertscore_model: str | None = None  # summaries: local model directory for BERTScore (None: not computed)
    bertscore_num_layers: int | None = None  # its layer (None: the layer bert_score uses for the reference's model)
    bartscore_model: str | None = None  # summaries: local bart-large-cnn directory for BARTScore (None: not computed)
    bartscore_weights: str | None = None  # the bart_score.pth the reference loads into it
    spacy_model: str | None = None  # NER `mibe`: installed spaCy model, name or path (None: spacy.blank("en"))

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
        if self.num_fewshot < 0 or self.fewshot_seeds < 1:
            raise ValueError(f"num_fewshot must be >= 0 and fewshot_seeds >= 1, got {self.num_fewshot}, "
                             f"{self.fewshot_seeds}")
        if self.num_fewshot and not self.fewshot_dir:
            raise ValueError("num_fewshot needs fewshot_dir: the directory of each task's train split")
        if self.self_consistency > 1 and not self.temperature > 0:
            raise ValueError(f"self_consistency={self.self_consistency} samples need temperature > 0")

    @property
    def sampling(self) -> bool:
        return self.self_consistency > 1 and self.mode == "generate"

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
    protocol: str = "zero-shot, greedy"  # how these numbers were produced (eval/protocols.describe)
    # Few-shot over several seeds: metrics are the means; their standard deviations and per-seed values.
    std_by_matching: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    per_seed: tuple[dict[str, dict[str, float]], ...] = ()


@dataclasses.dataclass(frozen=True)
class _Prepared:
    task: Task
    data_file: str
    records: tuple[EvalRecord, ...]
    golds: tuple[Any, ...]
    shot_pool: tuple[EvalRecord, ...] = ()  # the train split few-shot examples are drawn from


def load_tasks(cfg: EvalConfig) -> list[_Prepared]:
    """Read and validate every record of every task, and of its train split for few-shot (raises
    RecordError / FileNotFoundError)."""
    prepared = []
    options = ScoringOptions(seed=cfg.seed, bertscore_model=cfg.bertscore_model,
                             bertscore_num_layers=cfg.bertscore_num_layers, bartscore_model=cfg.bartscore_model,
                             bartscore_weights=cfg.bartscore_weights, spacy_model=cfg.spacy_model)
    for task in (t.configured(options) for t in resolve_tasks(list(cfg.tasks))):
        path = find_task_file(cfg.data_dir, task.name, task.file_names)
        records = tuple(iter_records(path, cfg.limit))
        if not records:
            raise ValueError(f"{path}: no records for task {task.name}")
        golds = tuple(task.gold(r) for r in records)
        pool: tuple[EvalRecord, ...] = ()
        if cfg.num_fewshot:
            pool_path = find_task_file(cfg.fewshot_dir, task.name, task.file_names, split="train")
            pool = tuple(iter_records(pool_path, split="train"))
            for r in pool:  # a shot must have a usable answer too
                protocols.shot_answer(task, r)
            protocols.check_leakage(task.name, pool, records, pool_path)
        prepared.append(_Prepared(task, path, records, golds, pool))
    return prepared


def check_data_parallel(prepared: Sequence[_Prepared], replicas: int, batch_size: int) -> None:
    """Every data-parallel replica must get whole rows: a data axis wider than the batch or than a task's
    records is a mistake (checked before the model is read)."""
    if replicas > batch_size:
        raise ValueError(f"the mesh splits each batch over {replicas} data-parallel replicas but --batch_size is "
                         f"{batch_size}; use a batch of at least {replicas} (or a smaller data axis)")
    for p in prepared:
        if replicas > len(p.records):
            raise ValueError(f"{p.data_file}: task {p.task.name} has {len(p.records)} records, fewer than the mesh's "
                             f"{replicas} data-parallel replicas; use a smaller data (or fsdp) axis")


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


def _generate_outputs(model, prompts: Sequence[str], cfg: EvalConfig, window: int, desc: str,
                      temperature: float = 0.0, seed_tag: str = "", store: BatchStore | None = None):
    tok = model.tokenizer
    budget = window - cfg.max_new_tokens
    encoded = [fit_prompt(tok.encode(p, bos=True), budget) for p in prompts]
    # Longest first, in batches of similar length: little padding (bucketed shapes: few compilations), and
    # the slowest batch comes first. A batch decodes until its last row ends, so similar lengths also keep
    # rows that finished early from waiting long.
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i][0]))
    outputs: list[str] = [""] * len(prompts)
    with tqdm(total=len(prompts), desc=desc, unit="ex", disable=not cfg.show_progress) as bar:
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start:start + cfg.batch_size]
            saved = store.load(start) if store is not None else None
            if saved is not None and saved["rows"] == rows:  # decoded by an interrupted run of this command
                for i, text in zip(rows, saved["outputs"]):
                    outputs[i] = text
                bar.update(len(rows))
                continue
            # Sampling: one decode seed per (run seed, sample, batch), so a run is reproducible.
            sampling = {"seed": random.Random(f"{seed_tag}:{start}").getrandbits(31)} if temperature > 0 else {}
            new_tokens = model.generate([encoded[i][0] for i in rows], max_new_tokens=cfg.max_new_tokens,
                                        temperature=temperature, eos_id=tok.eos_id, **sampling)
            for i, ids in zip(rows, new_tokens):
                ids = list(ids)
                if tok.eos_id in ids:  # generators may or may not return the EOS that stopped a row
                    ids = ids[:ids.index(tok.eos_id)]
                # A chat model may run on into a next turn ("\nHuman:", "[INST]"): cut it like SFT data does.
                outputs[i] = strip_response(tok.decode(ids), cfg.template)
            if store is not None:
                store.save(start, {"rows": rows, "outputs": [outputs[i] for i in rows]})
            bar.update(len(rows))
    return outputs, [t for _, t in encoded]


def _prompts(task: Task, prepared: _Prepared, cfg: EvalConfig, shot_seed: int) -> list[str]:
    if not cfg.num_fewshot:
        return [render_prompt(cfg.template, task.prompt(r)) for r in prepared.records]
    return [render_prompt(cfg.template, protocols.fewshot_prompt(
                task, r, protocols.draw_shots(prepared.shot_pool, cfg.num_fewshot, seed=cfg.seed + shot_seed,
                                              task=task.name, index=i, exclude_query=r.query)))
            for i, r in enumerate(prepared.records)]


def _self_consistent(model, task: ChoiceTask, prompts, prepared: _Prepared, cfg: EvalConfig, window: int,
                     progress: Progress, prefix: str):
    """n sampled outputs per record, judged; the majority prediction under each matching (protocols.majority)."""
    samples = [_generate_outputs(model, prompts, cfg, window, desc=f"{task.name} sample {i + 1}",
                                 temperature=cfg.temperature, seed_tag=f"{cfg.seed}:{i}",
                                 store=progress.batches(task.name, f"{prefix}sample{i}"))
               for i in range(cfg.self_consistency)]
    truncated = samples[0][1]
    outputs, judged = [], {m: [] for m in MATCHING_MODES}
    for j, (record, gold) in enumerate(zip(prepared.records, prepared.golds)):
        texts = [out[j] for out, _ in samples]
        for m in MATCHING_MODES:
            verdicts = [task.judge(t, record, gold, m) for t in texts]
            winner = protocols.majority([v.prediction for v in verdicts])
            votes = sum(v.prediction == winner for v in verdicts) if winner is not None else 0
            judged[m].append(Judgement(winner, winner == gold, {"votes": float(votes)}))
        outputs.append(texts[0])  # the per-example report shows the first sample
    return outputs, truncated, judged


def run_task(model, prepared: _Prepared, cfg: EvalConfig, shot_seed: int = 0,
             progress: Progress = NOWHERE) -> TaskResult:
    task, records, golds = prepared.task, prepared.records, prepared.golds
    prefix = f"shots{shot_seed}-" if cfg.num_fewshot else ""  # each few-shot seed is a pass of its own
    started = time.perf_counter()
    prompts = _prompts(task, prepared, cfg, shot_seed)
    window = context_window(model, cfg)
    use_loglik = cfg.mode == "loglik" and isinstance(task, ChoiceTask)
    use_sc = cfg.sampling and isinstance(task, ChoiceTask)
    if use_loglik:
        tok = model.tokenizer
        candidates = [task.candidates(r) for r in records]
        picks = scoring.score_choices(model.logits, lambda s: tok.encode(s, bos=True), prompts, candidates,
                                      max_length=window, batch_size=cfg.batch_size,
                                      length_normalize=cfg.length_normalize, pad_id=getattr(tok, "pad_id", 0),
                                      progress=cfg.show_progress,
                                      store=progress.batches(task.name, f"{prefix}loglik"))
        outputs = [cands[i] for cands, i in zip(candidates, picks)]
        truncated = [False] * len(records)
        judged = {m: [task.judge_choice_index(i, r, g) for i, r, g in zip(picks, records, golds)]
                  for m in MATCHING_MODES}
    elif use_sc:
        outputs, truncated, judged = _self_consistent(model, task, prompts, prepared, cfg, window, progress, prefix)
    else:
        outputs, truncated = _generate_outputs(model, prompts, cfg, window, desc=task.name,
                                               store=progress.batches(task.name, f"{prefix}generate"))
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
    protocol = protocols.describe(cfg.num_fewshot, cfg.fewshot_seeds, cfg.self_consistency, cfg.temperature,
                                  "loglik" if use_loglik else "generate", use_sc)
    return TaskResult(task, prepared.data_file, "loglik" if use_loglik else "generate", examples,
                      metrics[cfg.matching], time.perf_counter() - started, metrics, protocol)


def _over_seeds(runs: Sequence[TaskResult], matching: str) -> TaskResult:
    """One result from the few-shot runs of each seed: mean metrics, their std, the first seed's examples."""
    means, stds = {}, {}
    for m in runs[0].metrics_by_matching:
        keys = runs[0].metrics_by_matching[m]
        values = {k: np.array([r.metrics_by_matching[m][k] for r in runs]) for k in keys}
        means[m] = {k: float(v.mean()) for k, v in values.items()}
        stds[m] = {k: float(v.std()) for k, v in values.items()}
    first = runs[0]
    return dataclasses.replace(first, metrics=means[matching], metrics_by_matching=means, std_by_matching=stds,
                               per_seed=tuple(r.metrics_by_matching for r in runs),
                               seconds=sum(r.seconds for r in runs))


def evaluate(model, cfg: EvalConfig, prepared: Sequence[_Prepared] | None = None,
             progress: Progress = NOWHERE) -> list[TaskResult]:
    """Run every task of `cfg` on `model`; results in task order. `prepared`: the output of
    `load_tasks(cfg)` when the caller already validated the records (read again otherwise). `progress`:
    where each finished batch is kept and found again by a rerun (eval/resume.py; default: nowhere)."""
    prepared = load_tasks(cfg) if prepared is None else prepared
    results = []
    for p in prepared:
        if cfg.num_fewshot:
            result = _over_seeds([run_task(model, p, cfg, shot_seed=k, progress=progress)
                                  for k in range(cfg.fewshot_seeds)], cfg.matching)
        else:
            result = run_task(model, p, cfg, progress=progress)
        log.info("%s: %s", p.task.name, {k: round(v, 4) for k, v in result.metrics.items()})
        results.append(result)
    return results
