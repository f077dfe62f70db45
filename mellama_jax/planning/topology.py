"""Cloud TPU topologies by name, and fake TPU devices for them built by libtpu on a machine without a TPU.

Names accepted by `parse_topology`:
* Cloud accelerator types: `v5p-128`, `v4-32`, `v5litepod-16` / `v5e-16`, `v6e-64`. As on Cloud, the
  number counts TensorCores for v4/v5p (2 per chip, fused into one "megacore" JAX device) and chips for
  v5e/v6e (1 core per chip), so v5p-128 is 64 chips (4x4x4) and v5e-256 is 256 chips (16x16).
* libtpu topology strings: `v5p:4x4x4`, `v5e:2x2`.
* Either with a slice count prefix for multi-slice (several pods joined over the data-centre network):
  `2xv5p-32`, `2xv5e:2x2`; or pass `num_slices`.

`fake_devices(topology)` calls `jax.experimental.topologies.get_topology_desc`, which needs libtpu
(`pip install -e .[tpu]`) but no TPU. Those devices make a real `Mesh`; lowering and compiling for them runs
the TPU compiler here, with the same memory limits and errors as on the pod.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re

from jax.experimental import topologies

from mellama_jax.libtpu_env import libtpu_available

GiB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class ChipSpec:
    generation: str  # libtpu's name: v4, v5e, v5p, v6e
    hbm_bytes: int  # HBM per chip
    peak_bf16_flops: float  # dense bf16 FLOP/s per chip (Cloud TPU spec sheets)
    dims: int  # 2 (v5e, v6e: 2D torus) or 3 (v4, v5p: 3D torus)
    cores_in_name: bool  # the accelerator-type number counts TensorCores (2 per chip), not chips
    chips_per_host: int  # chips attached to one TPU VM in a multi-host slice
    hbm_bytes_per_s: float  # HBM bandwidth per chip (Cloud TPU spec sheets)


CHIPS: dict[str, ChipSpec] = {
    "v4": ChipSpec("v4", 32 * GiB, 275e12, 3, True, 4, 1228e9),
    "v5e": ChipSpec("v5e", 16 * GiB, 197e12, 2, False, 4, 819e9),
    "v5p": ChipSpec("v5p", 95 * GiB, 459e12, 3, True, 4, 2765e9),
    "v6e": ChipSpec("v6e", 32 * GiB, 918e12, 2, False, 4, 1640e9),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6lite": "v6e"}


@dataclasses.dataclass(frozen=True)
class TpuTopology:
    generation: str
    shape: tuple[int, ...]  # chips along each torus axis of one slice
    num_slices: int = 1

    @property
    def chip(self) -> ChipSpec:
        return CHIPS[self.generation]

    @property
    def chips_per_slice(self) -> int:
        return math.prod(self.shape)

    @property
    def num_chips(self) -> int:
        return self.chips_per_slice * self.num_slices

    @property
    def libtpu_name(self) -> str:
        return f"{self.generation}:{'x'.join(map(str, self.shape))}"

    @property
    def accelerator_type(self) -> str:
        """The Cloud accelerator type (`--accelerator-type` of gcloud) of one slice."""
        n = self.chips_per_slice * (2 if self.chip.cores_in_name else 1)
        prefix = "v5litepod" if self.generation == "v5e" else self.generation
        return f"{prefix}-{n}"

    @property
    def name(self) -> str:
        base = self.accelerator_type.replace("v5litepod", "v5e")
        return base if self.num_slices == 1 else f"{self.num_slices}x{base}"

    @property
    def chips_per_host_bounds(self) -> tuple[int, int, int]:
        # Single-host v5e/v6e slices of 8 chips put all 8 on one VM (2x4); multi-host slices use 2x2 per VM.
        if self.chip.dims == 2 and self.chips_per_slice <= 8:
            return (self.shape[0], self.shape[1], 1)
        return (2, 2, 1) if self.chips_per_slice >= 4 else tuple(self.shape) + (1,) * (3 - len(self.shape))

    @property
    def hosts_per_slice(self) -> int:
        return max(1, self.chips_per_slice // math.prod(self.chips_per_host_bounds))

    @property
    def wrap(self) -> tuple[bool, bool, bool]:
        """Torus wrap-around links: full 3D cubes from 4x4x4 up, and the full 16x16 2D pod."""
        if self.chip.dims == 3:
            full = all(d >= 4 and d % 4 == 0 for d in self.shape)
            return (full, full, full)
        full = tuple(self.shape) == (16, 16)
        return (full, full, False)


def _shape_for_chips(chips: int, dims: int, source: str) -> tuple[int, ...]:
    """Cloud TPU slice shapes: start from 2x2(x1) and double the smallest axis (the last of equals)."""
    if chips < 1 or chips & (chips - 1):
        raise ValueError(f"{source}: {chips} chips is not a power of two; Cloud TPU slices are")
    if chips == 1:
        return (1,) * dims
    if chips == 2:
        return (1, 2) if dims == 2 else (1, 2, 1)
    shape = [2, 2] + [1] * (dims - 2)
    while math.prod(shape) < chips:
        if dims == 3 and shape[2] == 1:
            shape[2] = 2
            continue
        smallest = min(shape)
        i = max(j for j, d in enumerate(shape) if d == smallest)
        shape[i] *= 2
    return tuple(shape)


def parse_topology(name: str, num_slices: int | None = None) -> TpuTopology:
    """`v5p-128`, `v5e:16x16`, `2xv5p-32`, ... -> TpuTopology (see the module docstring)."""
    text = name.strip().lower()
    slices = 1
    m = re.fullmatch(r"(\d+)x(v.+)", text)
    if m:
        slices, text = int(m.group(1)), m.group(2)
    if num_slices is not None:
        if m and num_slices != slices:
            raise ValueError(f"topology {name!r} names {slices} slices but num_slices={num_slices}")
        slices = num_slices
    if slices < 1:
        raise ValueError(f"topology {name!r}: the number of slices must be >= 1")
    m = re.fullmatch(r"([a-z0-9]+?)(?:litepod)?[-:](.+)", text)
    if not m:
        raise ValueError(f"topology {name!r}: expected an accelerator type like v5p-128 or a shape like v5e:2x2")
    gen = _ALIASES.get(m.group(1), m.group(1))
    if text.startswith("v5litepod"):
        gen = "v5e"
    if gen not in CHIPS:
        raise ValueError(f"topology {name!r}: unknown TPU generation {gen!r}; known: {sorted(CHIPS)}")
    chip = CHIPS[gen]
    rest = m.group(2)
    if ":" in text:
        shape = tuple(int(d) for d in rest.split("x"))
        if len(shape) == 2 and chip.dims == 3:
            shape = shape + (1,)
        if len(shape) != chip.dims:
            raise ValueError(f"topology {name!r}: {gen} slices are {chip.dims}-D, got shape {rest}")
    else:
        if not rest.isdigit():
            raise ValueError(f"topology {name!r}: expected a core/chip count after '-'")
        count = int(rest)
        chips = count // 2 if chip.cores_in_name else count
        if chip.cores_in_name and count % 2:
            raise ValueError(f"topology {name!r}: {gen} accelerator types count TensorCores (2 per chip)")
        shape = _shape_for_chips(chips, chip.dims, name)
    return TpuTopology(gen, shape, slices)


# ---------------------------------------------------------------- libtpu
def prepare_libtpu_environment(topology: TpuTopology | None = None) -> None:
    """Environment libtpu reads when it loads: no metadata server, one local worker, no exclusive lock.

    Must run before the first `fake_devices` call; values already set by the user win.
    """
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # Several processes (pytest workers, a planner next to a training run) may load libtpu at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    if topology is not None:
        os.environ.setdefault("TPU_ACCELERATOR_TYPE", topology.accelerator_type)


def fake_devices(topology: TpuTopology) -> list:
    """The TPU devices of `topology` (all slices), made by libtpu without any TPU attached."""
    if not libtpu_available():
        raise RuntimeError("libtpu is not installed: the TPU planner needs it to compile for TPU "
                           "(pip install -e '.[tpu]', about 700 MB; no TPU is needed)")
    prepare_libtpu_environment(topology)

    desc = topologies.get_topology_desc(
        platform="tpu", topology_name=topology.libtpu_name, chip_config_name="default",
        chips_per_host_bounds=topology.chips_per_host_bounds, num_slices=topology.num_slices,
        wrap=topology.wrap)
    devices = list(desc.devices)
    if len(devices) != topology.num_chips:
        raise RuntimeError(f"libtpu made {len(devices)} devices for {topology.name}, expected {topology.num_chips}")
    return devices
