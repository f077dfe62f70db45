"""Log-likelihood scoring: sum log p(continuation | context) from the model's logits, batched.

Used by the multiple-choice scorer (`--mode loglik` of the evaluation CLI) and by the lm-eval adapter.
Conventions follow lm-evaluation-harness so numbers are comparable with its HF backend:

* a request is (context token ids, continuation token ids); the model reads (context + continuation)[:-1]
  and the continuation's log-probabilities are gathered at the last len(continuation) positions;
* sequences longer than max_length + 1 tokens lose tokens on the left;
* `is_greedy` says whether argmax decoding would have produced the continuation;
* requests whose model input is the same sequence (one-token choices of one question) share one row of the
  forward pass, as lm-eval's HF backend reuses its logits (its `logits_cache`).

Batches are right-padded (causal attention: padding after a row cannot change it) to a bucketed length
and a fixed batch size, so a run compiles the model for a handful of shapes only. The log-softmax and the
gather run on device; only one number per request comes back.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

LogitsFn = Callable[[np.ndarray], jax.Array]  # int32 tokens [B, T] -> float logits [B, T, V]


@dataclasses.dataclass(frozen=True)
class LoglikResult:
    logprob: float
    is_greedy: bool
    num_tokens: int


def bucket_length(n: int, max_length: int, minimum: int = 64) -> int:
    """Round a sequence length up to a power of two (>= minimum), capped at max_length.

    Every bucket is one compilation of the forward pass; below 64 tokens the padding costs less than
    another compile would."""
    size = minimum
    while size < n:
        size *= 2
    return max(min(size, max_length), n)


@jax.jit
def _continuation_stats(logits, targets, mask):
    """logits [B, T, V]; targets, mask [B, K, T]: the K requests that share each row's input.
    Returns each request's summed log-likelihood and whether greedy decoding gives it ([B, K])."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token_logp = jnp.take_along_axis(logp, jnp.swapaxes(targets, 1, 2), axis=-1).swapaxes(1, 2)  # [B, K, T]
    greedy = jnp.argmax(logits, axis=-1)[:, None] == targets
    total = jnp.sum(jnp.where(mask, token_logp, 0.0), axis=-1)
    all_greedy = jnp.all(greedy | ~mask, axis=-1)
    return total, all_greedy


def loglikelihoods(logits_fn: LogitsFn, requests: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                   max_length: int, batch_size: int = 8, pad_id: int = 0, progress: bool = True,
                   desc: str = "log-likelihood", store=None) -> list[LoglikResult]:
    """Score each (context, continuation) request; results in request order.

    Requests whose model input is the same token sequence (the choices of one question that are one token
    each, e.g. yes/no/maybe or A–E) share one row of the forward pass, as lm-eval's HF backend shares its
    logits: a batch holds `batch_size` distinct inputs.
    store: where finished batches are kept and found again (eval/resume.BatchStore), or None."""
    inputs: dict[tuple[int, ...], list[tuple[int, list[int], int]]] = {}  # input -> [(request, target, n_cont)]
    for i, (context, continuation) in enumerate(requests):
        if not continuation:
            raise ValueError(f"request {i}: empty continuation")
        if not context:
            raise ValueError(f"request {i}: empty context (prepend a BOS/prefix token)")
        if len(continuation) > max_length:
            raise ValueError(f"request {i}: continuation of {len(continuation)} tokens exceeds "
                             f"max_length={max_length}")
        seq = (list(context) + list(continuation))[-(max_length + 1):]
        inputs.setdefault(tuple(seq[:-1]), []).append((i, seq[1:], len(continuation)))
    # Longest first: the first batch shows the peak memory and the time estimate is an upper bound.
    rows = sorted(inputs.items(), key=lambda r: -len(r[0]))
    sharing = max(len(users) for _, users in rows)  # requests per input: one compiled shape per run
    results: list[LoglikResult | None] = [None] * len(requests)
    with tqdm(total=len(requests), desc=desc, unit="req", disable=not progress) as bar:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            ids = [index for _, users in chunk for index, _, _ in users]
            n_conts = [n_cont for _, users in chunk for _, _, n_cont in users]
            saved = store.load(start) if store is not None else None
            if saved is not None and saved["rows"] == ids:  # scored by an interrupted run of this command
                for index, logprob, greedy, n_cont in zip(ids, saved["logprob"], saved["greedy"], n_conts):
                    results[index] = LoglikResult(logprob, greedy, n_cont)
                bar.update(len(ids))
                continue
            length = bucket_length(len(chunk[0][0]), max_length)
            tokens = np.full((batch_size, length), pad_id, np.int32)
            targets = np.zeros((batch_size, sharing, length), np.int32)
            mask = np.zeros((batch_size, sharing, length), bool)
            for b, (inp, users) in enumerate(chunk):
                tokens[b, :len(inp)] = inp
                for k, (_, tgt, n_cont) in enumerate(users):
                    targets[b, k, :len(tgt)] = tgt
                    mask[b, k, len(tgt) - n_cont:len(tgt)] = True
            total, greedy = _continuation_stats(logits_fn(tokens), jnp.asarray(targets), jnp.asarray(mask))
            total, greedy = np.asarray(total), np.asarray(greedy)
            for b, (_, users) in enumerate(chunk):
                for k, (index, _, n_cont) in enumerate(users):
                    results[index] = LoglikResult(float(total[b, k]), bool(greedy[b, k]), n_cont)
            if store is not None:
                store.save(start, {"rows": ids, "logprob": [results[i].logprob for i in ids],
                                   "greedy": [results[i].is_greedy for i in ids]})
            bar.update(len(ids))
    return results  # type: ignore[return-value]


def encode_pair(encode: Callable[[str], list[int]], context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) the lm-eval way: trailing context whitespace moves to the
    continuation, the pair is encoded whole and split where the context's own encoding ends."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(context + continuation)
    context_ids = encode(context)
    return context_ids, whole[len(context_ids):]


def score_choices(logits_fn: LogitsFn, encode: Callable[[str], list[int]], prompts: Sequence[str],
                  candidates: Sequence[Sequence[str]], *, max_length: int, batch_size: int = 8,
                  length_normalize: bool = False, pad_id: int = 0, progress: bool = True,
                  store=None) -> list[int]:
    """Index of the most likely candidate continuation (" " + candidate) for each prompt.

    length_normalize divides each candidate's log-likelihood by its token count, so long options are not
    penalised for their length.
    """
    requests, owners = [], []
    for p, (prompt, cands) in enumerate(zip(prompts, candidates)):
        for c in cands:
            requests.append(encode_pair(encode, prompt, " " + c.strip()))
            owners.append(p)
    scores = loglikelihoods(logits_fn, requests, max_length=max_length, batch_size=batch_size, pad_id=pad_id,
                            progress=progress, desc="scoring choices", store=store)
    best: list[tuple[float, int]] = [(-np.inf, -1)] * len(prompts)
    counters = [0] * len(prompts)
    for owner, res in zip(owners, scores):
        value = res.logprob / res.num_tokens if length_normalize else res.logprob
        if value > best[owner][0]:
            best[owner] = (value, counters[owner])
        counters[owner] += 1
    return [b[1] for b in best]
