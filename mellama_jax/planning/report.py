"""Planner output: a header naming what was planned, JSON records, and the README's markdown table."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Optional, Sequence

from mellama_jax.planning.compiled import CompileReport
from mellama_jax.planning.topology import TpuTopology


def header(config, topology: TpuTopology) -> str:
    m = config.model
    return (f"plan: {topology.name} ({topology.num_chips} chips {topology.libtpu_name}"
            f"{f' x {topology.num_slices} slices' if topology.num_slices > 1 else ''}, "
            f"{topology.chip.hbm_bytes / 1024 ** 3:.0f} GiB HBM/chip); model hidden={m.hidden_size} "
            f"layers={m.num_layers} heads={m.num_heads}/{m.num_kv_heads} dtype={m.dtype} attention={m.attention}; "
            f"global batch {config.train.global_batch_size} x {config.train.seq_len} tokens; "
            f"mesh data={config.mesh.data} fsdp={config.mesh.fsdp} tensor={config.mesh.tensor}")


def write_json(path: str, config, topology: TpuTopology, reports: Sequence[CompileReport],
               best: Optional[CompileReport]) -> None:
    record = {"topology": topology.name, "libtpu_topology": topology.libtpu_name, "chips": topology.num_chips,
              "num_slices": topology.num_slices, "config": config.to_dict(),
              "reports": [r.to_dict() for r in reports], "chosen": best.to_dict() if best else None}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".plan-", suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=2, default=str)
    os.replace(tmp, path)
