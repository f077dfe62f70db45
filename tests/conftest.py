"""Test setup: JAX runs on a fake 8-device CPU mesh.

The XLA flag must be set before jax is imported anywhere, so it lives here, at the top of conftest.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
# Tests must never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# JAX's persistent compilation cache (https://docs.jax.dev/en/latest/persistent_compilation_cache.html), shared by
# the pytest workers and every command a test starts: the tiny models' train and decode steps are compiled once
# per run instead of once per process. The cache key covers the program, the devices and the XLA flags, so a
# cached executable is the one a fresh compilation would give. A size limit turns on the cache's file lock, which
# concurrent writers need.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache",
                                   "jax_compilation_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 * 1024 ** 3))

import signal  # noqa: E402

# Ctrl-C reaches the tests and the commands they start, as in a terminal: a test run started from a script in the
# background (`cmd &`) inherits SIGINT ignored, and so would every command it starts (the Ctrl-C tests then wait on
# a run that never stops).
signal.signal(signal.SIGINT, signal.default_int_handler)

import jax  # noqa: E402
import pytest  # noqa: E402
from gcs_server import GcsServer  # noqa: E402 - tests/ is on sys.path (pytest's rootdir conftest)

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def gcs():
    """A GCS server on localhost (tests/gcs_server.py); yields it, with every GCS client pointed at it."""
    server = GcsServer().start()
    try:
        yield server
    finally:
        server.stop()
