"""`generate`: token-id prompts in, new token ids out, on one device or a mesh."""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from mellama_jax.config import ModelConfig
from mellama_jax.generate.batching import bucket_batch, bucket_prompt_length, left_pad, validate_prompts
from mellama_jax.generate.decode import DecodeOutput, DecodeSpec, decode_fn, is_scanned, shard_params
from mellama_jax.generate.sampling import SamplingParams
from mellama_jax.generate.stops import pack_stop_sequences, trim_rows
from mellama_jax.model.lora import LoraConfig
from mellama_jax.parallel import rules


def generate(cfg: ModelConfig, params: dict, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 256,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
             eos_id: Optional[int] = None, stop_sequences: Sequence[Sequence[int]] = (), mesh=None,
             lora: Optional[LoraConfig] = None, adapters: Optional[dict] = None,
             batch_size: Optional[int] = None, pad_id: int = 0) -> list[list[int]]:
    """Continue each prompt; returns only the new tokens of each, without the EOS / stop sequence that ended it.

    prompts: token-id lists of any lengths (BOS included if the model expects it).
    temperature 0 is greedy; otherwise top_k (0 = off) and top_p (1 = off) filter before sampling with
    `seed`. eos_id defaults to cfg.eos_token_id; a negative value disables EOS. Each row stops on its own.
    params: scanned or unscanned tree (a scanned one is split per layer inside the compiled function).
    mesh: shard batch over data and heads over tensor (parallel.rules); params are placed on it.
    lora/adapters: a LoRA config and its "lora" tree, applied on top of params.
    batch_size: decode at most this many prompts at once (prompts are grouped by length, so fewer pad
    tokens are computed; results come back in the original order). Default: all prompts in one batch.
    """
    prompts = validate_prompts(prompts, cfg.vocab_size)
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if (lora is None) != (adapters is None):
        raise ValueError("pass both lora (LoraConfig) and adapters (the 'lora' tree), or neither")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    sampling = SamplingParams(temperature, top_k, top_p)
    eos = cfg.eos_token_id if eos_id is None else int(eos_id)
    if not prompts or max_new_tokens == 0:
        return [[] for _ in prompts]
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > cfg.max_position_embeddings:
        raise ValueError(f"the longest prompt ({longest} tokens) plus max_new_tokens={max_new_tokens} exceeds "
                         f"max_position_embeddings={cfg.max_position_embeddings}; truncate the prompts")
    stop_ids, stop_lens = pack_stop_sequences(stop_sequences)

    if mesh is not None:
        params, adapters = shard_params(cfg, params, mesh, lora=lora, adapters=adapters)
    multiple = rules.data_parallel_size(mesh) if mesh is not None else 1
    key = jax.random.key(seed)

    # Group by length so each batch pads little; decode groups in order and put results back in place.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i])) if batch_size else list(range(len(prompts)))
    size = batch_size or len(prompts)
    results: list[list[int]] = [[] for _ in prompts]
    for chunk_index, start in enumerate(range(0, len(order), size)):
        rows = order[start:start + size]
        chunk = [prompts[i] for i in rows]
        spec = DecodeSpec(cfg=cfg, batch=bucket_batch(len(chunk), multiple),
                          prompt_len=bucket_prompt_length(max(len(p) for p in chunk)),
                          max_new_tokens=int(max_new_tokens), sampling=sampling,
                          num_stops=stop_ids.shape[0], stop_len=stop_ids.shape[1], lora=lora,
                          scanned_params=is_scanned(params))
        tokens, mask = left_pad(chunk, spec.batch, spec.prompt_len, pad_id)
        if mesh is not None:
            tokens, mask = jax.device_put((tokens, mask), rules.batch_sharding(mesh))
        out = decode_fn(spec, mesh)(params, adapters, tokens, mask, jax.random.fold_in(key, chunk_index),
                                    np.int32(eos), stop_ids, stop_lens)
        out = _to_host(out)
        for row, new_tokens in zip(rows, trim_rows(out.tokens, out.num_tokens, out.drop, len(chunk))):
            results[row] = new_tokens
    return results


def _to_host(out: DecodeOutput) -> DecodeOutput:
    """Fetch the outputs; on several processes the batch is spread over hosts, so gather it first."""
    if all(x.is_fully_addressable for x in out):
        return jax.device_get(out)
    return DecodeOutput(*(np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in out))
