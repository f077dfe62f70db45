"""The one table that maps the model's logical axis names to mesh axes, and the helpers built on it.

The mesh has three axes (mesh.py): `data` (pure data parallelism; spans slices over DCN), `fsdp`
(data parallelism with parameters, gradients and optimizer state sharded, ZeRO-3 style) and `tensor`
(Megatron-style: heads and MLP columns split, activations between blocks replicated).

A logical name may map to several mesh axes (batch over data x fsdp). A mesh axis is dropped from a
dimension it does not divide (e.g. 2 kv heads on tensor=4), so tiny test models and GQA shapes still
shard; `explain_sharding` says where that happened.

LOGICAL_AXIS_RULES is the default table. A run can change single entries through its config
(`mesh.rules.<logical name>="<mesh axes, comma-separated>"`, e.g. `mesh.rules.activation_length=tensor` for
sequence sharding); `axis_rules(table)` makes a table current for everything below (as Flax's
`nn.logical_axis_rules` does for the model's constraints), and every helper here reads the current one.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axes (in order of preference; all that divide are used).
LOGICAL_AXIS_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # parameters
    ("vocab", ("tensor",)),
    ("embed", ("fsdp",)),
    ("mlp", ("tensor",)),
    ("heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("head_dim", ()),
    ("norm", ()),
    ("layers", ()),
    ("lora_rank", ()),
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", ()),
    ("activation_embed", ()),
    ("activation_heads", ("tensor",)),
    ("activation_kv_heads", ("tensor",)),
    ("activation_head_dim", ()),
    ("activation_mlp", ("tensor",)),
    ("activation_vocab", ("tensor",)),
    # KV cache for decoding
    ("cache_batch", ("data", "fsdp")),
    ("cache_kv_heads", ("tensor",)),
    ("cache_length", ()),
    ("cache_head_dim", ()),
)

Rules = tuple[tuple[str, tuple[str, ...]], ...]
_CURRENT: contextvars.ContextVar[Rules] = contextvars.ContextVar("mellama_jax_axis_rules", default=LOGICAL_AXIS_RULES)

# Logical axes of the data-loader batch and of the decode cache.
BATCH_AXES = ("activation_batch", "activation_length")
CACHE_AXES = ("cache_batch", "cache_kv_heads", "cache_length", "cache_head_dim")  # kv-head-major, see init_cache


def rules_as_strings(table: Rules = LOGICAL_AXIS_RULES) -> dict[str, str]:
    """{logical name: "mesh,axes"}: the form of the config group `mesh.rules`."""
    return {name: ",".join(axes) for name, axes in table}


def rules_from_strings(overrides: Mapping[str, str], source: str = "mesh.rules") -> Rules:
    """The default table with the entries of `overrides` ({logical name: "mesh,axes"}, "" = replicated)."""
    table = dict(LOGICAL_AXIS_RULES)
    for name, text in overrides.items():
        if name not in table:
            raise ValueError(f"{source}.{name}: no such logical axis; known: {sorted(table)}")
        axes = tuple(a.strip() for a in str(text).split(",") if a.strip())
        bad = [a for a in axes if a not in MESH_AXES]
        if bad or len(set(axes)) != len(axes):
            raise ValueError(f"{source}.{name}={text!r}: expected distinct mesh axes from {MESH_AXES}, "
                             f"comma-separated (\"\" = replicated)")
        table[name] = axes
    return tuple(table.items())


def current_rules() -> Rules:
    return _CURRENT.get()


@contextlib.contextmanager
def axis_rules(table: Rules):
    """Make `table` the rules of every sharding helper here (and of the model's constraints) inside."""
    token = _CURRENT.set(tuple((name, tuple(axes)) for name, axes in table))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def flax_rules() -> tuple[tuple[str, object], ...]:
    """The current table in the form `nn.logical_axis_rules` expects (one mesh axis, a tuple, or None)."""
    return tuple((name, axes if len(axes) > 1 else (axes[0] if axes else None)) for name, axes in current_rules())


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None) -> PartitionSpec:
    """PartitionSpec for logical `axes`; with shape and mesh, mesh axes that do not divide are dropped."""
    table = dict(current_rules())
    parts, used = [], set()
    for i, name in enumerate(axes):
        if name is None:
            parts.append(None)
            continue
        if name not in table:
            raise KeyError(f"logical axis {name!r} has no rule in mellama_jax.parallel.rules")
        chosen = []
        size = 1
        for mesh_axis in table[name]:
            if mesh_axis in used:
                continue
            if mesh is not None:
                n = mesh.shape[mesh_axis]
                if n == 1:
                    continue
                if shape is not None and shape[i] % (size * n):
                    continue
                size *= n
            chosen.append(mesh_axis)
        used.update(chosen)
        parts.append(tuple(chosen) if len(chosen) > 1 else (chosen[0] if chosen else None))
    return PartitionSpec(*parts)


def named_sharding(mesh: Mesh, axes: Sequence[str | None], shape: Sequence[int] | None = None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, shape, mesh))


def tree_shardings(mesh: Mesh, axes_tree, shapes_tree) -> object:
    """Shardings for a tree of logical axes (tuples at leaves) and a matching tree of shapes/arrays."""
    is_axes = lambda x: isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)
    return jax.tree.map(lambda axes, x: named_sharding(mesh, axes, _shape(x)), axes_tree, shapes_tree,
                        is_leaf=is_axes)


def _shape(x):
    return tuple(x.shape) if hasattr(x, "shape") else tuple(x)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a [batch, length, ...] input batch: batch over data x fsdp (ndim=1: a per-row [batch] field)."""
    spec = tuple(logical_to_spec(BATCH_AXES))
    return NamedSharding(mesh, PartitionSpec(*(spec[:ndim] + (None,) * (ndim - len(spec)))))


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in dict(current_rules())["activation_batch"])


def _runtime_devices(mesh: Mesh) -> bool:
    """Whether the mesh is made of this runtime's devices (all processes'), not ahead-of-time stand-ins."""
    return set(mesh.devices.flat) <= set(jax.devices())


@contextlib.contextmanager
def activation_sharding(mesh: Mesh):
    """Context in which the model's `nn.with_logical_constraint` calls resolve against `mesh`."""
    # Flax's logical constraints resolve against the *abstract* mesh in context; the legacy `with mesh:`
    # context is invisible to them and would silently turn every constraint into a no-op. The abstract mesh
    # (unlike jax.set_mesh) may be entered both around a jitted call and inside a traced function.
    # Outside a trace jax.set_mesh installs both the concrete and the abstract mesh (shard_map-based kernels
    # need the concrete one); inside a traced function only the abstract mesh may be entered. A mesh of
    # devices this runtime does not own (the planner's AOT topology devices) gets the abstract mesh only:
    # under set_mesh, constants created while tracing would be placed on those devices.
    with contextlib.ExitStack() as stack:
        concrete = False
        if _runtime_devices(mesh):
            try:
                stack.enter_context(jax.set_mesh(mesh))
                concrete = True
            except ValueError:  # inside a trace
                pass
        if not concrete:
            stack.enter_context(jax.sharding.use_abstract_mesh(mesh.abstract_mesh))
        stack.enter_context(nn.logical_axis_rules(flax_rules()))
        yield


def explain_sharding(mesh: Mesh, axes_tree, shapes_tree) -> list[str]:
    """Human-readable lines 'path: shape logical -> spec' (used by the planner and --dry_run)."""
    lines = []
    flat_axes = jax.tree_util.tree_flatten_with_path(
        axes_tree, is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x))[0]
    flat_shapes = jax.tree.leaves(shapes_tree)
    for (path, axes), x in zip(flat_axes, flat_shapes):
        spec = logical_to_spec(axes, _shape(x), mesh)
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        lines.append(f"{name}: {_shape(x)} {axes} -> {spec}")
    return lines
