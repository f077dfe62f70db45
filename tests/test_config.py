"""The training config schema: one locked ml_collections mechanism, defaults written once, rules on the config."""
import dataclasses

import pytest
from jax.sharding import PartitionSpec

from mellama_jax import parallel
from mellama_jax.config import ConfigError
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
    ("train.stpes", 5, r"config has no field 'train\.stpes'"),
    ("optimm.learning_rate", 1.0, r"config has no field 'optimm\.learning_rate'"),
    ("train.steps", "many", r"config field 'train\.steps'"),
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
    ("mesh.rules.activation_lenght", "fsdp", "config has no field"),
    ("mesh.rules.activation_length", "fsdp,model", r"mesh\.rules\.activation_length='fsdp,model'"),
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
