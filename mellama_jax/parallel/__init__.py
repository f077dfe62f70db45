"""Everything that knows mesh axis names lives in this package."""
from mellama_jax.parallel.mesh import (
    MeshConfig,
    check_mesh_fits_model,
    describe_mesh,
    initialize_distributed,
    make_mesh,
    mesh_from_flags,
    resolve_mesh_shape,
)
from mellama_jax.parallel.rules import (
                                       activation_sharding,
                                       axis_rules,
                                       batch_sharding,
                                       current_rules,
                                       data_parallel_size,
                                       explain_sharding,
                                       logical_to_spec,
                                       named_sharding,
                                       replicated,
                                       tree_shardings,
)

__all__ = ["MeshConfig", "check_mesh_fits_model", "mesh_from_flags", "describe_mesh", "make_mesh",
           "resolve_mesh_shape", "initialize_distributed", "activation_sharding", "axis_rules", "batch_sharding",
           "current_rules", "data_parallel_size", "explain_sharding", "logical_to_spec", "named_sharding",
           "replicated", "tree_shardings"]
