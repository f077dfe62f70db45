"""Benchmark tasks evaluated inside the training loop (`eval.tasks`, `eval.task_every_steps`).

The model being trained is evaluated where it lives: the sharded training parameters (and, for a LoRA run,
the frozen base with the adapters applied) go straight to the jitted decode of mellama_jax.generate on the
training mesh — nothing is gathered to one host except the generated token ids. Records are read and
validated once, before the first step (a bad record fails the run at start-up, naming file:line), and the
same eval.runner code as `python -m mellama_jax.evaluate` scores them under both matchings (mibe and
strict). Every process runs the evaluation (the decode is one SPMD program); process 0 writes the metrics.

Metrics land in metrics.jsonl and TensorBoard as kind "tasks": `<task>/<matching>/<metric>` plus `seconds`,
the wall-clock cost of that evaluation; the loop logs each cost and their total at the end.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from mellama_jax.config import ConfigError, ModelConfig
from mellama_jax.data.tokenizer import Tokenizer
from mellama_jax.eval.records import RecordError
from mellama_jax.eval.runner import EvalConfig as TaskRunConfig
from mellama_jax.eval.runner import evaluate, load_tasks
from mellama_jax.generate import generate


@dataclasses.dataclass
class TrainingModel:
    """The model under training, seen through the interface eval.runner uses (tokenizer, config, generate)."""
    config: ModelConfig
    tokenizer: Any
    mesh: Any
    params: Any  # the full model parameters, or the frozen base of a LoRA run
    lora: Any = None  # LoraConfig of a LoRA run
    adapters: Any = None  # its trained "lora" tree

    def generate(self, prompt_ids, *, max_new_tokens: int, temperature: float, eos_id: int, seed: int = 0):
        return generate(self.config, self.params, prompt_ids, max_new_tokens=max_new_tokens,
                        temperature=temperature, seed=seed, eos_id=eos_id, mesh=self.mesh, lora=self.lora,
                        adapters=self.adapters)


def _tokenizer(path: str):
    return Tokenizer(os.path.join(path, "tokenizer.model") if os.path.isdir(path) else path)


class TaskEvaluator:
    """Prepared once per run, before anything is compiled; `run(...)` evaluates the current parameters."""

    def __init__(self, cfg):
        ev = cfg.eval
        if not ev.task_data_dir:
            raise ConfigError("eval.tasks is set but eval.task_data_dir is empty (the directory of the task records)")
        if not cfg.data.tokenizer:
            raise ConfigError("eval.tasks needs data.tokenizer (the sentencepiece tokenizer.model prompts are "
                              "encoded with)")
        self.run_cfg = TaskRunConfig(tasks=tuple(t.strip() for t in ev.tasks.split(",") if t.strip()),
                                     data_dir=ev.task_data_dir, limit=ev.task_limit or None,
                                     max_new_tokens=ev.task_max_new_tokens, progress=False)
        try:
            self.prepared = load_tasks(self.run_cfg)
        except (RecordError, FileNotFoundError, KeyError, ValueError) as e:
            raise ConfigError(f"eval.tasks={ev.tasks!r}, eval.task_data_dir={ev.task_data_dir!r}: "
                              f"{e.args[0] if isinstance(e, KeyError) else e}") from e
        self.tokenizer = _tokenizer(cfg.data.tokenizer)
        self.model_cfg = cfg.model
        self.total_seconds = 0.0
        self.runs = 0
        self.last_results: list = []  # eval.runner TaskResults of the latest run (outputs per example)

    def run(self, state, trainable, mesh) -> dict[str, float]:
        started = time.perf_counter()
        variables = trainable.variables(state.params, state.frozen)
        model = TrainingModel(self.model_cfg, self.tokenizer, mesh, variables["params"],
                              lora=getattr(trainable, "lora", None) if "lora" in variables else None,
                              adapters=variables.get("lora"))
        out = {}
        self.last_results = evaluate(model, self.run_cfg, self.prepared)
        for result in self.last_results:
            for matching, metrics in result.metrics_by_matching.items():
                for name, value in metrics.items():
                    if "[" not in name:  # HoC's per-label F1s stay in the offline report
                        out[f"{result.task.name}/{matching}/{name}"] = float(value)
        seconds = time.perf_counter() - started
        self.total_seconds += seconds
        self.runs += 1
        out["seconds"] = seconds
        return out
