"""What a compiled executable says about memory and compute, and what a failed compile says about memory.

`CompileReport` holds one compile attempt on one topology: per-chip memory from `memory_analysis()`
(arguments, temporaries, outputs, aliased), FLOPs from `cost_analysis()`, or, when the TPU compiler ran out
of HBM, the amount it asked for, parsed from the RESOURCE_EXHAUSTED message. All sizes are bytes per chip.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional

from mellama_jax.parallel import describe_mesh

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
_SIZE = r"([\d.]+)\s*([KMGT]?)i?B?"


@dataclasses.dataclass(frozen=True)
class CompileReport:
    topology: str
    remat_policy: str
    micro_batch_per_chip: int  # rows one chip processes per forward/backward
    micro_batches: int  # gradient-accumulation steps per optimizer step
    hbm_bytes: int  # the chip's HBM
    fits: bool
    mesh: dict = dataclasses.field(default_factory=dict)  # mesh axis -> size the step was compiled for
    out_of_memory: bool = False  # the compiler (or our HBM check) said RESOURCE_EXHAUSTED
    argument_bytes: int = 0
    output_bytes: int = 0
    alias_bytes: int = 0  # outputs written into donated arguments (counted once)
    temp_bytes: int = 0
    code_bytes: int = 0
    flops_per_chip: float = 0.0  # matmul FLOPs per chip per optimizer step, remat recompute included (flops.py)
    model_flops_per_chip: float = 0.0  # the model's training FLOPs (6N + attention) per chip per step
    xla_flops_per_chip: float = 0.0  # XLA's cost analysis (counts each loop body once: low for scans)
    xla_bytes_accessed_per_chip: float = 0.0  # XLA's cost analysis "bytes accessed" (loop bodies once, too)
    required_bytes: Optional[int] = None  # out of memory: what the compiler asked for
    available_bytes: Optional[int] = None  # out of memory: the HBM the compiler had
    error: str = ""  # the compiler's message (first lines) when it did not compile
    compile_seconds: float = 0.0
    executable_path: str = ""

    @property
    def total_bytes(self) -> int:
        """Peak HBM per chip: live arguments + outputs not aliased to them + temporaries + code."""
        if self.out_of_memory and self.required_bytes is not None:
            return self.required_bytes
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes

    @property
    def recompute_ratio(self) -> float:
        """Executed matmul FLOPs over the model's training FLOPs: 1 + the share remat recomputes."""
        return self.flops_per_chip / self.model_flops_per_chip if self.model_flops_per_chip else float("nan")

    @property
    def status(self) -> str:
        if self.fits:
            return "fits"
        if self.out_of_memory:
            return "does not fit"
        return "error"

    def summary(self) -> str:
        gib = lambda b: f"{b / 1024 ** 3:.2f} GiB"
        mesh = f" mesh {describe_mesh(self.mesh)}" if self.mesh else ""
        head = (f"{self.topology}{mesh} remat={self.remat_policy} micro_batch={self.micro_batch_per_chip}/chip "
                f"x{self.micro_batches}: ")
        if self.fits:
            return (head + f"fits, {gib(self.total_bytes)} of {gib(self.hbm_bytes)} per chip "
                    f"(arguments {gib(self.argument_bytes)}, temporaries {gib(self.temp_bytes)}, "
                    f"outputs {gib(self.output_bytes)}, aliased {gib(self.alias_bytes)}), "
                    f"{self.flops_per_chip:.3e} FLOPs/chip/step ({self.recompute_ratio:.2f}x the model's)")
        if self.out_of_memory:
            avail = gib(self.available_bytes) if self.available_bytes else gib(self.hbm_bytes)
            if self.required_bytes is None:
                return head + f"does not fit ({avail} HBM per chip): {self.error}"
            return head + f"does not fit: needs {gib(self.required_bytes)} per chip, {avail} available"
        return head + f"did not compile: {self.error}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(total_bytes=self.total_bytes, status=self.status)
        return d


def from_executable(compiled, **fields) -> CompileReport:
    """Read memory and FLOPs off a `jax.stages.Compiled`."""
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per program
        cost = cost[0] if cost else {}
    xla_flops = float((cost or {}).get("flops", 0.0))
    xla_bytes = float((cost or {}).get("bytes accessed", 0.0))
    report = CompileReport(
        fits=True,
        argument_bytes=int(mem.argument_size_in_bytes), output_bytes=int(mem.output_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes), temp_bytes=int(mem.temp_size_in_bytes),
        code_bytes=int(mem.generated_code_size_in_bytes), xla_flops_per_chip=xla_flops,
        xla_bytes_accessed_per_chip=xla_bytes, **fields)
    if report.total_bytes > report.hbm_bytes:
        # The compiler's usable HBM can be a little above our nominal figure; trust ours, say why.
        return dataclasses.replace(report, fits=False, out_of_memory=True, required_bytes=report.total_bytes,
                                   available_bytes=report.hbm_bytes,
                                   error="compiled, but the peak exceeds the chip's HBM")
    return report


def is_out_of_memory(error: BaseException) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text


def _to_bytes(number: str, unit: str) -> int:
    return int(float(number) * _UNITS[unit.upper()])


def parse_out_of_memory(message: str) -> tuple[Optional[int], Optional[int]]:
    """(bytes asked for, bytes available) from an XLA:TPU out-of-memory message; None where absent.

    Forms seen from libtpu: "... the total memory required for HLO temporaries (24.00G) exceeds available
    HBM (15.75G)" and "Ran out of memory in memory space hbm. Used 95.74G of 95.74G hbm. Exceeded hbm
    capacity by 1.23M. Total hbm usage >= 96.00G: reserved ... program ... arguments ...".
    """
    m = re.search(r"required for [^(]*\(" + _SIZE + r"\)\s*exceeds available HBM \(" + _SIZE + r"\)", message)
    if m:
        return _to_bytes(m.group(1), m.group(2)), _to_bytes(m.group(3), m.group(4))
    available = None
    m = re.search(r"Used " + _SIZE + r" of " + _SIZE + r" hbm", message)
    if m:
        available = _to_bytes(m.group(3), m.group(4))
    # "Total hbm usage >= X" is the whole demand; "Used X of Y" stops counting at the capacity (then
    # "Exceeded hbm capacity by Z" says by how much).
    total = re.search(r"Total hbm usage >= " + _SIZE, message)
    if total:
        return _to_bytes(total.group(1), total.group(2)), available
    if m:
        used = _to_bytes(m.group(1), m.group(2))
        over = re.search(r"Exceeded hbm capacity by " + _SIZE, message)
        return used + (_to_bytes(over.group(1), over.group(2)) if over else 0), available
    return None, None


def from_out_of_memory(error: BaseException, **fields) -> CompileReport:
    message = str(error)
    required, available = parse_out_of_memory(message)
    # Keep the compiler's explanation (its first lines), not the Python traceback.
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    return CompileReport(fits=False, out_of_memory=True, required_bytes=required, available_bytes=available,
                         error=" ".join(lines[:6]), **fields)
