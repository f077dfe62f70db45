"""The training config schema: one locked ml_collections mechanism, defaults written once, rules on the config."""
import dataclasses
import re

import pytest
from jax.sharding import PartitionSpec

from mellama_jax import parallel
from mellama_jax.config import ConfigError
from mellama_jax.config_groups import FieldError, typed
from mellama_jax.parallel.rules import LOGICAL_AXIS_RULES, logical_to_spec
from mellama_jax.train.config import CheckpointConfig, LogConfig, LoopConfig, OptimConfig, TrainConfig, apply_overrides, default_config
from mellama_jax.train.loop import build_engine


def small(**overrides):
    c = default_config()
    apply_overrides(c, {"train.seq_len": 32, "train.global_batch_size": 8, "log.progress_bar": False, **overrides})
    return c


def test_defaults_are_the_typed_views_defaults():
    c = default_config()
    for group, view in (("optim", OptimConfig()), ("checkpoint", CheckpointConfig()), ("log", LogConfig())):
        assert c[group].to_dict() == dataclasses.asdict(view)
    assert {k: c.train[k] for k in ("steps", "seq_len", "micro_batches")} == \
        {k: getattr(LoopConfig(), k) for k in ("steps", "seq_len", "micro_batches")}
    assert c.model.pad_token_id is None  # an optional field (placeholder), no stand-in value
    assert TrainConfig.from_config_dict(small()).model.pad_token_id is None


def test_a_typo_in_a_config_file_fails_at_the_assignment():
    c = default_config()
    with pytest.raises(AttributeError, match="stpes"):
        c.train.stpes = 5
    with pytest.raises(AttributeError, match="hiden_size"):
        c.model.hiden_size = 5
    c.data.mixture.components = {"bio": 1.0}  # the data package's own group stays open


@pytest.mark.parametrize("key, value, message", [
    ("train.stpes", 5, r"config\.train\.stpes: no such config field"),
    ("optimm.learning_rate", 1.0, r"config\.optimm\.learning_rate: no such config field"),
    ("train.steps", "many", r"config\.train\.steps='many'"),
])
def test_overrides_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(default_config(), {key: value})


def test_plain_dict_configs_are_checked_too():
    values = small().to_dict()
    values["optim"]["learnig_rate"] = 1.0
    with pytest.raises(ConfigError, match=r"config\.optim\.learnig_rate"):
        TrainConfig.from_config_dict(values)


def test_rules_table_defaults_to_the_module_table():
    assert TrainConfig.from_config_dict(small()).mesh.rules == LOGICAL_AXIS_RULES


@pytest.mark.parametrize("key, value, message", [
    ("mesh.rules.activation_lenght", "fsdp", r"config\.mesh\.rules\.activation_lenght: no such config field"),
    ("mesh.rules.activation_length", "fsdp,model", r"config\.mesh\.rules\.activation_length='fsdp,model'"),
])
def test_bad_rules_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_config_dict(small(**{key: value}))


def test_rules_from_the_config_reach_the_engine_shardings():
    """Sequence sharding and replicated embeddings, set from the config alone, change the compiled layout."""
    default = build_engine(TrainConfig.from_config_dict(small(**{"mesh.fsdp": 8})))
    custom_cfg = TrainConfig.from_config_dict(small(**{"mesh.fsdp": 8, "mesh.rules.embed": "",
                                                       "mesh.rules.activation_length": "fsdp"}))
    custom = build_engine(custom_cfg)
    embed = lambda e: e.layout.shardings.params["embed"]["embedding"].spec
    assert embed(default) == PartitionSpec(None, "fsdp")
    assert embed(custom) == PartitionSpec(None, None)
    # The context is the run's only: outside it, the module table applies again.
    assert logical_to_spec(("embed",)) == PartitionSpec("fsdp")
    with parallel.axis_rules(custom_cfg.mesh.rules):
        assert logical_to_spec(("activation_length",)) == PartitionSpec("fsdp")


# One bad value per config group, each read by config_groups.typed: the error names the field as a flag.
@pytest.mark.parametrize("key, value, problem", [
    ("train.micro_batches", 3, "must divide train.global_batch_size=8"),
    ("train.lora.targets", "q_proj,qkv", r"unknown module name\(s\) \['qkv'\]"),
    ("optim.schedule", "cosin", "expected one of"),
    ("model.num_kv_heads", 3, "must divide num_heads=4"),
    ("mesh.dcn_data", 0, None),  # checked against the devices at make_mesh, not here
    ("eval.batches", 0, "must be >= 1"),
    ("data.kind", "mixture", "not set; data.kind='mixture' needs it"),
])
def test_errors_name_the_flag_that_fixes_them(key, value, problem):
    if problem is None:
        TrainConfig.from_config_dict(small(**{key: value}))
        return
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_config_dict(small(**{key: value}))
    message = str(e.value)
    assert re.search(problem, message), message
    # The message starts with the field's config path (and the value), which a flag can set back.
    path = message.split(":")[0].split("=")[0]
    assert path.startswith("config."), message
    apply_overrides(small(), {path.removeprefix("config."): default_config()[path.removeprefix("config.")]
                              if "tokenizer" not in path else "t.model"})


def test_typed_groups_check_types_and_nesting():
    @dataclasses.dataclass(frozen=True)
    class Inner:
        names: tuple[str, ...] = ()
        limit: float = 1.0

        def __post_init__(self):
            if self.limit < 0:
                raise FieldError(self, "limit", self.limit, "must be >= 0")

    @dataclasses.dataclass(frozen=True)
    class Outer:
        size: int
        inner: Inner = Inner()
        label: str | None = None

    got = typed(Outer, {"size": 2, "inner": {"names": "a, b", "limit": 3}}, "config.x")
    assert got == Outer(2, Inner(("a", "b"), 3.0)) and isinstance(got.inner.limit, float)
    for group, message in (({"size": True}, r"config\.x\.size=True: expected an integer"),
                           ({"size": 1, "inner": {"limit": -1}}, r"config\.x\.inner\.limit=-1\.0: must be >= 0"),
                           ({"size": 1, "inner": {"nmes": "a"}}, r"config\.x\.inner\.nmes: no such config field; "
                                                                 r"config\.x\.inner has limit, names"),
                           ({"size": 1, "label": 5}, r"config\.x\.label=5: expected a string"),
                           ({}, r"config\.x\.size: required, not set")):
        with pytest.raises(ConfigError, match=f"^{message}"):
            typed(Outer, group, "config.x")
