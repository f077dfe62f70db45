"""libtpu on machines without a TPU: whether it is installed, whether a TPU is attached, and keeping it quiet.

Imported by the package root before anything imports JAX (mellama_jax/__init__.py), so nothing here may
import JAX or any other part of the package.
"""
from __future__ import annotations

import glob
import importlib.util
import os


def libtpu_available() -> bool:
    return importlib.util.find_spec("libtpu") is not None


def tpu_attached() -> bool:
    """TPU chips on this machine: /dev/accel* (v4, v5p) or /dev/vfio/<n> (v5e, v6e)."""
    vfio = os.listdir("/dev/vfio") if os.path.isdir("/dev/vfio") else []
    return bool(glob.glob("/dev/accel*")) or any(name.isdigit() for name in vfio)


# libtpu, once installed (the [tpu] extra, for the planner), initialises on every JAX start and, on a machine
# without a TPU, prints worker-hostname and host-bounds errors. These values tell it there is nothing to find.
NO_TPU_ENVIRONMENT = {"TPU_SKIP_MDS_QUERY": "1", "TPU_WORKER_HOSTNAMES": "localhost", "TPU_HOST_BOUNDS": "1,1,1"}


def quiet_libtpu_without_tpu() -> None:
    """Before JAX loads: where libtpu is installed but no TPU is attached, keep libtpu from looking for one.
    Values the user set win; on a TPU VM nothing changes."""
    if "JAX_PLATFORMS" in os.environ and "tpu" not in os.environ["JAX_PLATFORMS"]:
        return  # JAX will not load libtpu
    if libtpu_available() and not tpu_attached():
        for key, value in NO_TPU_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
