"""LoRA adapters <-> PEFT (`adapter_config.json` + `adapter_model.safetensors`).

PEFT computes  y = W x + (alpha / r) * B_peft (A_peft x)  with torch-Linear layouts
A_peft: [r, in], B_peft: [out, r]. Ours are A: [in..., r], B: [r, out...] (model/lora.py), so
A_peft = A.reshape(in, r).T and B_peft = B.reshape(r, out).T — a pure relayout, no arithmetic, so an
export/import round trip is bit-exact.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
from safetensors.numpy import load_file, save_file

from mellama_jax import paths
from mellama_jax.checkpoints.fileio import local_output_dir
from mellama_jax.config import ModelConfig
from mellama_jax.model import params as P
from mellama_jax.model.lora import LoraConfig, iter_lora

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def peft_tensor_name(base_hf_name: str, kind: str) -> str:
    """'model.layers.0.self_attn.q_proj.weight' -> 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'."""
    module = base_hf_name[: -len(".weight")]
    return f"base_model.model.{module}.lora_{kind.upper()}.weight"


def _iter_layer_leaves(cfg: ModelConfig, lora: LoraConfig, adapters: dict, scanned: bool | None):
    """(layer index, kind, LoraSpec, our per-layer array) for every adapter matrix."""
    scanned = cfg.scan_layers if scanned is None else scanned
    flat = P.flatten_tree(adapters)
    for path, _, _, kind, ls in iter_lora(cfg, lora, scanned=scanned):
        value = flat.get(path)
        if value is None:
            raise ValueError(f"adapters: missing {'/'.join(path)}")
        if scanned:
            for i in range(cfg.num_layers):
                yield i, kind, ls, np.asarray(value[i])
        else:
            yield int(path[0].split("_")[1]), kind, ls, np.asarray(value)


def to_peft_tensors(cfg: ModelConfig, lora: LoraConfig, adapters: dict, *, scanned: bool | None = None,
                    dtype=np.float32) -> dict[str, np.ndarray]:
    out = {}
    for i, kind, ls, value in _iter_layer_leaves(cfg, lora, adapters, scanned):
        if kind == "a":
            t = value.reshape(-1, lora.rank).T  # [r, in]
        else:
            t = value.reshape(lora.rank, -1).T  # [out, r]
        out[peft_tensor_name(ls.base.hf_name.format(layer=i), kind)] = np.ascontiguousarray(t.astype(dtype))
    return out


def peft_adapter_config(cfg: ModelConfig, lora: LoraConfig, base_model_name_or_path: str) -> dict:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": sorted(lora.targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def export_peft(out_dir: str, cfg: ModelConfig, lora: LoraConfig, adapters: dict, *,
                base_model_name_or_path: str = "", scanned: bool | None = None, overwrite: bool = False) -> str:
    """Write a PEFT adapter directory atomically (local: temp dir + rename; gs://: staged, uploaded, COMMIT
    marker last — checkpoints.fileio.local_output_dir)."""

    if paths.resolve(out_dir).exists() and not overwrite:
        raise FileExistsError(f"{paths.as_str(out_dir)} already exists (pass overwrite=True / --overwrite to replace it)")
    tensors = to_peft_tensors(cfg, lora, adapters, scanned=scanned)
    with local_output_dir(out_dir, overwrite=overwrite) as tmp:
        save_file(tensors, os.path.join(tmp, ADAPTER_WEIGHTS), metadata={"format": "pt"})
        with open(os.path.join(tmp, ADAPTER_CONFIG), "w") as f:
            json.dump(peft_adapter_config(cfg, lora, base_model_name_or_path), f, indent=2)
    return paths.as_str(out_dir)


def import_peft(adapter_dir: str, cfg: ModelConfig, *, scanned: bool | None = None) -> tuple[LoraConfig, dict]:
    """Read a PEFT LoRA adapter into (LoraConfig, our adapter tree); errors name the file and tensor."""

    cfg_path = os.path.join(adapter_dir, ADAPTER_CONFIG)
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: no PEFT adapter config")
    with open(cfg_path) as f:
        pc = json.load(f)
    if pc.get("peft_type") != "LORA":
        raise ValueError(f"{cfg_path}: peft_type is {pc.get('peft_type')!r}, expected 'LORA'")
    if pc.get("use_rslora") or pc.get("use_dora") or pc.get("rank_pattern") or pc.get("alpha_pattern"):
        raise ValueError(f"{cfg_path}: rsLoRA / DoRA / per-module rank or alpha patterns are not supported")
    targets = pc["target_modules"]
    targets = [targets] if isinstance(targets, str) else list(targets)
    lora = LoraConfig(rank=int(pc["r"]), alpha=float(pc["lora_alpha"]), dropout=float(pc.get("lora_dropout", 0.0)),
                      targets=tuple(t.split(".")[-1] for t in targets))
    weights_path = os.path.join(adapter_dir, ADAPTER_WEIGHTS)
    tensors = load_file(weights_path)
    scanned = cfg.scan_layers if scanned is None else scanned
    leaves: dict = {}
    seen = set()
    for path, shape, _, kind, ls in iter_lora(cfg, lora, scanned=True):
        per_layer = []
        for i in range(cfg.num_layers):
            name = peft_tensor_name(ls.base.hf_name.format(layer=i), kind)
            if name not in tensors:
                raise ValueError(f"{weights_path}: missing tensor {name}")
            t = tensors[name]
            want = (lora.rank, math.prod(ls.a_shape[:-1])) if kind == "a" else (math.prod(ls.b_shape[1:]), lora.rank)
            if tuple(t.shape) != want:
                raise ValueError(f"{weights_path}: tensor {name} has shape {tuple(t.shape)}, expected {want}")
            per_layer.append(np.ascontiguousarray(t.T).reshape(shape[1:]))
            seen.add(name)
        if scanned:
            leaves[path] = np.stack(per_layer)
        else:
            for i, v in enumerate(per_layer):
                leaves[(f"layers_{i}",) + path[1:]] = v
    extra = sorted(set(tensors) - seen)
    if extra:
        raise ValueError(f"{weights_path}: unexpected tensor(s) {extra[:5]}{' …' if len(extra) > 5 else ''}")
    return lora, P.tree_from_paths(leaves)
