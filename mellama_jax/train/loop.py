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
from typing import Any, Optional

import jax

from mellama_jax import parallel, paths
from mellama_jax.checkpoints import fileio, model_dir
from mellama_jax.checkpoints.manager import Checkpointer
from mellama_jax.config import ConfigError
from mellama_jax.convert import hf
from mellama_jax.model import params as P
from mellama_jax.train import batches as B
from mellama_jax.train.config import TrainConfig
from mellama_jax.train.init_from import check_init_from
from mellama_jax.train.lora import LoraTrainable
from mellama_jax.train.metrics import MetricsWriter
from mellama_jax.train.optimizer import make_optimizer
from mellama_jax.train.peak import system_peak
from mellama_jax.train.preemption import PreemptionWatch
from mellama_jax.train.state import FullParams, StateLayout, Trainable, TrainState, init_state, state_layout
from mellama_jax.train.step import BATCH_KEYS, compile_eval_step, compile_train_step
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
        return B.SyntheticSource(cfg.data.synthetic, vocab_size=cfg.model.vocab_size, seq_len=t.seq_len,
                                 global_batch_size=t.global_batch_size, rows=engine.rows)
    if cfg.data.kind == "sft":
        return B.sft_source(cfg.data, seq_len=t.seq_len, global_batch_size=t.global_batch_size, seed=t.seed,
                            rows=engine.rows)
    return B.mixture_source(cfg.data, seq_len=t.seq_len, global_batch_size=t.global_batch_size, seed=t.seed,
                            rows=engine.rows)


def make_heldout(cfg: TrainConfig, engine: Engine) -> dict[str, list[dict]]:
    bs = cfg.eval.batch_size or cfg.train.global_batch_size
    if cfg.data.kind == "synthetic":
        return B.synthetic_heldout(cfg.data.synthetic, vocab_size=cfg.model.vocab_size, seq_len=cfg.train.seq_len,
                                   batch_size=bs, batches=cfg.eval.batches,
                                   rows=B.process_rows(engine.mesh, bs))
    if cfg.data.kind == "sft":
        return B.sft_heldout(cfg.data, seq_len=cfg.train.seq_len, batch_size=bs, batches=cfg.eval.batches)
    return B.mixture_heldout(cfg.data, seq_len=cfg.train.seq_len, batch_size=bs, batches=cfg.eval.batches)


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


def train(cfg: TrainConfig, workdir: str, *, trainable: Optional[Trainable] = None, source=None,
          engine: Optional[Engine] = None) -> TrainResult:
    """Train (or resume) to cfg.train.steps, logging and checkpointing into `workdir`."""
    with parallel.axis_rules(cfg.mesh.rules):  # the run's logical-axis rules for every sharding below
        return _train(cfg, workdir, trainable=trainable, source=source, engine=engine)


def _train(cfg: TrainConfig, workdir: str, *, trainable: Optional[Trainable], source, engine: Optional[Engine]):  # noqa: C901, PLR0915 - split into hooks next
    workdir = paths.as_str(workdir, what="workdir")  # a local directory or gs://bucket/...
    # Benchmark tasks: their records are read and validated first, before anything is compiled or written.
    tasks = TaskEvaluator(cfg) if cfg.eval.tasks else None
    check_workdir(workdir)  # before minutes of compiling
    check_init_from(cfg.init_from, cfg.model)
    engine = engine or build_engine(cfg, trainable=trainable)
    mesh, t = engine.mesh, cfg.train
    source = source or make_source(cfg, engine)
    ckpt = Checkpointer(workdir, cfg.checkpoint)
    config_dict = cfg.to_dict()

    # The frozen part (the LoRA base) is not in checkpoints: load it from its reference, fresh run or resume.
    frozen = engine.trainable.load_frozen(engine.layout.shardings.frozen)
    if frozen is not None:
        copy_init_tokenizer(cfg, workdir)
    resumed = ckpt.restore_latest(engine.layout.abstract, source)
    if resumed is not None:
        state, _, latest = resumed
        state = state.replace(frozen=frozen)
        log.info("resumed from %s/%d", ckpt.directory, latest)
    else:
        state = init_state(engine.trainable, engine.tx, engine.layout, jax.random.key(t.seed),
                           params=initial_params(cfg, engine, workdir), frozen=frozen)
    start = int(jax.device_get(state.step))

    eval_step = heldout = None
    eval_bs = cfg.eval.batch_size or t.global_batch_size
    if cfg.eval.every_steps:
        eval_step = compile_eval_step(engine.trainable, engine.layout, mesh, batch_size=eval_bs, seq_len=t.seq_len)
        heldout = make_heldout(cfg, engine)

    primary = jax.process_index() == 0
    peak, peak_how = system_peak(cfg.log.peak_flops_per_device)
    flops_per_token = P.flops_per_token(cfg.model, t.seq_len)
    tokens_per_step = t.global_batch_size * t.seq_len
    writer = MetricsWriter(workdir, total_steps=t.steps, initial_step=start, enabled=primary,
                           tensorboard=cfg.log.tensorboard, progress_bar=cfg.log.progress_bar)
    if primary:
        trained = sum(int(x.size) for x in jax.tree.leaves(engine.layout.abstract.params))
        log.info("training %s of %s params on mesh %s from step %d to %d; peak %.3g FLOP/s (%s)",
                 f"{trained:,}", f"{P.count_params(cfg.model):,}", dict(mesh.shape), start, t.steps, peak, peak_how)
    watch = PreemptionWatch(ckpt.manager)

    pending: list[tuple[int, dict]] = []  # dispatched steps whose metrics are not checked yet
    last_train: dict = {}
    last_eval: dict = {}
    timer = (time.perf_counter(), start)
    run_started = timer[0]
    preempted = False

    def check(upto: int) -> None:
        """Fetch metrics of pending steps <= upto; stop on a non-finite loss; log on log steps."""
        nonlocal last_train, timer
        while pending and pending[0][0] <= upto:
            n, metrics = pending.pop(0)
            fetched = dict(jax.device_get(metrics))
            domain_loss, domain_tokens = fetched.pop("domain_loss_sum"), fetched.pop("domain_tokens")
            values = {k: float(v) for k, v in fetched.items()}
            # Training loss per mixture component (its rows' tokens only), next to the held-out one.
            for i, name in enumerate(getattr(source, "domain_names", ())[:len(domain_tokens)]):
                if domain_tokens[i] > 0:
                    values[f"loss/{name}"] = float(domain_loss[i] / domain_tokens[i])
            if not math.isfinite(values["loss"]):
                ckpt.wait()
                good = ckpt.latest_step()
                writer.close()
                raise TrainingError(f"loss is {values['loss']} at step {n}; stopping. The last good checkpoint is "
                                    f"{'step ' + str(good) + ' in ' + ckpt.directory if good is not None else 'none'}"
                                    f" (lower optim.learning_rate or check the data)")
            if n % cfg.log.every_steps == 0 or n == t.steps:
                now = time.perf_counter()
                dt = now - timer[0]
                tps = tokens_per_step * (n - timer[1]) / dt if dt > 0 else 0.0
                values.update(tokens_per_sec=tps, step_time_s=dt / max(n - timer[1], 1),
                              mfu=flops_per_token * tps / peak if peak else 0.0)
                writer.write(n, "train", values)
                data_stats = source.stats() if hasattr(source, "stats") else {}
                if data_stats:  # achieved token share per mixture component, padding, skipped records
                    writer.write(n, "data", {k.removeprefix("data/"): v for k, v in data_stats.items()})
                writer.progress(n, {"loss": values["loss"], "tok/s": tps})
                timer = (now, n)
                last_train = values

    try:
        for step in range(start, t.steps):
            batch = B.global_batch(next(source), mesh, t.global_batch_size)
            state, metrics = engine.train_step(state, batch)
            n = step + 1
            pending.append((n, metrics))
            check(n - 1)
            stop = watch.reached(n)
            save = ckpt.due(n) or n == t.steps or stop
            run_eval = eval_step is not None and (n % cfg.eval.every_steps == 0 or n == t.steps)
            every = cfg.eval.task_every_steps
            run_tasks = tasks is not None and ((every and n % every == 0) or n == t.steps)
            if save or run_eval or run_tasks:
                check(n)
            if save:
                ckpt.save(n, state, source, config_dict)
                writer.sync()  # on object storage: metrics up to this checkpoint are stored with it
            if run_eval:
                last_eval = evaluate(eval_step, state, heldout, mesh, eval_bs)
                writer.write(n, "eval", last_eval)
            if run_tasks:
                task_metrics = tasks.run(state, engine.trainable, mesh)
                writer.write(n, "tasks", task_metrics)
                last_eval = {**last_eval, **{f"tasks/{k}": v for k, v in task_metrics.items()}}
                if primary:
                    log.info("step %d: benchmark tasks evaluated in %.1f s", n, task_metrics["seconds"])
            if stop:
                log.warning("preemption signal: saved step %d, exiting", n)
                preempted = True
                break
        check(t.steps)
        if tasks is not None and tasks.runs and primary:
            wall = time.perf_counter() - run_started
            log.info("in-loop task evaluation: %d runs, %.1f s in all (%.1f%% of this run's %.1f s)", tasks.runs,
                     tasks.total_seconds, 100 * tasks.total_seconds / max(wall, 1e-9), wall)
        final = int(jax.device_get(state.step))
        if final == t.steps and ckpt.latest_step() != final:  # e.g. resumed at the last step
            ckpt.save(final, state, source, config_dict)
    finally:
        watch.close()
        ckpt.close()
        writer.close()
    return TrainResult(state=state, step=int(jax.device_get(state.step)), train_metrics=last_train,
                       eval_metrics=last_eval, preempted=preempted, engine=engine,
                       task_results=tasks.last_results if tasks is not None else [])
