"""Me-LLaMA's continual-pretraining mixture: biomedical 15 : clinical 1 : general 4 (tokens); docs/sources.md.

biomedical = PubMed Central full texts + PubMed abstracts, clinical = MIMIC-III / MIMIC-IV notes and
MIMIC-CXR reports, general = a RedPajama subset (~129B tokens in all). None of it can be downloaded by
this project (MIMIC needs PhysioNet credentialing): point the paths at your copies as distributed (PubMed
baseline XML, PMC OA .nxml, MIMIC CSVs, MIMIC-CXR files/), run mellama-prepare-corpus once (readers,
dedup, decontamination against the MIBE test files, ArrayRecord shards + token counts; docs/corpus_sources.md),
then train on the prepared corpus: the pod configs (configs/me_llama/pretrain_*.py) read it through
`prepared_mixture()`, attached by flag (--config.data.mixture.prepared_dir=DIR). The instruction data of the
chat configs is attached the same way (`instructions()`).

    mellama-prepare-corpus --data_config configs/data/me_llama_mix.py:/data/me_llama \
        --tokenizer /ckpt/llama2/tokenizer.model --out_dir gs://BUCKET/corpus/me_llama --workers 64
    (or --runner beam --beam_options="--runner=DataflowRunner,..." for the full 129B tokens)
"""
import os

import ml_collections
from ml_collections import config_dict

# The components and their token weights (Me-LLaMA's 15:1:4); the pod configs train on them too.
WEIGHTS = {"biomedical": 15.0, "clinical": 1.0, "general": 4.0}
MIBE_TEST_SETS = ("pubmedqa", "medqa", "medmcqa", "emrqa", "i2b2", "ddi2013", "hoc", "mtsample", "pubmed_sum",
                  "mimic_cxr", "bionli", "mednli")


def get_config(root: str = "/data/me_llama") -> ml_collections.ConfigDict:
    join = lambda *p: os.path.join(root, *p)
    cfg = ml_collections.ConfigDict()
    cfg.components = [
        dict(name="biomedical", weight=WEIGHTS["biomedical"], heldout_fraction=0.0005, sources=[
            # PubMed annual baseline (pubmed25n0001.xml.gz ...) and PMC Open Access JATS articles.
            dict(path=join("pubmed/baseline/pubmed25n*.xml.gz"), format="pubmed_xml"),
            dict(path=join("pmc_oa/**/*.nxml"), format="pmc_jats"),
        ]),
        dict(name="clinical", weight=WEIGHTS["clinical"], heldout_fraction=0.001, sources=[
            # MIMIC-III NOTEEVENTS, MIMIC-IV-Note discharge + radiology (CSV as PhysioNet ships them), MIMIC-CXR
            # reports (files/pNN/p<subject>/s<study>.txt). MIMIC-III placeholders become MIMIC-IV's "___".
            dict(path=join("mimic-iii/NOTEEVENTS.csv.gz"), format="mimic_notes_csv", deid="mask"),
            dict(path=join("mimic-iv-note/note/discharge.csv.gz"), format="mimic_notes_csv"),
            dict(path=join("mimic-iv-note/note/radiology.csv.gz"), format="mimic_notes_csv"),
            dict(path=join("mimic-cxr/files"), format="mimic_cxr_reports"),
        ]),
        dict(name="general", weight=WEIGHTS["general"], heldout_fraction=0.0005, sources=[
            dict(path=join("redpajama_subset/*.jsonl.zst"), text_fields=("text",)),
        ]),
    ]
    # MIMIC-IV radiology and MIMIC-CXR hold the same reports; PubMed abstracts recur across baseline files.
    cfg.dedup = dict(exact=True, near=True, threshold=0.8, num_perm=128, shingle=5, seed=1)
    # The MIBE test files the evaluation reads (eval data_dir/<task>.jsonl): PubMedQA is built from PubMed
    # abstracts, MIMIC-CXR / emrQA / i2b2 from MIMIC-era notes.
    cfg.decontaminate = dict(tasks=[join("eval", f"{t}.jsonl") for t in MIBE_TEST_SETS], n=13, mode="drop",
                             fields=("text", "query"), template_share=0.5)
    cfg.prepared_dir = join("prepared")
    cfg.strict = False
    _reading(cfg)
    return cfg


def _reading(cfg: ml_collections.ConfigDict) -> None:
    """How training reads the mixture (shared by every config built here)."""
    cfg.weight_unit = "tokens"
    # PMC articles are far longer than a 4096-token row: split them into row-sized chunks (counted).
    cfg.overlong = "split"
    cfg.shuffle = True
    cfg.num_packing_bins = 0
    cfg.pack_unit_tokens = 0  # short documents packed in groups of up to seq_len // 6 tokens
    cfg.read_threads = 4
    cfg.prefetch_buffer_size = 256
    cfg.worker_count = 8


def prepared_mixture() -> ml_collections.ConfigDict:
    """The mixture as a pod run reads it: every component from a corpus mellama-prepare-corpus wrote (local or
    gs://), attached by flag, checked by the training command's --dry_run:

        --config.data.mixture.prepared_dir=gs://BUCKET/corpus/me_llama          every component
        --config.data.mixture.components[1].prepared_dir=gs://BUCKET/clinical   one component from another corpus
        --config.data.mixture.components[0].weight=12                           a weight (order: biomedical,
                                                                                clinical, general)
    """
    cfg = ml_collections.ConfigDict()
    cfg.components = [ml_collections.ConfigDict(dict(name=name, weight=weight,
                                                      prepared_dir=config_dict.placeholder(str)))
                      for name, weight in WEIGHTS.items()]
    cfg.prepared_dir = config_dict.placeholder(str)
    _reading(cfg)
    cfg.lock()
    return cfg


def instructions() -> ml_collections.ConfigDict:
    """The instruction-tuning data as a pod run reads it: files of any layout, attached by flag, checked by
    the training command's --dry_run:

        --config.data.mixture.instruct.sources='gs://BUCKET/instructions/*.jsonl'   a path or glob (several
                                                                                    comma-separated; JSONL,
                                                                                    parquet, local or gs://)
    """
    cfg = ml_collections.ConfigDict()
    cfg.instruct = ml_collections.ConfigDict(dict(
        sources=config_dict.placeholder(str), template="me_llama", format="auto", max_prompt_tokens=3500,
        system=config_dict.placeholder(str), heldout_fraction=0.01))
    _reading(cfg)
    cfg.overlong = "truncate"  # a conversation longer than a row keeps its first tokens
    cfg.lock()
    return cfg
