"""Checkpoint save/restore throughput of the bench model's training state: local disk vs a GCS server.

    python bench/checkpoint_io.py [--rounds 2]

The state is what a training checkpoint holds for full-parameter training of config.preset("bench_56m"):
float32 params + AdamW mu and nu (3 x params), saved and restored through `checkpoints.manager.Checkpointer`
(orbax, OCDBT through tensorstore). "gcs" is gcp-storage-emulator on localhost (tests/gcs_server.py: a
single-threaded pure-Python server), so its figure measures the client path and that server, not Cloud
Storage; it shows the gs:// path works end to end at this size and what it costs relative to local disk.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from gcs_server import GcsServer  # noqa: E402

from mellama_jax.checkpoints.manager import Checkpointer  # noqa: E402
from mellama_jax.config import preset  # noqa: E402
from mellama_jax.model import params as P  # noqa: E402
from mellama_jax.train.config import CheckpointConfig  # noqa: E402
from mellama_jax.train.state import TrainState  # noqa: E402


class _Source:  # the data position a checkpoint also holds (here: a constant)
    def save_args(self):
        import orbax.checkpoint as ocp
        return ocp.args.JsonSave({"index": 0})

    def restore_args(self):
        import orbax.checkpoint as ocp
        return ocp.args.JsonRestore()

    def restored(self, value):
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    cfg = preset("bench_56m")
    params = P.init_params(cfg, jax.random.key(0), dtype="float32")
    zeros = jax.tree.map(lambda x: x * 0, params)
    state = TrainState(step=jax.numpy.asarray(1, jax.numpy.int32), params=params,
                       opt_state={"mu": zeros, "nu": jax.tree.map(lambda x: x + 1, zeros)}, frozen=None)
    nbytes = sum(int(x.nbytes) for x in jax.tree.leaves(state.to_checkpoint()))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    server = GcsServer().start()
    local_root = tempfile.mkdtemp(prefix="ckpt-bench-")
    try:
        for where in ("local", "gcs"):
            for r in range(args.rounds):
                workdir = os.path.join(local_root, f"r{r}") if where == "local" else server.fresh_prefix("bench")
                ckpt = Checkpointer(workdir, CheckpointConfig(every_steps=1, keep=1, async_save=False))
                t0 = time.perf_counter()
                ckpt.save(1, state, _Source(), {"bench": True})
                ckpt.wait()
                t1 = time.perf_counter()
                restored, _ = ckpt.restore(1, abstract, _Source())
                jax.block_until_ready(restored.params)
                t2 = time.perf_counter()
                ckpt.close()
                ok = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(params)))
                print(f"{where:5s} round {r}: {nbytes / 1e6:.0f} MB  save {nbytes / 1e6 / (t1 - t0):7.1f} MB/s "
                      f"({t1 - t0:.2f} s)  restore {nbytes / 1e6 / (t2 - t1):7.1f} MB/s ({t2 - t1:.2f} s)  "
                      f"equal={ok}", flush=True)
    finally:
        server.stop()
        shutil.rmtree(local_root, ignore_errors=True)


if __name__ == "__main__":
    main()
