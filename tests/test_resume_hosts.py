"""Resume on another number of hosts: a run whose data came from 2 processes continues on 1 or 4 processes
with exactly the global batch stream it would have had.

Processes are played by their rows of the global batch (what `process_rows` gives each process on a mesh);
each "process" builds its own `ShardedGrainSource` over real grain pipelines on the demo corpus, as the
train loop does. The checkpointed state is the gathered JSON (`ShardedGrainSource.merge_states` over every
process's state; train/batches.py gathers them with jax.distributed, here they are handed over directly).
"""
import json

import numpy as np
import pytest
from data_fixtures import demo_config, make_demo

from mellama_jax.config import ConfigError
from mellama_jax.data.loader import make_pretrain_iterator
from mellama_jax.data.sharded import ShardedGrainSource

B = 8


@pytest.fixture(scope="module")
def make(tmp_path_factory):
    data, tok = make_demo(str(tmp_path_factory.mktemp("hosts")))
    cfg = demo_config(data)
    return lambda shard, shards: make_pretrain_iterator(cfg, tok, seq_len=256, global_batch_size=B, seed=7,
                                                        process_index=shard, process_count=shards)


def hosts(make, count, **kw):
    per = B // count
    return [ShardedGrainSource(make, global_batch_size=B, rows=(p * per, (p + 1) * per), **kw) for p in range(count)]


def global_batches(sources, n):
    """n global batches: the processes' rows concatenated in process order."""
    out = []
    for _ in range(n):
        parts = [next(s) for s in sources]
        out.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    return out


def merged_state(sources):
    state = ShardedGrainSource.merge_states([s.get_state() for s in sources])
    return json.loads(json.dumps(state))  # what the checkpoint's JSON holds


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_two_processes_resume_on_one_and_on_four(make):
    uninterrupted = global_batches(hosts(make, 2, shards=2), 6)
    first = hosts(make, 2, shards=2)
    assert_same(global_batches(first, 3), uninterrupted[:3])
    state = merged_state(first)
    for count in (1, 4):
        resumed = hosts(make, count)  # data.shards=0: the shard count comes from the checkpoint
        for s in resumed:
            s.set_state(state)
        assert all(s.shards == 2 for s in resumed)
        assert_same(global_batches(resumed, 3), uninterrupted[3:])


def test_a_different_configured_shard_count_is_refused(make):
    first = hosts(make, 2, shards=2)
    global_batches(first, 1)
    resumed = hosts(make, 1, configured=4)
    with pytest.raises(ConfigError, match="data.shards=4, but the checkpoint's data order has 2 shards"):
        resumed[0].set_state(merged_state(first))


def test_shard_count_must_divide_the_batch(make):
    with pytest.raises(ConfigError, match="data.shards=3 must divide train.global_batch_size=8"):
        hosts(make, 1, shards=3)
