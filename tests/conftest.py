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
