"""lm-evaluation-harness backend for mellama_jax models (registered as "mellama_jax").

    mellama-lm-eval run --model mellama_jax --model_args pretrained=PATH --batch_size 8 --tasks pubmedqa,medmcqa

(mellama_jax/commands/lm_eval.py: lm-eval's own command line with this module imported), or from Python:

    import lm_eval
    from mellama_jax.eval.lm_eval_adapter import MellamaJaxLM
    lm_eval.simple_evaluate(model=MellamaJaxLM(pretrained=PATH), tasks=["pubmedqa"])

Requests are handled the way lm-eval's own HF backend (`HFLM`) handles them, so scores on the same
weights and tokenizer match: contexts and continuations are tokenized with the model's sentencepiece
tokenizer (BOS added, like LLaMA's HF tokenizer), an empty context is replaced by the BOS token, rolling
log-likelihoods use lm-eval's disjoint windows with BOS as the prefix token, and generation is greedy
unless the task asks to sample, cut at the task's stop strings. The forward pass is our jitted model
(`Model.logits`), the decoding loop `Model.generate`.

The shipped MIBE tasks (configs/lm_eval/*.yaml) read their test set through `mibe_dataset`, from the
directory given by `--metadata '{"data_dir": "DIR"}'` (lm-eval's task metadata), else the environment
variable MELLAMA_MIBE_DATA, else the demo's data (runs/demo/prepare/data/eval after `make demo`), relative to
the working directory. DIR is laid out as for `mellama-evaluate --data_dir` (JSONL, parquet or
save_to_disk sets, local or gs://).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm.auto import tqdm

from mellama_jax.api import load
from mellama_jax.data.templates import get_template, render_example, render_prompt
from mellama_jax.eval import scoring
from mellama_jax.eval.records import find_task_file, iter_records

log = logging.getLogger(__name__)

DATA_ENV = "MELLAMA_MIBE_DATA"  # where the shipped lm-eval tasks find the MIBE test sets
DEMO_DATA = os.path.join("runs", "demo", "prepare", "data", "eval")


class MibeDataError(ValueError):
    """The MIBE test set of an lm-eval task is not where it was looked for (names where and how to set it)."""


def mibe_dataset(task: str = "medqa", data_dir: str | None = None, **_metadata):
    """The MIBE test set of `task` as a datasets.DatasetDict {"test": query/choices/gold rows}: lm-eval's
    `custom_dataset` hook (the YAML's dataset_kwargs and lm-eval's --metadata arrive as keywords)."""
    import datasets  # noqa: PLC0415 - lm-eval's own dependency, needed only here

    source = "--metadata data_dir" if data_dir else (f"${DATA_ENV}" if os.environ.get(DATA_ENV) else "the default")
    data_dir = data_dir or os.environ.get(DATA_ENV) or DEMO_DATA
    try:
        path = find_task_file(data_dir, task)
    except FileNotFoundError as e:
        raise MibeDataError(f"lm-eval task mibe_{task}: no test set in {data_dir!r} ({source}; {e}). Pass "
                            f"--metadata '{{\"data_dir\": \"DIR\"}}' or set {DATA_ENV}=DIR, DIR holding "
                            f"{task}.jsonl (or its parquet / save_to_disk form)") from None
    rows = [{"query": r.query, "choices": list(r.choices), "gold": r.gold} for r in iter_records(path)]
    log.info("mibe_%s: %d records from %s", task, len(rows), path)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


@register_model("mellama_jax")
class MellamaJaxLM(TemplateLM):
    backend = "causal"

    def __init__(self, pretrained: str | None = None, model: Any = None, batch_size: int | str = 8,
                 max_length: int | None = None, max_gen_toks: int = 256, add_bos_token: bool = True,
                 dtype: str | None = None, seed: int = 0, chat_template: str = "llama2_chat", **ignored):
        """pretrained: a path `mellama_jax.load` opens; or pass an already loaded `model`.

        chat_template: the named template (mellama_jax/data/templates.py) used when lm-eval is run with
        --apply_chat_template.

        lm-eval passes `device` / `max_batch_size` to every backend; JAX places arrays itself, so they are
        ignored. batch_size "auto" falls back to 8.
        """
        super().__init__()
        if ignored:
            log.debug("mellama_jax adapter ignores %s", sorted(ignored))
        if model is None:
            if pretrained is None:
                raise ValueError("MellamaJaxLM needs pretrained=PATH or model=<loaded mellama_jax Model>")
            model = load(pretrained, dtype=dtype)
        if model.tokenizer is None:
            raise ValueError(f"{pretrained or 'model'}: no tokenizer (tokenizer.model) found next to the weights; "
                             "lm-eval needs one to turn requests into tokens")
        self.model = model
        self.tokenizer = model.tokenizer
        self._batch_size = 8 if str(batch_size).startswith("auto") else int(batch_size)
        self._max_length = int(max_length) if max_length else int(model.config.max_position_embeddings)
        self._max_gen_toks = int(max_gen_toks)
        self.add_bos_token = _as_bool(add_bos_token)
        self.seed = int(seed)
        self._chat_template = get_template(chat_template).name

    # ------------------------------------------------------------------ properties lm-eval reads
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.tokenizer.bos_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "model_path", "mellama_jax")).replace("/", "__")

    # ------------------------------------------------------------------ chat templates
    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The template's name; lm-eval only uses it to fingerprint its request cache."""
        return self._chat_template if chat_template else None

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render lm-eval's messages with the named template, as SFT data is rendered.

        A system message goes into the template's system slot; earlier user/assistant pairs (few-shot
        as multi-turn) are rendered as complete examples one after another, the last user message as the
        prompt — the text `templates.hf_chat_template` renders for the exported HF tokenizer, without the
        BOS/EOS around each turn (those are ids, not text, for our tokenizer).
        """
        name = self._chat_template
        system = None
        messages = list(chat_history)
        if messages and messages[0]["role"] == "system":
            system = messages.pop(0)["content"]
        parts, pending = [], None
        for message in messages:
            if message["role"] == "user":
                if pending is not None:
                    parts.append(render_prompt(name, pending, system=system if not parts else None))
                pending = message["content"]
            elif message["role"] == "assistant":
                if pending is None:
                    raise ValueError("an assistant message must follow a user message")
                parts.append(render_example(name, pending, message["content"], system=system if not parts else None))
                pending = None
        if pending is not None:
            parts.append(render_prompt(name, pending, system=system if not parts else None))
        return "".join(parts)

    # ------------------------------------------------------------------ tokens
    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs) -> list[int]:
        bos = self.add_bos_token if add_special_tokens is None else bool(add_special_tokens)
        ids = self.tokenizer.encode(string, bos=bos)
        if left_truncate_len:
            ids = ids[-left_truncate_len:]
        return ids

    def tok_decode(self, ids) -> str:
        return self.tokenizer.decode(ids)

    # ------------------------------------------------------------------ log-likelihood
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        scored = scoring.loglikelihoods(self.model.logits, [(ctx, cont) for _, ctx, cont in requests],
                                        max_length=self.max_length, batch_size=self.batch_size,
                                        pad_id=getattr(self.tokenizer, "pad_id", 0), progress=not disable_tqdm,
                                        desc="loglikelihood requests")
        out = []
        for (request_str, _, _), r in zip(requests, scored):
            answer = (r.logprob, r.is_greedy)
            if request_str is not None:
                self.cache_hook.add_partial("loglikelihood", request_str, answer)
            out.append(answer)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            token_windows = lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)
            for window in map(lm_utils.make_disjoint_window, token_windows):
                windows.append((None, window[0], window[1]))
                owners.append(i)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, scores):
            totals[owner] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        # Requests with the same generation settings decode together, longest prompt first.
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        with tqdm(total=len(requests), desc="generate_until requests", disable=disable_tqdm) as bar:
            for indices in groups.values():
                gen_kwargs = dict(requests[indices[0]].args[1])
                kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
                until = handle_stop_sequences(kwargs.pop("until", None), eos=None)
                max_gen_toks = int(kwargs.pop("max_gen_toks"))
                if max_gen_toks >= self.max_length:
                    raise ValueError(f"max_gen_toks={max_gen_toks} leaves no room for the prompt in "
                                     f"max_length={self.max_length}")
                sampling = dict(temperature=float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0,
                                top_k=int(kwargs.get("top_k") or 0), top_p=float(kwargs.get("top_p") or 1.0))
                contexts = {i: self.tok_encode(requests[i].args[0], left_truncate_len=self.max_length - max_gen_toks)
                            for i in indices}
                order = sorted(indices, key=lambda i: -len(contexts[i]))
                for start in range(0, len(order), self.batch_size):
                    rows = order[start:start + self.batch_size]
                    new_tokens = self.model.generate([contexts[i] for i in rows], max_new_tokens=max_gen_toks,
                                                     eos_id=self.eot_token_id, seed=self.seed, **sampling)
                    for i, ids in zip(rows, new_tokens):
                        ids = list(ids)
                        if self.eot_token_id in ids:
                            ids = ids[:ids.index(self.eot_token_id)]
                        text = postprocess_generated_text(self.tok_decode(ids), until, None)
                        results[i] = text
                        self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    bar.update(len(rows))
        return results  # type: ignore[return-value]


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)

