"""`python -m mellama_jax.train ... --dry_run`: check a launch command on the machine it will run on.

Everything the run decides before its first step, without reading training data or writing anything: the
config with its `--config.…` overrides (already parsed against the locked schema by then), the workdir,
init_from's architecture, the data the config points at (data/inputs.py: prepared corpora finished and
holding their components, source globs matching files; task records readable), the mesh on this process's
devices, how the global batch splits into micro-batches and rows per data-parallel device, and the train
step traced and lowered on abstract inputs (shardings resolved, nothing allocated, not compiled). The
planner (`mellama-plan`) prints its launch flags with the same
vocabulary, so a plan and its launch compare line by line.
"""
from __future__ import annotations

from mellama_jax import parallel, paths
from mellama_jax.data.inputs import check_inputs
from mellama_jax.model import params as P
from mellama_jax.train import aot
from mellama_jax.train.config import TrainConfig
from mellama_jax.train.init_from import check_init_from
from mellama_jax.train.loop import check_workdir
from mellama_jax.train.task_eval import TaskEvaluator


def dry_run(cfg: TrainConfig, workdir: str) -> list[str]:
    """The lines describing the run `cfg` would start in `workdir`; raises what the run would raise first."""
    workdir = paths.as_str(workdir, what="workdir")
    check_workdir(workdir)
    check_init_from(cfg.init_from, cfg.model)
    data = check_inputs(cfg.data.mixture, cfg.data.kind) if cfg.data.kind != "synthetic" else []
    if cfg.eval.tasks:
        tasks = TaskEvaluator(cfg).prepared  # reads the task records from eval.task_data_dir
        data.append(f"eval tasks {', '.join(t.name for t in tasks)} from {cfg.eval.task_data_dir}")
    t, m = cfg.train, cfg.model
    with parallel.axis_rules(cfg.mesh.rules):
        mesh = parallel.make_mesh(cfg.mesh)
        jitted, args = aot.abstract_train_inputs(cfg, mesh)  # checks the batch splits over the mesh
        with parallel.activation_sharding(mesh):
            jitted.trace(*args).lower()
    dp = parallel.data_parallel_size(mesh)
    return [
        f"mesh {parallel.describe_mesh(mesh.shape)} on {mesh.devices.size} {mesh.devices.flat[0].platform} devices",
        f"batch {t.global_batch_size} x {t.seq_len} tokens: micro_batches={t.micro_batches} of "
        f"{t.micro_batch_size} rows, micro_batch={t.micro_batch_size // dp}/device over {dp} data-parallel devices",
        f"model hidden={m.hidden_size} layers={m.num_layers} heads={m.num_heads}/{m.num_kv_heads} "
        f"vocab={m.vocab_size} ({P.count_params(m):,} params) dtype={m.dtype} attention={m.attention} "
        f"remat={m.remat_policy}",
        *data,
        f"train step traced and lowered; nothing written to {workdir}",
    ]
