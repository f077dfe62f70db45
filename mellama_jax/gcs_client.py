"""gcsfs, the client behind every gs:// file of `mellama_jax.paths`, with the project's retry policy.

Why: gcsfs retries a request failing with 408, 429, 500-504, a connection error or a timeout, but only 6 times in
all (about 31 s of waiting), and that count is bound when gcsfs defines its class (`retry_request(retries=6)`
on `GCSFileSystem._request`), so no setting raises it. A 503 burst longer than that at a run's start-up (orbax
checking the checkpoint directory) killed training in bench/soak.py, while tensorstore, which writes the
checkpoint arrays, would have waited for minutes. Here every gcsfs request gets the tensorstore GCS driver's
default patience (context resource `gcs_request_retries`: 32 retries, 1 s doubling to at most 32 s; with the
jitter below 7.5-15 min in all), so both clients ride out the same outage. Errors that are not transient (404,
403, a bad request) are raised at once, as gcsfs does. `mellama_jax.paths` registers this class for gs:// with
fsspec, which etils.epath and orbax go through.
"""
from __future__ import annotations

import asyncio
import random

import gcsfs
from gcsfs import retry as gcsfs_retry

RETRIES = 32  # after the first attempt, as tensorstore's max_retries
FIRST_DELAY_S = 1.0  # before the first retry; doubled before each next one
MAX_DELAY_S = 32.0

_ONE_ATTEMPT = gcsfs.GCSFileSystem._request.__wrapped__  # gcsfs' request without its own 6-attempt loop


class PatientGCSFileSystem(gcsfs.GCSFileSystem):
    """gcsfs' filesystem whose every HTTP request is retried RETRIES times on a transient error."""

    async def _request(self, *args, **kwargs):
        retry = 0
        while True:
            try:
                return await _ONE_ATTEMPT(self, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - gcsfs decides which errors are transient
                if retry == RETRIES or not gcsfs_retry.is_retriable(e):
                    raise
            # jitter: processes of a pod that met the same outage do not retry in lockstep
            await asyncio.sleep(min(FIRST_DELAY_S * 2 ** retry, MAX_DELAY_S) * random.uniform(0.5, 1.0))
            retry += 1
