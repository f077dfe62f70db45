"""mellama-train --config configs/<file>.py --workdir DIR [--config.key=value ...] [--dry_run]

Train (pretraining, instruction tuning, LoRA) as a config file and its `--config.x=y` overrides say.

Rerunning the same command with the same workdir resumes from the latest complete checkpoint. Ctrl-C saves the
step in progress and exits with status 130; SIGTERM (a preemption notice) saves it within
checkpoint.preemption_deadline_s and exits with status 75 (EX_TEMPFAIL), on which the launchers rerun. --dry_run
checks the command (config, overrides, workdir, mesh, batch split, step lowered) and prints the run it would start.
Multi-process runs (launch/local.py, SLURM, Cloud TPU) add --coordinator/--num_processes/--process_id
where the cluster is not detected automatically.
"""
from __future__ import annotations

import logging
import sys

from absl import flags
from ml_collections import config_flags

from mellama_jax import cli
from mellama_jax.parallel import initialize_distributed
from mellama_jax.train.config import TrainConfig
from mellama_jax.train.dry_run import dry_run
from mellama_jax.train.init_from import adopt_init_from, command_line_keys
from mellama_jax.train.loop import TrainingError, train
from mellama_jax.train.stopping import EXIT_PREEMPTED

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and TensorBoard.")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0 (explicit multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator).")
_LOCAL_DEVICES = flags.DEFINE_integer("local_device_count", None,
                                      "CPU only: number of (fake) CPU devices of this process.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Check the command and print the run it would start (mesh, batch "
                              "split, remat, model), then exit without training or writing anything.")
flags.DEFINE_bool("debug", False, "Show tracebacks of errors.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv=None) -> int:
    return cli.run(_main, argv, absl_flags=True, user_errors=(TrainingError,),
                   on_interrupt="rerun the same command to resume from the last checkpoint")


def _main(argv) -> int:
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {argv[1:]}")
    # force: absl already put its handler on the root logger, which would drop our INFO lines. Third-party
    # libraries stay at WARNING (JAX logs at INFO that it found no TPU on every CPU run).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("mellama_jax").setLevel(logging.INFO)
    cli.quiet_third_party_logs()
    initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _LOCAL_DEVICES.value)

    # init_from decides the architecture and tokenizer unless --config.model.* / --config.data.tokenizer say otherwise.
    config = adopt_init_from(_CONFIG.value, explicit=command_line_keys(flags.FLAGS["config"]))
    cfg = TrainConfig.from_config_dict(config)
    if _DRY_RUN.value:
        for line in dry_run(cfg, _WORKDIR.value):
            print(f"dry run: {line}")
        return 0
    result = train(cfg, _WORKDIR.value)
    if result.preempted:  # a status launchers tell from a failure: rerun the same command to resume
        print(f"preempted at step {result.step}; rerun the same command to resume (exit status {EXIT_PREEMPTED})")
        return EXIT_PREEMPTED
    print(f"finished at step {result.step}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
