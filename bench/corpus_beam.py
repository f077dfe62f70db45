"""Corpus preparation on the Beam path (bench/corpus.py runs it; needs the [beam] extra: .venv-beam).

(d) Stages. One generated corpus (corpus.make_docs: 1% exact, 1% near duplicates, 0.1% carrying a test item)
    prepared in this process by the local runner (workers=1) and by Beam's in-process DirectRunner. CPU seconds
    (time.process_time: every stage runs in this process) of the screening pass (read, MinHash signature,
    13-gram lookup, exact-key and LSH-band grouping, the decision: prepare._screen) and of the rest (read,
    tokenize, write the ArrayRecord shards, metadata and publish), as documents/s and MB of text/s per core.
(e) Driver memory. The same generator at 1x, 4x, 16x the documents (files of 1000 documents: units grow with
    the corpus), each prepared by a fresh driver process (`python bench/corpus_beam.py --driver ...`) with
    PortableRunner against a Beam job server and an SDK worker pool in processes of their own: Dataflow's layout,
    where the driver submits the two pipelines and reads back what they wrote (the duplicates, per-unit and
    per-shard counts), and workers and shuffle live elsewhere. Reported per size, all of the driver's own
    process (no child): its peak resident memory (getrusage(RUSAGE_SELF).ru_maxrss) over the whole run and
    before preparing starts (after the imports and the tokenizer), its resident memory (VmRSS) then, during the
    preparation (the largest of samples taken every 50 ms) and at the end; and the job server's peak (VmHWM),
    which holds the shuffled data in this local runner and grows with the corpus (on Dataflow: the shuffle
    service).
"""
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
TOKENIZER = os.path.join(REPO, "tests", "assets", "llama2-tokenizer", "tokenizer.model")
DOCS_PER_FILE = 1000


def write_corpus(root: str, n_docs: int, n_words: int) -> dict:
    """JSONL files of DOCS_PER_FILE generated documents and two small test sets; returns the data config."""
    import corpus  # noqa: PLC0415 - bench/corpus.py, the generator (it imports this module lazily)
    r = random.Random(2)
    tasks = []
    test_texts = []
    os.makedirs(os.path.join(root, "eval"), exist_ok=True)
    for name, n, w in (("pubmedqa", 500, 250), ("mednli", 1422, 40)):
        path = os.path.join(root, "eval", f"{name}.jsonl")
        with open(path, "w") as f:
            for i in range(n):
                text = corpus.words(r, w)
                test_texts.append(text)
                f.write(json.dumps({"id": f"{name}{i}", "query": f"Answer the question.\n{text}", "text": text}) + "\n")
        tasks.append(path)
    docs = corpus.make_docs(r, n_docs, n_words, test_texts)
    os.makedirs(os.path.join(root, "docs"), exist_ok=True)
    for k in range(0, n_docs, DOCS_PER_FILE):
        with open(os.path.join(root, "docs", f"part-{k // DOCS_PER_FILE:05d}.jsonl"), "w") as f:
            f.writelines(json.dumps({"text": d}) + "\n" for d in docs[k:k + DOCS_PER_FILE])
    return dict(components=[dict(name="general", weight=1.0, sources=[os.path.join(root, "docs", "*.jsonl")])],
                dedup=dict(threshold=0.8), decontaminate=dict(tasks=tasks, n=13, mode="drop"),
                text_MB=sum(len(d.encode()) for d in docs) / 1e6)


def stages(root: str, n_docs: int, n_words: int) -> dict:
    from mellama_jax.data import prepare  # noqa: PLC0415
    from mellama_jax.data.tokenizer import Tokenizer  # noqa: PLC0415
    cfg = write_corpus(root, n_docs, n_words)
    mb = cfg.pop("text_MB")
    tok = Tokenizer.load(TOKENIZER)
    screen = prepare._screen
    out = {"documents": n_docs, "text_MB": round(mb, 1)}
    for runner, options in (("local", ()), ("beam_direct_in_process", ("--runner=DirectRunner",))):
        spent = []

        def timed(*args, **kwargs):
            started = time.process_time()
            try:
                return screen(*args, **kwargs)
            finally:
                spent.append(time.process_time() - started)
        prepare._screen = timed
        try:
            started, wall = time.process_time(), time.time()
            report = prepare.prepare_corpus(cfg, tok, os.path.join(root, runner), workers=1,
                                            runner="beam" if options else "local", beam_options=options,
                                            show_progress=False)
            total, wall = time.process_time() - started, time.time() - wall
        finally:
            prepare._screen = screen
        rest = total - spent[0]
        out[runner] = {
            "screening": {"cpu_s": round(spent[0], 1), "docs_per_s_per_core": round(n_docs / spent[0]),
                          "MB_per_s_per_core": round(mb / spent[0], 2)},
            "tokenize_write_publish": {"cpu_s": round(rest, 1), "docs_per_s_per_core": round(n_docs / rest),
                                       "tokens_per_s_per_core": round(report["total_tokens"] / rest)},
            "wall_s": round(wall, 1), "documents_kept": report["components"]["general"]["train"]["documents"],
            "removed": report["removed"]["general"]["train"]}
    out["beam_vs_local_cpu"] = round(sum(out["beam_direct_in_process"][k]["cpu_s"] for k in ("screening", "tokenize_write_publish"))
                                     / sum(out["local"][k]["cpu_s"] for k in ("screening", "tokenize_write_publish")), 2)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a Beam service exited with {proc.returncode}: {proc.args}")
        with socket.socket() as s:
            if s.connect_ex(("localhost", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"a Beam service did not listen on port {port} within {seconds} s")


def _peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def driver_memory(root: str, base_docs: int, n_words: int, multiples=(1, 4, 16)) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               # the worker pool starts each SDK worker as `python -c ...`: this environment's python
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    rows = []
    for m in multiples:
        here = os.path.join(root, f"x{m}")
        cfg = write_corpus(here, base_docs * m, n_words)
        mb = cfg.pop("text_MB")
        with open(os.path.join(here, "cfg.json"), "w") as f:
            json.dump(cfg, f)
        job_port, pool_port = _free_port(), _free_port()
        services = [subprocess.Popen([sys.executable, "-m", module, flag, str(port)], env=env, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for module, flag, port in (
                        ("apache_beam.runners.portability.local_job_service_main", "--port", job_port),
                        ("apache_beam.runners.worker.worker_pool_main", "--service_port", pool_port))]
        try:
            for proc, port in zip(services, (job_port, pool_port)):
                _wait_listening(port, proc)
            r = subprocess.run([sys.executable, os.path.abspath(__file__), "--driver", os.path.join(here, "cfg.json"),
                                os.path.join(here, "out"), str(job_port), str(pool_port)],
                               env=env, capture_output=True, text=True, timeout=1800)
            if r.returncode:
                raise SystemExit(f"driver at {m}x failed:\n{r.stderr[-3000:]}")
            row = json.loads(r.stdout.strip().splitlines()[-1])
            row.update(multiple=m, documents=base_docs * m, units=-(-base_docs * m // DOCS_PER_FILE),
                       text_MB=round(mb, 1), job_server_peak_MiB=round(_peak_kib(services[0].pid) / 1024))
            rows.append(row)
        finally:
            for proc in services:  # each service's own process group: the pool's SDK workers go with it
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
    return rows


def _driver(cfg_path: str, out_dir: str, job_port: str, pool_port: str) -> None:
    """One preparation on the portable runner; prints this process's memory figures as one JSON line."""
    import apache_beam  # noqa: F401, PLC0415 - imported before the baseline is read, as prepare_corpus would
    import tensorflow_datasets  # noqa: F401, PLC0415

    from mellama_jax.data import screen_beam, shards_beam  # noqa: F401, PLC0415
    from mellama_jax.data.prepare import prepare_corpus  # noqa: PLC0415
    from mellama_jax.data.tokenizer import Tokenizer  # noqa: PLC0415

    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

    def peak_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    tok = Tokenizer.load(TOKENIZER)
    with open(cfg_path) as f:
        cfg = json.load(f)
    after_imports, peak_before = rss_mib(), peak_mib()
    # ru_maxrss is a high-water mark for the whole process: importing (TensorFlow through TFDS) sets one before
    # preparing starts, so the run's own peak is sampled
    during = [after_imports]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            during.append(rss_mib())
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.time()
    report = prepare_corpus(cfg, tok, out_dir, runner="beam", show_progress=False, beam_options=[
        "--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}", "--environment_type=EXTERNAL",
        f"--environment_config=localhost:{pool_port}"])
    done.set()
    sampler.join()
    print(json.dumps({"driver_rss_after_imports_MiB": round(after_imports),
                      "driver_peak_rss_before_run_MiB": round(peak_before),
                      "driver_peak_rss_MiB": round(peak_mib()), "driver_rss_at_end_MiB": round(rss_mib()),
                      "driver_peak_rss_during_run_MiB": round(max(during)), "rss_samples": len(during),
                      "seconds": round(time.time() - started, 1),
                      "documents_kept": report["components"]["general"]["train"]["documents"],
                      "removed": report["removed"]["general"]["train"]}))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--driver":
        _driver(*sys.argv[2:])
    else:
        raise SystemExit("run by bench/corpus.py")
