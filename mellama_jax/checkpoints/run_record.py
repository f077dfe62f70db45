"""What an exported model checkpoint records about the training run it came from (training_run.json).

`training_run` summarises a workdir (config, step, metrics.jsonl) when it is exported, so the model card
(convert/model_card.py) can be written later from the checkpoint alone.
"""
from __future__ import annotations

import json
import os
from typing import Any

from mellama_jax import paths as path_layer
from mellama_jax.data.config import InstructConfig

TRAINING_RUN = "training_run.json"  # in a model checkpoint exported from a training workdir
METRICS_FILE = "metrics.jsonl"  # in a training workdir (train/metrics.py)


def summarize_metrics(path: str, step: int | None = None) -> dict[str, Any]:
    """The last "train", "data" and "eval" rows of metrics.jsonl at or before `step`, and the first "train"
    row (for the loss at the start). A rerun after a resume appends; later rows win."""
    out: dict[str, Any] = {}
    if not path_layer.resolve(path).is_file():
        return out
    with path_layer.open_file(path, "r") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            if step is not None and row.get("step", 0) > step:
                continue
            kind = row.get("kind")
            if kind == "train" and "first_train" not in out:
                out["first_train"] = row
            if kind in ("train", "data", "eval"):
                out[kind] = row
    return out


def training_run(workdir: str, step: int, run_config: dict) -> dict[str, Any]:
    """What the card needs from a training workdir (stored as training_run.json in exported checkpoints)."""
    return {"workdir": path_layer.as_str(workdir), "step": int(step), "config": run_config,
            "metrics": summarize_metrics(os.path.join(workdir, METRICS_FILE), step)}


def run_of(extras: dict) -> dict | None:
    """The training run behind `checkpoints.rundir.load_checkpoint`'s extras (a workdir or an exported checkpoint)."""
    if extras.get("training_run"):
        return extras["training_run"]
    if extras.get("run_config") is not None and extras.get("step") is not None:
        return training_run(extras["path"], extras["step"], extras["run_config"])
    return None


def chat_template_name(run: dict | None) -> str | None:
    """The SFT template the run trained with (data.kind == "sft"), else None."""
    data = (run or {}).get("config", {}).get("data") or {}
    if data.get("kind") != "sft":
        return None
    return ((data.get("mixture") or {}).get("instruct") or {}).get("template") or InstructConfig.template
