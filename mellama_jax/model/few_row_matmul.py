"""Few-row matmul for decode steps on XLA:CPU: an AVX2 kernel (few_row_matmul.cc) behind an XLA FFI call.

A decode step multiplies [batch x K] activations by every weight matrix once. For a few rows, XLA:CPU's GEMM
paths (Eigen, YNNPACK) repack the weights on every call, so a step costs per weight byte about twice what a
single streaming pass would (bench/decode.py, README "What bounds each"). Here the weights are packed once
per generate call into 16-column panels [N / 16, K, 16] (`pack`), and the kernel streams each panel once,
four rows of x per loaded weight vector, half of the panels on XLA's intra-op thread pool.

The kernel is compiled on first use with the system C++ compiler (`$CXX`, else `c++`) against the FFI
headers jaxlib ships, into a cache folder keyed by source, flags and jaxlib version (`$MELLAMA_JAX_CACHE`,
else `~/.cache/mellama_jax`). `available()` is False where that cannot work (not x86-64 with AVX2 + FMA, no
compiler, a failed build: the reason is in `unavailable_reason()`); callers then keep XLA's dot. Only
float32, and only unsharded arrays: the SPMD partitioner cannot split a custom call.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

PANEL = 16
TARGET = "mellama_few_row_matmul"
SOURCE = Path(__file__).with_name("few_row_matmul.cc")
FLAGS = ("-O3", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC")

_reason: str | None = None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cache_dir() -> Path:
    return Path(os.environ.get("MELLAMA_JAX_CACHE") or Path.home() / ".cache" / "mellama_jax")


def _build() -> Path:
    """The compiled library, built once per (source, flags, jaxlib) and published with an atomic rename so
    concurrent processes (pytest workers, hosts sharing a home directory) never load a half-written file."""
    import jaxlib
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler:
        raise RuntimeError("no C++ compiler found (set CXX)")
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + jaxlib.__version__.encode())
    out = _cache_dir() / f"few_row_matmul-{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        cmd = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building {SOURCE.name} failed:\n{done.stderr[-2000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether the kernel is built and registered with XLA:CPU (tried once per process)."""
    global _reason
    if platform.machine().lower() not in ("x86_64", "amd64"):
        _reason = f"needs x86-64, this is {platform.machine()}"
        return False
    missing = {"avx2", "fma"} - _cpu_flags()
    if missing:
        _reason = f"the CPU lacks {sorted(missing)}"
        return False
    try:
        import ctypes
        library = ctypes.cdll.LoadLibrary(str(_build()))
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.MellamaFewRowMatmul), platform="cpu")
    except (OSError, RuntimeError, AttributeError) as e:
        _reason = str(e)
        return False
    return True


def unavailable_reason() -> str | None:
    """Why `available()` is False (None when it is True or was not asked yet)."""
    return _reason


def packable(kernel_2d_shape: tuple[int, int]) -> bool:
    return kernel_2d_shape[1] % PANEL == 0


def pack(kernel_2d: jax.Array) -> jax.Array:
    """[K, N] -> float32 panels [N / 16, K, 16] (panel p holds columns 16p .. 16p + 15, row by row)."""
    K, N = kernel_2d.shape
    return kernel_2d.astype(jnp.float32).reshape(K, N // PANEL, PANEL).transpose(1, 0, 2)


def matmul(x: jax.Array, packed: jax.Array) -> jax.Array:
    """x [M, K] float32 @ the matrix `packed` came from -> [M, N] float32."""
    if not available():
        raise RuntimeError(f"the few-row matmul kernel is not available here: {unavailable_reason()}")
    out = jax.ShapeDtypeStruct((x.shape[0], packed.shape[0] * PANEL), jnp.float32)
    return jax.ffi.ffi_call(TARGET, out)(x.astype(jnp.float32), packed)
