"""Command lines that run a model on a mesh (mellama-evaluate, mellama-generate): one parsing path.

They take their own argparse flags, training's mesh spelling (`--config.mesh.data=2 --config.mesh.tensor=4`,
parsed into the same MeshConfig the training config holds) and the multi-process flags of
`cli.add_distributed_flags`; the processes of a multi-host run are joined before any device is touched.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from mellama_jax.parallel import MeshConfig, initialize_distributed, mesh_from_flags


def parse_mesh_command(parser: argparse.ArgumentParser,
                       argv: Sequence[str]) -> tuple[argparse.Namespace, MeshConfig | None]:
    """Parse `argv`, split off the `--config.mesh.*` overrides and join the distributed run (if any)."""
    args, rest = parser.parse_known_args(argv)
    mesh_cfg, rest = mesh_from_flags(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    initialize_distributed(args.coordinator, args.num_processes, args.process_id, args.local_device_count)
    return args, mesh_cfg
