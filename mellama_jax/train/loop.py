"""The training loop: set up mesh, state, compiled step, data and checkpoints; train; evaluate; resume.

`train(cfg, workdir)` is what `python -m mellama_jax.train` runs. Rerunning it with the same workdir
resumes from the latest complete checkpoint (params, optimizer state, step and data position), so a
preempted or killed run continues exactly where its last checkpoint left it.

Host/device overlap: metrics of step n are fetched after step n+1 has been dispatched, so the host checks
the loss (NaN stops the run naming the step) without stalling the device. Checkpoint, evaluation and
preemption steps check their own loss first: a non-finite state is never saved.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Callable, Optional

import jax

from mellama_jax import parallel, paths
from mellama_jax.checkpoints import fileio, model_dir
from mellama_jax.checkpoints.manager import Checkpointer
from mellama_jax.config import ConfigError
from mellama_jax.convert import hf
from mellama_jax.data import sharded, synthetic
from mellama_jax.data.packing import BATCH_KEYS
from mellama_jax.model import params as P
from mellama_jax.train import batches as B
from mellama_jax.train.config import TrainConfig
from mellama_jax.train.init_from import check_init_from
from mellama_jax.train.lora import LoraTrainable
from mellama_jax.train.metrics import MetricsWriter
from mellama_jax.train.optimizer import make_optimizer
from mellama_jax.train.peak import system_peak
from mellama_jax.train.state import FullParams, StateLayout, Trainable, TrainState, init_state, state_layout
from mellama_jax.train.step import compile_eval_step, compile_train_step
from mellama_jax.train.stopping import INTERRUPT, PREEMPT, StopSignals
from mellama_jax.train.task_eval import TaskEvaluator

log = logging.getLogger(__name__)

class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); the message names the step and last checkpoint."""


@dataclasses.dataclass
class Engine:
    """Everything compiled and laid out for one config on one mesh (reusable by tests and benchmarks)."""
    cfg: TrainConfig
    mesh: Any
    trainable: Trainable
    tx: Any
    schedule: Any
    layout: StateLayout
    train_step: Any  # compiled (state, batch) -> (state, metrics); donates the state
    rows: tuple[int, int]  # this process's rows of the global batch


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    step: int
    train_metrics: dict
    eval_metrics: dict
    preempted: bool = False
    engine: Optional[Engine] = None  # reusable by a later train() call with the same config
    task_results: list = dataclasses.field(default_factory=list)  # latest in-loop benchmark results (eval.tasks)


def check_batch_divisibility(cfg: TrainConfig, mesh) -> None:
    dp = parallel.data_parallel_size(mesh)
    t = cfg.train
    if t.global_batch_size % dp:
        raise ConfigError(f"train.global_batch_size={t.global_batch_size} is not divisible by the data-parallel "
                          f"size {dp} (mesh {dict(mesh.shape)}: data x fsdp)")
    if t.micro_batch_size % dp:
        raise ConfigError(f"train.global_batch_size / train.micro_batches = {t.micro_batch_size} rows per "
                          f"micro-batch is not divisible by the data-parallel size {dp}")
    eval_bs = cfg.eval.batch_size or t.global_batch_size
    if cfg.eval.every_steps and eval_bs % dp:
        raise ConfigError(f"eval.batch_size={eval_bs} is not divisible by the data-parallel size {dp}")


def make_trainable(cfg: TrainConfig) -> Trainable:
    if cfg.train.lora is not None:
        return LoraTrainable.from_train_config(cfg)
    return FullParams(cfg.model)


def build_engine(cfg: TrainConfig, *, trainable: Optional[Trainable] = None, devices=None) -> Engine:
    with parallel.axis_rules(cfg.mesh.rules):
        return _build_engine(cfg, trainable=trainable, devices=devices)


def _build_engine(cfg: TrainConfig, *, trainable: Optional[Trainable], devices) -> Engine:
    mesh = parallel.make_mesh(cfg.mesh, devices)
    check_batch_divisibility(cfg, mesh)
    trainable = trainable or make_trainable(cfg)
    tx, schedule = make_optimizer(cfg.optim, cfg.train.steps, trainable.abstract_trainable())
    layout = state_layout(trainable, tx, mesh)
    step = compile_train_step(trainable, tx, schedule, layout, mesh, global_batch_size=cfg.train.global_batch_size,
                              seq_len=cfg.train.seq_len, micro_batches=cfg.train.micro_batches)
    return Engine(cfg, mesh, trainable, tx, schedule, layout, step, B.process_rows(mesh, cfg.train.global_batch_size))


def make_source(cfg: TrainConfig, engine: Engine):
    t = cfg.train
    if cfg.data.kind == "synthetic":
        return synthetic.SyntheticSource(cfg.data.synthetic, vocab_size=cfg.model.vocab_size, seq_len=t.seq_len,
                                 global_batch_size=t.global_batch_size, rows=engine.rows)
    if cfg.data.kind == "sft":
        return sharded.sft_source(cfg.data, seq_len=t.seq_len, global_batch_size=t.global_batch_size, seed=t.seed,
                                  rows=engine.rows, processes=jax.process_count())
    return sharded.mixture_source(cfg.data, seq_len=t.seq_len, global_batch_size=t.global_batch_size, seed=t.seed,
                                  rows=engine.rows, processes=jax.process_count())


def make_heldout(cfg: TrainConfig, engine: Engine) -> dict[str, list[dict]]:
    bs = cfg.eval.batch_size or cfg.train.global_batch_size
    process = (jax.process_index(), jax.process_count())
    if cfg.data.kind == "synthetic":
        return synthetic.synthetic_heldout(cfg.data.synthetic, vocab_size=cfg.model.vocab_size, seq_len=cfg.train.seq_len,
                                   batch_size=bs, batches=cfg.eval.batches,
                                   rows=B.process_rows(engine.mesh, bs))
    if cfg.data.kind == "sft":
        return sharded.sft_heldout(cfg.data, seq_len=cfg.train.seq_len, batch_size=bs, batches=cfg.eval.batches,
                                   process=process)
    return sharded.mixture_heldout(cfg.data, seq_len=cfg.train.seq_len, batch_size=bs, batches=cfg.eval.batches,
                                   process=process)


def initial_params(cfg: TrainConfig, engine: Engine, workdir: str):
    """Parameters of `init_from` (a model checkpoint or an HF directory, params only) on the mesh, or None."""
    if not cfg.init_from or cfg.train.lora is not None:  # LoRA trainables load their frozen base themselves
        return None
    shardings = engine.layout.shardings.params  # the architecture was checked at the start (check_init_from)
    if model_dir.is_model_checkpoint(cfg.init_from):
        _, params, extras = model_dir.load_model_checkpoint(cfg.init_from, shardings=shardings, dtype="float32",
                                                           scan_layers=cfg.model.scan_layers)
        tokenizer_dir = extras.get("tokenizer_dir")
    else:  # an HF directory, read on the host tensor by tensor (gs://: downloaded first)
        with paths.local_copy(cfg.init_from) as local:
            _, params = hf.load_hf_params(local, dtype="float32", scan_layers=cfg.model.scan_layers)
        params = jax.device_put(params, shardings)
        tokenizer_dir = cfg.init_from if fileio.has_tokenizer(cfg.init_from) else None
    if tokenizer_dir and jax.process_index() == 0:
        fileio.copy_tokenizer_files(tokenizer_dir, paths.join(workdir, model_dir.TOKENIZER_DIR))
    return params


def copy_init_tokenizer(cfg: TrainConfig, workdir: str) -> None:
    """Carry the tokenizer of init_from (a model checkpoint's tokenizer/ or an HF directory) into the workdir."""
    if not cfg.init_from or jax.process_index() != 0:
        return
    for candidate in (paths.join(cfg.init_from, model_dir.TOKENIZER_DIR), cfg.init_from):
        if paths.resolve(candidate).is_dir() and fileio.has_tokenizer(candidate):
            fileio.copy_tokenizer_files(candidate, paths.join(workdir, model_dir.TOKENIZER_DIR))
            return


def evaluate(eval_step, state: TrainState, heldout: dict[str, list[dict]], mesh, batch_size: int) -> dict:
    """Loss and perplexity per mixture component (token-weighted over its held-out batches)."""
    out, total_loss, total_count = {}, 0.0, 0.0
    for name, batches in heldout.items():
        loss_sum = count = 0.0
        for local in batches:
            s, c = eval_step(state.params, state.frozen, B.global_batch(local, mesh, batch_size, keys=BATCH_KEYS))
            loss_sum, count = loss_sum + float(s), count + float(c)
        loss = loss_sum / max(count, 1.0)
        out[f"{name}/loss"], out[f"{name}/perplexity"] = loss, math.exp(min(loss, 80.0))
        total_loss, total_count = total_loss + loss_sum, total_count + count
    out["all/loss"] = total_loss / max(total_count, 1.0)
    out["all/perplexity"] = math.exp(min(out["all/loss"], 80.0))
    return out


def check_workdir(workdir: str) -> None:
    """A workdir must be a directory or a path that can become one (its nearest existing ancestor a directory).
    Object storage has no such thing as a file in the way of a prefix."""
    if paths.is_remote(workdir):
        return
    existing = workdir
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"workdir {workdir}: {existing} is a file; expected a (new or existing) directory")


@dataclasses.dataclass
class Hook:
    """Work done after step n when due: every `every` steps (0: not on a schedule) and at the last step.
    The loop runs due hooks in order, after checking the step's loss (a non-finite state is never saved)."""
    name: str
    every: int
    run: Callable[[int, TrainState], None]

    def due(self, n: int, last: int) -> bool:
        return bool(self.every and n % self.every == 0) or n == last


class LossMonitor:
    """Metrics of step n are fetched after step n+1 is dispatched (no device stall); a non-finite loss stops the
    run naming the step and the last good checkpoint; log steps write train/data metrics and the progress bar."""

    def __init__(self, cfg: TrainConfig, writer: MetricsWriter, source, ckpt: Checkpointer, start: int):
        self.cfg, self.writer, self.source, self.ckpt = cfg, writer, source, ckpt
        self.pending: list[tuple[int, dict]] = []
        self.last: dict = {}
        self.timer = (time.perf_counter(), start)
        self.peak, peak_how = system_peak(cfg.log.peak_flops_per_device)
        self.peak_how = peak_how
        self.flops_per_token = P.flops_per_token(cfg.model, cfg.train.seq_len)
        self.tokens_per_step = cfg.train.global_batch_size * cfg.train.seq_len

    def dispatched(self, n: int, metrics: dict) -> None:
        self.pending.append((n, metrics))
        self.check(n - 1)

    def check(self, upto: int) -> None:
        while self.pending and self.pending[0][0] <= upto:
            n, metrics = self.pending.pop(0)
            fetched = dict(jax.device_get(metrics))
            domain_loss, domain_tokens = fetched.pop("domain_loss_sum"), fetched.pop("domain_tokens")
            values = {k: float(v) for k, v in fetched.items()}
            # Training loss per mixture component (its rows' tokens only), next to the held-out one.
            for i, name in enumerate(self.source.domain_names[:len(domain_tokens)]):
                if domain_tokens[i] > 0:
                    values[f"loss/{name}"] = float(domain_loss[i] / domain_tokens[i])
            if not math.isfinite(values["loss"]):
                self._stop(n, values["loss"])
            if n % self.cfg.log.every_steps == 0 or n == self.cfg.train.steps:
                self._log(n, values)

    def _stop(self, n: int, loss: float) -> None:
        self.ckpt.wait()
        good = self.ckpt.latest_step()
        self.writer.close()
        raise TrainingError(f"loss is {loss} at step {n}; stopping. The last good checkpoint is "
                            f"{'step ' + str(good) + ' in ' + self.ckpt.directory if good is not None else 'none'}"
                            f" (lower optim.learning_rate or check the data)")

    def _log(self, n: int, values: dict) -> None:
        now = time.perf_counter()
        dt = now - self.timer[0]
        tps = self.tokens_per_step * (n - self.timer[1]) / dt if dt > 0 else 0.0
        values.update(tokens_per_sec=tps, step_time_s=dt / max(n - self.timer[1], 1),
                      mfu=self.flops_per_token * tps / self.peak if self.peak else 0.0)
        self.writer.write(n, "train", values)
        data_stats = self.source.stats()
        if data_stats:  # achieved token share per mixture component, padding, skipped records
            self.writer.write(n, "data", {k.removeprefix("data/"): v for k, v in data_stats.items()})
        self.writer.progress(n, {"loss": values["loss"], "tok/s": tps})
        self.timer = (now, n)
        self.last = values


@dataclasses.dataclass
class Run:
    """One call of train(): what the hooks share."""
    cfg: TrainConfig
    workdir: str
    engine: Engine
    source: Any
    ckpt: Checkpointer
    writer: MetricsWriter
    monitor: LossMonitor
    stop: StopSignals
    tasks: Optional[TaskEvaluator]
    hooks: list[Hook] = dataclasses.field(default_factory=list)
    last_eval: dict = dataclasses.field(default_factory=dict)
    primary: bool = True
    failed_saves: int = 0  # saves failed in a row (checkpoint.max_failed_saves stops the run)

    # ---- hooks
    def save(self, n: int, state: TrainState) -> None:
        if not self.stop.reason:
            self._periodic_save(n, state)
        elif self.stop.save_fits():  # stopping: this save must be on disk before the process exits
            self.stop.timed_save(lambda: (self.ckpt.save(n, state, self.source, self.cfg.to_dict()), self.ckpt.wait()))
        else:
            self.ckpt.wait()  # finish the save in flight; a new one would end after the preemption deadline
            log.warning("preemption notice: step %d not saved (a save would end after checkpoint."
                        "preemption_deadline_s=%s); the last checkpoint is step %s", n, self.stop.deadline_s,
                        self.ckpt.latest_step())
        self.writer.sync()  # on object storage: metrics up to this checkpoint are stored with it

    def _periodic_save(self, n: int, state: TrainState) -> None:
        """A failed save (storage still failing after its clients' retries) costs the steps until the next one,
        not the run: reported, and the next save is tried, unless max_failed_saves fail in a row."""
        try:
            self.ckpt.save(n, state, self.source, self.cfg.to_dict())
        except Exception as e:  # noqa: BLE001 - storage errors of every client (OSError, tensorstore, gcsfs)
            self.failed_saves += 1
            limit = self.cfg.checkpoint.max_failed_saves
            if self.failed_saves >= limit:
                last = self.ckpt.latest_step()
                raise TrainingError(f"checkpoint save of step {n} failed, {self.failed_saves} saves in a row "
                                    f"(checkpoint.max_failed_saves={limit}); stopping. "
                                    + ("No checkpoint was saved" if last is None else f"The last checkpoint is step {last}")
                                    + f". Last error: {type(e).__name__}: {e}") from e
            log.error("CHECKPOINT SAVE FAILED: step %d (%d of checkpoint.max_failed_saves=%d in a row); training "
                      "goes on, the next save is tried: %s: %s", n, self.failed_saves, limit, type(e).__name__, e)
        else:
            self.failed_saves = 0

    def heldout_eval(self, eval_step, heldout, batch_size: int):
        def run(n: int, state: TrainState) -> None:
            self.last_eval = evaluate(eval_step, state, heldout, self.engine.mesh, batch_size)
            self.writer.write(n, "eval", self.last_eval)
        return run

    def task_eval(self, n: int, state: TrainState) -> None:
        task_metrics = self.tasks.run(state, self.engine.trainable, self.engine.mesh)
        self.writer.write(n, "tasks", task_metrics)
        self.last_eval = {**self.last_eval, **{f"tasks/{k}": v for k, v in task_metrics.items()}}
        if self.primary:
            log.info("step %d: benchmark tasks evaluated in %.1f s", n, task_metrics["seconds"])

    # ---- the step loop
    def steps(self, state: TrainState, start: int) -> TrainState:
        """Train from `start` to the last step (or a stop request), running the hooks that are due."""
        t, mesh = self.cfg.train, self.engine.mesh
        for step in range(start, t.steps):
            state, metrics = self.engine.train_step(state, B.global_batch(next(self.source), mesh, t.global_batch_size))
            n = step + 1
            self.monitor.dispatched(n, metrics)
            stopping = self.stop.requested(n) is not None
            due = [h for h in self.hooks if h.due(n, t.steps) or (stopping and h.name == "checkpoint")]
            if due:
                self.monitor.check(n)  # a non-finite state is never saved or evaluated
            for hook in due:
                hook.run(n, state)
            if stopping:
                log.warning("%s: saved step %d, exiting", "Ctrl-C" if self.stop.reason == INTERRUPT
                            else "preemption notice", self.ckpt.latest_step() or 0)
                break
        self.monitor.check(t.steps)
        return state


def train(cfg: TrainConfig, workdir: str, *, trainable: Optional[Trainable] = None, source=None,
          engine: Optional[Engine] = None) -> TrainResult:
    """Train (or resume) to cfg.train.steps, logging and checkpointing into `workdir`. Ctrl-C saves the step in
    progress and raises KeyboardInterrupt; a preemption notice saves it and returns with `preempted` set."""
    with parallel.axis_rules(cfg.mesh.rules):  # the run's logical-axis rules for every sharding below
        return _train(cfg, workdir, trainable=trainable, source=source, engine=engine)


def _train(cfg: TrainConfig, workdir: str, *, trainable: Optional[Trainable], source, engine: Optional[Engine]):
    workdir = paths.as_str(workdir, what="workdir")  # a local directory or gs://bucket/...
    # Benchmark tasks: their records are read and validated first, before anything is compiled or written.
    tasks = TaskEvaluator(cfg) if cfg.eval.tasks else None
    check_workdir(workdir)  # before minutes of compiling
    check_init_from(cfg.init_from, cfg.model)
    engine = engine or build_engine(cfg, trainable=trainable)
    source = B.checkpointed(source or make_source(cfg, engine))
    ckpt = Checkpointer(workdir, cfg.checkpoint)
    state = _initial_state(cfg, engine, workdir, ckpt, source)
    start = int(jax.device_get(state.step))
    primary = jax.process_index() == 0
    writer = MetricsWriter(workdir, total_steps=cfg.train.steps, initial_step=start, enabled=primary,
                           tensorboard=cfg.log.tensorboard, progress_bar=cfg.log.progress_bar)
    run = Run(cfg, workdir, engine, source, ckpt, writer, LossMonitor(cfg, writer, source, ckpt, start),
              StopSignals(ckpt.manager, cfg.checkpoint.preemption_deadline_s), tasks, primary=primary)
    run.hooks = _hooks(run)
    if primary:
        trained = sum(int(x.size) for x in jax.tree.leaves(engine.layout.abstract.params))
        log.info("training %s of %s params on mesh %s from step %d to %d; peak %.3g FLOP/s (%s)",
                 f"{trained:,}", f"{P.count_params(cfg.model):,}", dict(engine.mesh.shape), start, cfg.train.steps,
                 run.monitor.peak, run.monitor.peak_how)
    run_started = time.perf_counter()
    try:
        state = run.steps(state, start)
        _log_task_cost(tasks, primary, time.perf_counter() - run_started)
        final = int(jax.device_get(state.step))
        if final == cfg.train.steps and ckpt.latest_step() != final:  # e.g. resumed at the last step
            ckpt.save(final, state, source, cfg.to_dict())
    finally:
        # The signal handlers stay until the last saves are durable: a notice (SIGTERM) while they finish is a
        # stop request like any other (exit 75, the launcher's rerun finds the run complete), not a kill.
        try:
            ckpt.close()
            writer.close()
        finally:
            run.stop.close()
    if run.stop.reason == INTERRUPT:
        raise KeyboardInterrupt  # after the save: the command exits as interrupted (status 130)
    return TrainResult(state=state, step=int(jax.device_get(state.step)), train_metrics=run.monitor.last,
                       eval_metrics=run.last_eval, preempted=run.stop.reason == PREEMPT, engine=engine,
                       task_results=tasks.last_results if tasks is not None else [])


def _initial_state(cfg: TrainConfig, engine: Engine, workdir: str, ckpt: Checkpointer, source) -> TrainState:
    """The latest checkpoint's state, or a fresh one (from init_from's params, if any)."""
    # The frozen part (the LoRA base) is not in checkpoints: load it from its reference, fresh run or resume.
    frozen = engine.trainable.load_frozen(engine.layout.shardings.frozen)
    if frozen is not None:
        copy_init_tokenizer(cfg, workdir)
    resumed = ckpt.restore_latest(engine.layout.abstract, source)
    if resumed is not None:
        state, _, latest = resumed
        log.info("resumed from %s/%d", ckpt.directory, latest)
        return state.replace(frozen=frozen)
    return init_state(engine.trainable, engine.tx, engine.layout, jax.random.key(cfg.train.seed),
                      params=initial_params(cfg, engine, workdir), frozen=frozen)


def _hooks(run: Run) -> list[Hook]:
    """checkpoint, held-out eval, benchmark tasks — each at its interval and at the last step."""
    cfg, engine = run.cfg, run.engine
    hooks = [Hook("checkpoint", cfg.checkpoint.every_steps, run.save)]
    if cfg.eval.every_steps:
        eval_bs = cfg.eval.batch_size or cfg.train.global_batch_size
        eval_step = compile_eval_step(engine.trainable, engine.layout, engine.mesh, batch_size=eval_bs,
                                      seq_len=cfg.train.seq_len)
        hooks.append(Hook("eval", cfg.eval.every_steps, run.heldout_eval(eval_step, make_heldout(cfg, engine), eval_bs)))
    if run.tasks is not None:
        hooks.append(Hook("tasks", cfg.eval.task_every_steps, run.task_eval))
    return hooks


def _log_task_cost(tasks: Optional[TaskEvaluator], primary: bool, wall: float) -> None:
    if tasks is not None and tasks.runs and primary:
        log.info("in-loop task evaluation: %d runs, %.1f s in all (%.1f%% of this run's %.1f s)", tasks.runs,
                 tasks.total_seconds, 100 * tasks.total_seconds / max(wall, 1e-9), wall)
