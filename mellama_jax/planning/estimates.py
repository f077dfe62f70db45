"""What a plan means for a run: the flags that launch it, and time, throughput and cost at a stated MFU.

MFU here is model FLOPs (model.params.flops_per_token: 6N + causal attention halved, MaxText's convention)
over the chip's peak bf16 FLOP/s; the step time at a given MFU follows from the model FLOPs per chip per
step. The roofline bounds come from XLA's cost analysis of the compiled step (FLOPs and HBM bytes accessed);
XLA counts a loop body once, so for scanned layers they are lower bounds.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from mellama_jax.planning.compiled import CompileReport
from mellama_jax.planning.topology import TpuTopology

DEFAULT_MFU = 0.40  # a typical MaxText LLaMA-2 figure on v5p; pass --mfu to plan at another


@dataclasses.dataclass(frozen=True)
class Estimate:
    mfu: float
    step_seconds: float
    tokens_per_step: int
    tokens_per_sec_per_chip: float
    tokens_per_day: float
    budget_tokens: int  # train.steps x tokens per step
    days: float
    chip_hours: float
    roofline_compute_seconds: float  # XLA cost analysis FLOPs / peak
    roofline_hbm_seconds: float  # XLA cost analysis bytes accessed / HBM bandwidth

    def lines(self) -> list[str]:
        bound = "HBM-bandwidth" if self.roofline_hbm_seconds > self.roofline_compute_seconds else "compute"
        return [
            f"at {self.mfu:.0%} MFU (model FLOPs, causal attention halved as MaxText counts): step "
            f"{self.step_seconds:.2f} s, {self.tokens_per_sec_per_chip:,.0f} tokens/s/chip, "
            f"{self.tokens_per_day / 1e9:,.2f}B tokens/day",
            f"token budget {self.budget_tokens / 1e9:,.2f}B (train.steps x batch x seq): {self.days:,.1f} days, "
            f"{self.chip_hours:,.0f} chip-hours",
            f"roofline from XLA's cost analysis (loop bodies counted once, so lower bounds): compute "
            f"{self.roofline_compute_seconds:.3f} s, HBM {self.roofline_hbm_seconds:.3f} s per step ({bound}-bound)",
        ]


def estimate(report: CompileReport, config, topology: TpuTopology, mfu: float = DEFAULT_MFU) -> Estimate:
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu={mfu}: expected a fraction in (0, 1]")
    chip = topology.chip
    tokens_per_step = int(config.train.global_batch_size) * int(config.train.seq_len)
    step = report.model_flops_per_chip / (chip.peak_bf16_flops * mfu)
    tokens_per_sec_per_chip = tokens_per_step / step / topology.num_chips
    tokens_per_day = tokens_per_sec_per_chip * topology.num_chips * 86400
    budget = int(config.train.steps) * tokens_per_step
    days = budget / tokens_per_day
    return Estimate(mfu=mfu, step_seconds=step, tokens_per_step=tokens_per_step,
                    tokens_per_sec_per_chip=tokens_per_sec_per_chip, tokens_per_day=tokens_per_day,
                    budget_tokens=budget, days=days, chip_hours=days * 24 * topology.num_chips,
                    roofline_compute_seconds=report.xla_flops_per_chip / chip.peak_bf16_flops,
                    roofline_hbm_seconds=report.xla_bytes_accessed_per_chip / chip.hbm_bytes_per_s)


# Fields the planner sets for its own sake: it compiles on abstract synthetic batches (config_files.load_config).
PLANNING_ONLY_FIELDS = ("data.kind",)


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def launch_flags(planned, base) -> list[str]:
    """The `--config.<key>=<value>` flags that turn `base` (the config file as the training CLI loads it)
    into `planned` (what the chosen plan compiled: the --model preset, the --config.x=y overrides, the remat policy,
    the micro-batch count and a multi-slice mesh)."""
    want, have = _flat(planned.to_dict()), _flat(base.to_dict())
    flags = []
    for key, value in want.items():
        if key in PLANNING_ONLY_FIELDS or (key in have and have[key] == value):
            continue
        flags.append(f"--config.{key}={value}")
    return flags
