"""The staged Me-LLaMA driver: prepare → convert → pretrain → instruct → evaluate → export → report.

Each stage writes into `<workdir>/<stage>/` and is skipped once complete (stages.py). Training stages
resume from their own orbax checkpoints, so interrupting the driver anywhere (Ctrl-C, kill, preemption)
and running the same command again continues where it stopped.

One driver, two kinds of data (`data.source` of the recipe config):
* "corpus" — the real recipe (configs/me_llama/recipe_13b.py): the mixture's sources are the distributed
  files under `data.root` (local or gs://: PubMed XML, PMC JATS, MIMIC CSVs, ...), the tokenizer is the base
  model's, the base weights (`init_from`, an HF LLaMA-2 directory) are converted once by the convert stage.
* "demo" — configs/demo.py: the prepare stage writes the synthetic demo corpus and trains a small tokenizer.
`dry_run_lines` checks the inputs and prints the command of every stage without running anything.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
from typing import Any, Iterable, Iterator

import ml_collections

import mellama_jax
from mellama_jax import paths
from mellama_jax.checkpoints import model_dir
from mellama_jax.checkpoints.export import export_model_checkpoint
from mellama_jax.config import ConfigError
from mellama_jax.convert import export, hf
from mellama_jax.convert.peft import export_peft
from mellama_jax.data.hf_tokenizer import save_hf_tokenizer
from mellama_jax.data.prepare import prepare_corpus
from mellama_jax.data.tokenizer import Tokenizer, train_tokenizer
from mellama_jax.demo import corpus as demo
from mellama_jax.eval.report import write_report
from mellama_jax.eval.runner import EvalConfig, evaluate
from mellama_jax.recipe.commands import EVALUATED, evaluate_command
from mellama_jax.recipe.report import write_recipe_report
from mellama_jax.recipe.stages import Stage, is_done, read_summary, run_stages, stage_dir
from mellama_jax.train.config import TrainConfig
from mellama_jax.train.init_from import adopt_init_from, source_tokenizer
from mellama_jax.train.loop import check_workdir, train

log = logging.getLogger(__name__)

DATA_PLACEHOLDER = "<data>"


def _substitute(value: Any, root: str) -> Any:
    """Replace the data placeholder in every string of a (nested) config value."""
    if isinstance(value, str):
        return value.replace(DATA_PLACEHOLDER, root)
    if isinstance(value, dict):
        return {k: _substitute(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_substitute(v, root) for v in value)
    return value


class Recipe:
    def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, command: str = "",
                 explicit: Iterable[str] = ()):
        """explicit: the config keys given on the command line (`init_from` does not override those)."""
        self.c = config
        self.workdir = paths.as_str(workdir, what="--workdir")
        self.command = command
        self.explicit = frozenset(explicit)
        check_workdir(self.workdir)

    # ------------------------------------------------------------------ paths
    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

    @property
    def source(self) -> str:
        source = self.c.data.get("source", "demo")
        if source not in ("demo", "corpus"):
            raise ConfigError(f"--config.data.source={source!r}: expected 'corpus' (the sources under data.root) "
                              f"or 'demo' (the synthetic demo corpus)")
        return source

    @property
    def data_root(self) -> str:
        """Where the mixture's "<data>" paths point: the real sources, or the demo corpus the prepare stage writes."""
        if self.source == "corpus":
            if not self.c.data.get("root"):
                raise ConfigError("--config.data.root: required with data.source='corpus' (the directory or gs:// "
                                  "prefix holding the corpus sources)")
            return self.c.data.root
        return self.path("prepare", "data")

    @property
    def tokenizer_dir(self) -> str:
        return self.path("prepare", "tokenizer")

    def mixture(self) -> ml_collections.ConfigDict:
        mix = _substitute(self.c.mixture.to_dict(), self.data_root)
        if self.c.data.prepare_shards:
            mix["prepared_dir"] = self.path("prepare", "shards")
        return ml_collections.ConfigDict(mix)

    def stages(self) -> list[Stage]:
        # inputs: the config a stage reads; a change re-runs the stage and every stage after it. A plain JSON copy:
        # `to_dict()` keeps the ConfigDicts inside lists (mixture components) shared with the live config, so a
        # stage changing them would change a later stage's key, and json.dumps would see them only as str().
        c = json.loads(self.c.to_json_best_effort(sort_keys=True))
        what = "demo corpus, tokenizer, ArrayRecord shards" if self.source == "demo" else \
            "corpus sources -> deduplicated, decontaminated ArrayRecord shards"
        return [
            Stage("prepare", self.prepare, what, inputs={k: c[k] for k in ("data", "mixture", "seed", "init_from")}),
            Stage("convert", self.convert, "base weights (init_from) -> model checkpoint",
                  inputs={"init_from": c["init_from"]}),
            Stage("pretrain", self.pretrain, "continual pretraining on the 15:1:4 mixture",
                  inputs={k: c[k] for k in ("pretrain", "seed")}),
            Stage("instruct", self.instruct, "LoRA instruction tuning", inputs={k: c[k] for k in ("instruct", "seed")}),
            Stage("evaluate", self.evaluate, "medical benchmark, base vs instruction-tuned", inputs=c["evaluate"]),
            Stage("export", self.export, "Hugging Face (merged) + PEFT export", inputs=c["export"]),
            Stage("report", self.report, "report.md with loss curves, mixture, evaluation, throughput"),
        ]

    def run(self, only: tuple[str, ...] = (), force: str | None = None) -> dict:
        paths.resolve(self.workdir).mkdir(parents=True, exist_ok=True)
        paths.resolve(self.path("recipe_config.json")).write_text(json.dumps(self.c.to_dict(), indent=2, default=str))
        return run_stages(self.workdir, self.stages(), only=only, force=force)

    # ------------------------------------------------------------------ stages
    def prepare(self, d: str) -> dict:

        # A rerun after an interruption starts the stage over: clear whatever it left half-written.
        for sub in ("data", "tokenizer", "shards"):
            paths.remove_tree(os.path.join(d, sub))
        tokenizer = self.c.data.tokenizer or (source_tokenizer(self.c.init_from) if self.c.init_from else None)
        if self.c.init_from and not tokenizer:
            raise ConfigError(f"init_from={self.c.init_from}: no tokenizer.model there; pass the model's tokenizer "
                              f"with --config.data.tokenizer=PATH")
        if self.source == "corpus" and not tokenizer:
            raise ConfigError("data.source='corpus' needs the base model's tokenizer: set --config.init_from=DIR "
                              "(with tokenizer.model) or --config.data.tokenizer=PATH")
        with _written_to(self.tokenizer_dir) as tokenizer_dir:
            files, tok = {}, Tokenizer.load(tokenizer) if tokenizer else None
            if self.source == "demo":
                with _written_to(self.data_root) as data_root:
                    files = demo.write_demo_data(data_root, seed=self.c.seed, scale=self.c.data.demo_scale)
                    if tok is None:  # trained on the demo texts while they are still on local disk (gs:// workdirs)
                        tok = train_tokenizer(demo.demo_texts(data_root), tokenizer_dir,
                                              vocab_size=self.c.data.vocab_size)
            save_hf_tokenizer(tok, tokenizer_dir)
        summary: dict = {"data_root": self.data_root, "tokenizer": self.tokenizer_dir,
                         "vocab_size": tok.vocab_size, "files": sorted(files)}
        if self.c.data.prepare_shards:
            mix = self.mixture()
            mix.prepared_dir = None  # prepare reads the raw sources
            corpus = prepare_corpus(mix, tok, self.path("prepare", "shards"), workers=self.c.data.workers,
                                    overwrite=True)
            summary["corpus"] = corpus
        return summary

    def _train_config(self, name: str, *, data_kind: str, init_from: str):
        """The stage's training config; with init_from, the model follows that checkpoint's architecture
        except where `--config.<stage>.model.*` was given. Also written as `<stage>/config.py`, the file the
        report's `python -m mellama_jax.train` command reads."""
        cd = ml_collections.ConfigDict(self.c[name].to_dict())
        cd.data.kind = data_kind
        cd.data.tokenizer = os.path.join(self.tokenizer_dir, "tokenizer.model")
        cd.data.mixture = self.mixture()
        cd.init_from = init_from
        cd.train.seed = self.c.seed
        explicit = {k.removeprefix(f"{name}.") for k in self.explicit if k.startswith(f"{name}.")}
        cd = adopt_init_from(cd, explicit=explicit | {"data.tokenizer"})
        write_config_file(self.path(name), cd)
        return TrainConfig.from_config_dict(cd)

    def convert(self, d: str) -> dict:
        """init_from as a model checkpoint: an HF directory is converted (streaming) once; a model checkpoint is
        used where it is; without init_from pretraining starts from random weights."""
        src = self.c.init_from
        if not src or model_dir.is_model_checkpoint(src):
            return {"base": src}
        out = os.path.join(d, "base")
        hf.convert_hf_to_checkpoint(src, out, scan_layers=True, overwrite=True)
        return {"base": out}

    def stage_commands(self) -> dict[str, list[str]]:
        """Each stage's command: this recipe run up to that stage (the earlier ones are complete by then), then
        the standalone command the stage amounts to (what a pod's hosts run for the training stages)."""
        q = lambda *a: " ".join(shlex.quote(str(x)) for x in a)
        recipe = command_line(recipe_only=True)
        same = {"convert": [q("mellama-convert-hf", "--hf_dir", self.c.init_from, "--out_dir",
                              self.path("convert", "base"))] if self.c.init_from else [],
                "evaluate": [evaluate_command(self, name, self.path("evaluate", name)) for name in EVALUATED],
                "export": [q("mellama-convert-jax", "--ckpt_dir", self.path("instruct", "model"), "--out_dir",
                             self.path("export", "hf_merged"), "--merge_lora")]}
        for name in ("pretrain", "instruct"):  # the stage writes <stage>/config.py, then trains with it
            same[name] = [q("mellama-train", "--config", self.path(name, CONFIG_FILE), "--workdir",
                            self.path(name, "run"))]
        return {stage.name: [f"{recipe} --stages {stage.name}"] + [f"  same as: {c}" for c in same.get(stage.name, [])]
                for stage in self.stages()}

    def dry_run_lines(self) -> list[str]:
        """Check what the recipe reads (base weights, tokenizer, corpus sources, evaluation data) and list every
        stage with its command; nothing is run or written."""
        problems = []
        if self.c.init_from and not paths.resolve(self.c.init_from).exists():
            problems.append(f"--config.init_from={self.c.init_from}: no such directory")
        if self.c.data.tokenizer and not paths.resolve(self.c.data.tokenizer).exists():
            problems.append(f"--config.data.tokenizer={self.c.data.tokenizer}: no such file")
        if self.source == "corpus":
            for i, comp in enumerate(self.mixture().to_dict()["components"]):
                for j, src in enumerate(comp["sources"]):
                    if not paths.glob(src["path"]):
                        problems.append(f"mixture.components[{i}].sources[{j}] ({comp['name']}): no file matches "
                                        f"{src['path']}")
            if self.c.evaluate.data_dir and not paths.resolve(self.data_path(self.c.evaluate.data_dir)).is_dir():
                problems.append(f"--config.evaluate.data_dir={self.c.evaluate.data_dir}: no such directory")
        if problems:
            raise ConfigError("; ".join(problems))
        lines = [f"data: {self.source} ({self.data_root})", f"workdir: {self.workdir}"]
        stages = self.stages()
        commands = self.stage_commands()
        for i, stage in enumerate(stages, 1):
            state = "complete" if is_done(self.workdir, stage.name) else "to run"
            lines.append(f"[{i}/{len(stages)}] {stage.name} ({state}): {stage.description}")
            lines += [f"    {c}" for c in commands[stage.name]]
        return lines

    def data_path(self, value: str) -> str:
        return _substitute(value, self.data_root)

    def _train_and_export(self, name: str, d: str, *, data_kind: str, init_from: str) -> dict:

        cfg = self._train_config(name, data_kind=data_kind, init_from=init_from)
        run_dir = os.path.join(d, "run")
        result = train(cfg, run_dir)
        if result.preempted:
            raise KeyboardInterrupt(f"{run_dir}: preempted at step {result.step}; rerun to resume")
        model_dir = export_model_checkpoint(run_dir, os.path.join(d, "model"), tokenizer_dir=self.tokenizer_dir,
                                            overwrite=True)
        return {"workdir": run_dir, "model": model_dir, "step": result.step,
                "train": _floats(result.train_metrics), "heldout": _floats(result.eval_metrics)}

    def pretrain(self, d: str) -> dict:
        base = read_summary(self.workdir, "convert")["base"]
        return self._train_and_export("pretrain", d, data_kind="mixture", init_from=base)

    def instruct(self, d: str) -> dict:
        base = os.path.join(stage_dir(self.workdir, "pretrain"), "model")
        return self._train_and_export("instruct", d, data_kind="sft", init_from=base)

    def evaluate(self, d: str) -> dict:

        e = self.c.evaluate
        cfg = EvalConfig(tasks=tuple(t for t in e.tasks.split(",") if t),
                         data_dir=self.data_path(e.data_dir) if e.data_dir else os.path.join(self.data_root, "eval"),
                         max_new_tokens=e.max_new_tokens, template=e.template, matching=e.matching,
                         limit=e.limit or None, batch_size=e.batch_size)
        out = {}
        for name, stage in EVALUATED.items():
            model_dir = os.path.join(stage_dir(self.workdir, stage), "model")
            model = mellama_jax.load(model_dir)
            results = evaluate(model, cfg)
            summary = write_report(os.path.join(d, name), results, cfg, model_name=f"{stage}: {model_dir}",
                                   overwrite=True)
            out[name] = summary
        return out

    def export(self, d: str) -> dict:

        x = self.c.export
        tuned = os.path.join(stage_dir(self.workdir, "instruct"), "model")
        base = os.path.join(stage_dir(self.workdir, "pretrain"), "model")
        evals = os.path.join(stage_dir(self.workdir, "evaluate"), "{}", "summary.json")
        merged_dir = export.convert_checkpoint_to_hf(tuned, os.path.join(d, "hf_merged"), dtype=x.dtype,
                                                 max_shard_size=x.max_shard_size, merge_lora=True, overwrite=True,
                                                 eval_dirs=[p for p in [evals.format("tuned")] if _is_file(p)])
        base_dir = export.convert_checkpoint_to_hf(base, os.path.join(d, "hf_base"), dtype=x.dtype,
                                               max_shard_size=x.max_shard_size, overwrite=True,
                                               eval_dirs=[p for p in [evals.format("base")] if _is_file(p)])
        cfg, _, extras = model_dir.load_model_checkpoint(tuned)
        peft_dir = export_peft(os.path.join(d, "peft"), cfg, extras["lora_config"], extras["adapters"],
                               base_model_name_or_path=str(base_dir), overwrite=True)
        summary = {"hf_merged": str(merged_dir), "hf_base": str(base_dir), "peft": str(peft_dir)}
        if x.check_with_transformers:
            summary["transformers_check"] = check_with_transformers(str(merged_dir))
        return summary

    def report(self, d: str) -> dict:
        path = write_recipe_report(self)
        return {"report": path}


@contextlib.contextmanager
def _written_to(target: str) -> Iterator[str]:
    """A directory to write `target`'s files into: `target` itself when local; on object storage a local
    temporary directory (the demo corpus, tokenizer training and the HF tokenizer files write local files),
    uploaded to `target` when the block succeeds."""
    if not paths.is_remote(target):
        yield target
        return
    stage = tempfile.mkdtemp(prefix="mellama-recipe-")
    try:
        yield stage
        paths.copy_tree(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _is_file(path: str) -> bool:
    return paths.resolve(path).is_file()


def _floats(metrics: dict) -> dict:
    out = {}
    for k, v in (metrics or {}).items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def check_with_transformers(hf_dir: str, question: str = "What is the first-line therapy for asthma?") -> dict:
    """Load the export with transformers (if installed) and generate greedily: proof the hand-off works.
    The prompt goes through the export's chat template (the SFT template) when it has one."""
    try:
        import torch  # noqa: PLC0415 - optional reference (the [test] extra)
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - optional reference (the [test] extra)
    except ImportError:
        return {"status": "skipped: transformers/torch not installed (pip install -e .[test])"}
    with paths.local_copy(hf_dir) as local_dir:  # transformers reads local directories
        tok = AutoTokenizer.from_pretrained(local_dir)
        model = AutoModelForCausalLM.from_pretrained(local_dir, dtype=torch.float32).eval()
    if tok.chat_template:
        ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
    else:
        ids = tok(question, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    prompt = tok.decode(ids["input_ids"][0])
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    return {"status": "ok", "prompt": prompt, "generated": text}


CONFIG_FILE = "config.py"
CONFIG_JSON = "config.json"


def write_config_file(stage_dir_: str, cd: ml_collections.ConfigDict) -> str:
    """`<stage>/config.py` (+ config.json): the stage's resolved training config as a config file. The values
    are embedded in config.py itself, so the file works wherever it is copied to (a gs:// workdir's file is
    downloaded before it runs); config.json holds the same values for tools that read JSON."""
    values = json.dumps(cd.to_dict(), indent=2, sort_keys=True)
    paths.resolve(stage_dir_).mkdir(parents=True, exist_ok=True)
    paths.resolve(os.path.join(stage_dir_, CONFIG_JSON)).write_text(values)
    path = os.path.join(stage_dir_, CONFIG_FILE)
    paths.resolve(path).write_text(
        f'"""The training config this recipe stage ran with (written by mellama_jax.recipe)."""\n'
        f"import json\n\nimport ml_collections\n\nVALUES = {values!r}\n\n\ndef get_config():\n"
        f"    return ml_collections.ConfigDict(json.loads(VALUES))\n")
    return path


def command_line(recipe_only: bool = False) -> str:
    """This mellama-recipe command line; recipe_only: without --stages/--force/--dry_run (to add one stage)."""
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if recipe_only and a.split("=")[0] in ("--stages", "--force", "--dry_run", "--nodry_run"):
            skip = "=" not in a and a.split("=")[0] in ("--stages", "--force")
            continue
        args.append(a)
    return " ".join(shlex.quote(a) for a in ["mellama-recipe", *args])
