"""The TFDS builder of a prepared corpus: one config per mixture component, splits train / heldout.

Layout: `<out_dir>/mellama_corpus/<component>/1.0.0/mellama_corpus-{train,heldout}.array_record-*`, with
TFDS's dataset_info.json / features.json, so `tfds.data_source("mellama_corpus/<component>",
data_dir=out_dir, split="train")` reads it without TensorFlow and without importing this module.
Each example is {"tokens": int32[n], "source": "path:line"} — the document's ids without BOS/EOS (the loader
adds them) and the record it came from.

Examples come from `prepare.py`'s multiprocessing pool (the local runner; TFDS writes the shards). With Apache
Beam the workers write the shards themselves (shards_beam.py) and `write_info` adds the same metadata.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

VERSION = "1.0.0"
DATASET = "mellama_corpus"


def features() -> tfds.features.FeaturesDict:
    # source: the raw record the document came from ("path:line"); its metadata (PMID, note id, ...)
    # is in <out_dir>/documents/ (prepare.py), so every training document can be traced back.
    return tfds.features.FeaturesDict({"tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                                       "source": tfds.features.Text()})


def shard_name(split: str, index: int, count: int) -> str:
    """TFDS's default shard file name (`{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}`)."""
    return f"{DATASET}-{split}.array_record-{index:05d}-of-{count:05d}"


def write_info(data_dir: str, component: str, shards: dict[str, list[tuple[int, int]]]) -> None:
    """Write dataset_info.json / features.json for shards written elsewhere (Beam workers), as TFDS's own writer
    would: `shards` maps each split to its shards' (documents, bytes) in shard order."""
    builder = MellamaCorpus(data_dir=data_dir, file_format="array_record",
                            config=tfds.core.BuilderConfig(name=component, version=tfds.core.Version(VERSION)))
    template = tfds.core.ShardedFileTemplate(data_dir=builder.data_path, dataset_name=DATASET,
                                             filetype_suffix="array_record")
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=split, shard_lengths=[n for n, _ in lst], num_bytes=sum(b for _, b in lst),
                            filename_template=template.replace(split=split))
        for split, lst in shards.items()]))
    builder.info.write_to_directory(builder.data_path)


class MellamaCorpus(tfds.core.GeneratorBasedBuilder):
    """Tokenized Me-LLaMA corpus component (see module doc)."""

    VERSION = tfds.core.Version(VERSION)
    # Nothing is downloaded. Without these, TFDS looks for a checksums file next to this module through
    # `importlib_resources`, which tfds 4.9.10 only installs for Python < 3.9.
    url_infos = None
    code_path = None

    def __init__(self, *, plan=None, **kwargs):
        # plan: prepare.ComponentPlan — the units to tokenize per split and how to run them.
        self._plan = plan
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Documents of one Me-LLaMA corpus component, tokenized with a LLaMA-2 sentencepiece model.",
            features=features(),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        if self._plan is None:
            raise RuntimeError("MellamaCorpus is prepared by mellama_jax.data.prepare.prepare_corpus")
        return {split: self._generate_examples(split) for split in self._plan.splits}

    def _generate_examples(self, split):
        return self._plan.generate(split)

    # TFDS prints "Downloading and preparing dataset …" and "… downloaded and prepared" to stdout; nothing is
    # downloaded here and prepare_corpus reports progress itself, so those lines would only mislead.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass
