"""BARTScore of summaries as Me-LLaMA's scorer computes it (vital_measure.py VM:496-501), offline only.

The reference builds neulab/BARTScore's `BARTScorer(checkpoint="facebook/bart-large-cnn")`, loads the
paraphrase-finetuned weights `bart_score.pth` into it, and reports the mean of `score(srcs=predictions,
tgts=references, batch_size=8)`. A BARTScore is the mean log-likelihood of the reference's tokens given the
prediction: both sides tokenized with the BART tokenizer (at most 1024 tokens, padded per batch), the model's
log-softmax NLL summed over the reference's non-pad tokens and divided by their count, negated. BARTScore is
not a package on PyPI, so that definition is written here with transformers (the library its code uses) and
checked against transformers' own loss in tests/test_eval_summary_scores.py.

`--bartscore_model DIR` is a local copy of bart-large-cnn (nothing is downloaded); `--bartscore_weights PTH`
the `bart_score.pth` state dict the reference loads (read with `torch.load(weights_only=True)`). Without the
model BARTScore is not computed and the report says so. torch and transformers are optional (the
`bertscore` extra), imported on first use.
"""
from __future__ import annotations

import functools
import os
from typing import Sequence

MAX_LENGTH = 1024  # BARTScorer's max_length
BATCH_SIZE = 8  # VM:500


def _torch_transformers():
    try:
        import torch  # noqa: PLC0415 - optional and slow: only summaries with --bartscore_model need it
        import transformers  # noqa: PLC0415 - same
    except ImportError as e:
        raise ImportError("BARTScore needs torch and transformers: pip install 'mellama_jax[bertscore]'") from e
    return torch, transformers


@functools.lru_cache(maxsize=1)
def _model(model_dir: str, weights: str | None):
    torch, transformers = _torch_transformers()
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"--bartscore_model {model_dir}: not a directory; give a local copy of "
                                "facebook/bart-large-cnn (nothing is downloaded)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = transformers.BartTokenizer.from_pretrained(model_dir)
    model = transformers.BartForConditionalGeneration.from_pretrained(model_dir)
    if weights is not None:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"--bartscore_weights {weights}: no such file")
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return tokenizer, model.eval().to(device), device


def bartscore(predictions: Sequence[str], references: Sequence[str], model_dir: str,
              weights: str | None = None) -> float:
    """Mean BARTScore (srcs = predictions, tgts = references), BARTScorer.score's computation."""
    if not predictions:
        return 0.0
    torch, _ = _torch_transformers()
    tokenizer, model, device = _model(model_dir, weights)
    nll = torch.nn.NLLLoss(reduction="none", ignore_index=model.config.pad_token_id)
    scores: list[float] = []
    for i in range(0, len(predictions), BATCH_SIZE):
        src = tokenizer(list(predictions[i:i + BATCH_SIZE]), max_length=MAX_LENGTH, truncation=True, padding=True,
                        return_tensors="pt")
        tgt = tokenizer(list(references[i:i + BATCH_SIZE]), max_length=MAX_LENGTH, truncation=True, padding=True,
                        return_tensors="pt")
        labels = tgt["input_ids"].to(device)
        with torch.no_grad():
            logits = model(input_ids=src["input_ids"].to(device), attention_mask=src["attention_mask"].to(device),
                           labels=labels).logits
        loss = nll(torch.log_softmax(logits.reshape(-1, logits.shape[-1]), dim=1), labels.reshape(-1))
        per_example = loss.reshape(labels.shape[0], -1).sum(dim=1) / tgt["attention_mask"].sum(dim=1).to(device)
        scores += [-float(x) for x in per_example]
    return sum(scores) / len(scores)
