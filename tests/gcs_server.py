"""A real GCS JSON-API server on localhost for the tests: gcp-storage-emulator (PyPI), in memory.

Every client the project uses is pointed at it through its own documented setting:
    gcsfs (etils.epath's gs:// backend), google-cloud-storage (tensorboardX)  STORAGE_EMULATOR_HOST
    tensorstore (orbax's array I/O)                                           TENSORSTORE_GCS_HTTP_URL
                                                                              GOOGLE_AUTH_TOKEN_FOR_TESTING
    array_record's reader (google-cloud-cpp, prepared corpora)                CLOUD_STORAGE_EMULATOR_ENDPOINT
gcsfs >= 2026.x first probes the bucket type over gRPC (hierarchical-namespace / zonal buckets), which an
HTTP emulator cannot answer (≈ 60 s per filesystem before it falls back); GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=
false selects gcsfs' plain JSON-API filesystem, which is what such buckets need anyway. The variables are
set in os.environ, so subprocesses started by a test (killed runs, multi-process runs) see the server too.

Three gaps of the emulator are filled when this file runs it (`python tests/gcs_server.py PORT`): object
downloads carry the `x-goog-generation` / `x-goog-metageneration` headers real GCS sends, which tensorstore's
GCS driver reads (without them it fails with "Malformed StorageGeneration" when it re-reads an OCDBT
manifest), suffix ranges (`Range: bytes=-N`, the last N bytes: how array_record's reader fetches an
ArrayRecord footer from objects over 1 MiB) are answered as real GCS does instead of with the whole object, and
its listen backlog is deepened (see serve()). For fault injection, `GcsServer.fail_next(K)` makes it answer the
next K requests with 503. The server is otherwise the emulator as published.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

BUCKET = "mellama-test"
FAULT_PATH = "/_mellama/fail_next"  # POST ?count=K: the next K requests are answered 503 (fault injection)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GcsServer:
    def __init__(self):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
                    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
                    "CLOUD_STORAGE_EMULATOR_ENDPOINT": self.url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                    "GOOGLE_CLOUD_PROJECT": "test-project"}
        self.proc = None
        self._saved = {}

    def start(self) -> "GcsServer":
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b/{BUCKET}", timeout=2).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"gcp-storage-emulator did not start on {self.url}") from None
                time.sleep(0.2)
        for k, v in self.env.items():
            self._saved[k] = os.environ.get(k)
            os.environ[k] = v
        return self

    def stop(self) -> None:
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def fail_next(self, count: int) -> int:
        """Make the server answer its next `count` requests with 503 (a transient GCS error, as real GCS gives
        under load); the clients' retries must carry the operation through. Returns how many 503s of the
        previous burst were still to be answered."""
        request = urllib.request.Request(f"{self.url}{FAULT_PATH}?count={count}", method="POST")
        return int(urllib.request.urlopen(request, timeout=5).read())

    def fresh_prefix(self, name: str = "t") -> str:
        """A gs:// directory no other test uses."""
        return f"gs://{BUCKET}/{name}-{uuid.uuid4().hex[:8]}"


def serve(port: int) -> None:
    """Run the emulator in this process, in memory, with BUCKET created and generation headers on downloads."""
    from http import server as http_server

    from gcp_storage_emulator import server as emulator_server
    from gcp_storage_emulator.handlers import objects

    original = objects.download

    def download(request, response, storage, *args, **kwargs):
        suffix = re.fullmatch(r"\s*bytes=-(\d+)\s*", request.get_header("range", "") or "")
        if suffix:  # "the last N bytes" (how array_record's reader fetches a footer); the emulator knows only X-Y
            size = len(storage.get_file(request.params["bucket_name"], request.params["object_id"]))
            headers = request._request_handler.headers
            del headers["Range"]
            headers["Range"] = f"bytes={max(0, size - int(suffix.group(1)))}-{size - 1}"
        original(request, response, storage, *args, **kwargs)
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except Exception:  # noqa: BLE001 - not found: the original handler has set the status
            return
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

    objects.download = download  # objects.get(alt=media) calls it through the module
    failing = {"left": 0}
    route = emulator_server.Router.handle

    def handle(router, method):
        handler = router._request_handler
        if handler.path.startswith(FAULT_PATH):
            body = str(failing["left"]).encode()
            failing["left"] = int(re.search(r"count=(\d+)", handler.path).group(1))
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        if failing["left"] > 0:
            failing["left"] -= 1
            handler.close_connection = True  # the request body (if any) is left unread
            handler.send_response(503)
            handler.send_header("Content-Length", "0")
            handler.send_header("Connection", "close")
            handler.end_headers()
            return
        route(router, method)

    emulator_server.Router.handle = handle
    # The emulator serves one request at a time from http.server's listen backlog of 5 connections; clients that
    # open many at once (array_record's reader fetches a block's documents in parallel) have their further
    # connection attempts dropped and retried by TCP a second later. A deeper backlog queues them instead.
    http_server.HTTPServer.request_queue_size = 1024
    for _, methods in emulator_server.HANDLERS:
        for method, handler in list(methods.items()):
            if handler is original:
                methods[method] = download
    emulator_server.Server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET).run()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
