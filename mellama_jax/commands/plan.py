"""Ahead-of-time planner: will this training config fit on this TPU topology, and how should it run?

    mellama-plan --config configs/me_llama/pretrain_70b.py --topology v5p-128
    mellama-plan --config configs/me_llama/pretrain_70b.py --topology v5p-128 --sweep
    mellama-plan --config configs/me_llama/pretrain_13b.py --topology 2xv5p-32 \
        --remat full --micro_batch 1 --save_executable runs/plan/13b.exe
    mellama-plan --model llama2_7b --config.train.global_batch_size=512 --topology v5e-256 --sweep

Compiles the real train step (mellama_jax.train) for fake TPU devices made by libtpu (no TPU needed;
`pip install -e '.[tpu]'`) and prints per-chip memory (arguments, temporaries, outputs), FLOPs per step
and whether it fits the chip's HBM. `--sweep` tries remat policies x per-chip micro-batch sizes and names
the fastest plan that fits; for the chosen plan it prints the `--config.…` flags that make
`python -m mellama_jax.train --config <same file>` run it (`--dry_run` there checks them).
Out-of-memory is an answer ("does not fit: needs X"), not a crash. `--dry_run` checks the config, its overrides,
the topology and the batch split and prints what would be compiled, without compiling (no libtpu needed).

    mellama-plan --generate --model llama2_70b --topology v5p-16 --batch 16 --prompt_len 1024 --new_tokens 256

`--generate` plans inference instead (planning/inference.py): it compiles jitted generation (prefill + decode
loop with its KV cache) for the topology and prints per-chip weights, KV cache and temporaries, the largest
batch that fits and a roofline estimate of tokens/s. The mesh is the config's when a `--config.mesh.` field is
set, else heads over the widest tensor axis that divides the chips and the heads, the rest over data. When it
does not fit, the same generation's slices with 2x, 4x, 8x the chips are planned and the smallest that fits named.
Exit status: 0 if the (chosen) plan fits, 1 if nothing fits, 2 on a usage or config error.
"""
from __future__ import annotations

import logging
import os
import shlex
import sys

# The planner compiles for TPU devices made by libtpu; the host computation itself stays on CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from mellama_jax import cli  # noqa: E402
from mellama_jax.config import REMAT_POLICIES, ConfigError, ModelConfig  # noqa: E402
from mellama_jax.libtpu_env import libtpu_available  # noqa: E402
from mellama_jax.parallel import MeshConfig, describe_mesh  # noqa: E402
from mellama_jax.planning import config_files, estimates, inference, planner, report  # noqa: E402
from mellama_jax.planning.topology import parse_topology  # noqa: E402


def _csv(kind):
    return lambda text: [kind(t) for t in text.split(",") if t.strip()]


def config_overrides(parser: cli.ArgumentParser, rest: list[str]) -> list[str]:
    """`--config.a.b=value` (or `--config.a.b value`) arguments as `a.b=value` overrides; anything else is an
    unknown flag."""
    out, i = [], 0
    while i < len(rest):
        arg = rest[i]
        if not arg.startswith("--config."):
            parser.error(f"unrecognized arguments: {' '.join(rest[i:])}")
        key, eq, value = arg[len("--config."):].partition("=")
        if not eq:
            if i + 1 >= len(rest):
                parser.error(f"{arg}: expected a value, e.g. {arg}=512")
            value, i = rest[i + 1], i + 1
        out.append(f"{key}={value}")
        i += 1
    return out


def main(argv=None) -> int:
    return cli.run(_main, argv)


def _dry_run(args, overrides: list[str]) -> int:
    """What a run would compile, from the same config and topology, without libtpu: config, overrides, topology
    and the per-chip micro-batch split are checked here (the compile itself is `make test-tpu`'s subject)."""
    topology = parse_topology(args.topology, args.num_slices)
    config = config_files.load_config(args.config, model=args.model, overrides=overrides)
    print(f"dry run: {report.header(config, topology)}")
    if args.generate:
        print(f"dry run: would plan generation of {args.batch} rows x {args.prompt_len}+{args.new_tokens} tokens")
        return 0
    remats = [r for r in planner.REMAT_ORDER if r in set(args.remat or planner.REMAT_ORDER)] if args.sweep else \
        (args.remat or [config.model.remat_policy])
    sizes = args.micro_batch or (planner.micro_batch_choices(config, topology) if args.sweep else
                                 [planner.adapt_config(config, topology)[1].micro_batch_per_chip])
    if not sizes:
        raise ConfigError(f"no per-chip micro-batch splits train.global_batch_size="
                          f"{config.train.global_batch_size} over the data-parallel chips of {topology.name}")
    print(f"dry run: would compile remat {','.join(remats)} x micro-batch {','.join(map(str, sizes))} per chip")
    return 0


def _main(argv) -> int:
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--config", default=None, help="training config file (get_config()); default: the schema defaults")
    p.add_argument("--model", default=None, help="replace the config's model by a preset (llama2_7b, llama2_13b, ...)")
    p.add_argument("--topology", required=True, help="v5p-128, v5e-256, v5e:2x2, 2xv5p-32, ...")
    p.add_argument("--num_slices", type=int, default=None, help="slices joined over DCN (or write 2xv5p-32)")
    p.add_argument("--remat", type=_csv(str), default=None,
                   help=f"remat policy (comma list with --sweep); one of {', '.join(REMAT_POLICIES)}")
    p.add_argument("--micro_batch", type=_csv(int), default=None,
                   help="rows per chip per forward/backward (comma list with --sweep); default: the config's")
    p.add_argument("--sweep", action="store_true", help="try remat policies x micro-batches, name the fastest that fits")
    p.add_argument("--save_executable", default=None, help="write the serialized compiled step here")
    p.add_argument("--json", default=None, help="also write every compile report as JSON here")
    p.add_argument("--mfu", type=float, default=estimates.DEFAULT_MFU,
                   help="model FLOPs utilisation to estimate step time, tokens/day and chip-hours at")
    p.add_argument("--generate", action="store_true", help="plan generation (inference) instead of training")
    p.add_argument("--batch", type=int, default=8, help="--generate: rows decoded together")
    p.add_argument("--prompt_len", type=int, default=1024, help="--generate: prompt tokens (padded length)")
    p.add_argument("--new_tokens", type=int, default=256, help="--generate: new tokens per row")
    p.add_argument("--dtype", default="bfloat16", help="--generate: weight and compute dtype")
    p.add_argument("--dry_run", action="store_true",
                   help="check the config, overrides and topology and print the plans it would compile, then exit "
                        "(no compile, no libtpu needed)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.epilog = ("Any field of the training config is set as in training: --config.<field>=<value>, e.g. "
                "--config.train.global_batch_size=512 (repeatable).")
    args, rest = p.parse_known_args(argv)
    overrides = config_overrides(p, rest)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    # Compiles take minutes on large topologies: say what is being compiled as it starts.
    logging.getLogger("mellama_jax.planning.planner").setLevel(logging.INFO)

    if args.dry_run:
        return _dry_run(args, overrides)
    if not libtpu_available():
        print("error: libtpu is not installed; install the [tpu] extra: pip install -e '.[tpu]' "
              "(about 700 MB, no TPU needed)", file=sys.stderr)
        return 2
    topology = parse_topology(args.topology, args.num_slices)
    config = config_files.load_config(args.config, model=args.model, overrides=overrides)
    if args.generate:
        return _plan_generate(args, config, topology, mesh_set=any(o.startswith("mesh.") for o in overrides))
    if args.sweep:
        reports = planner.sweep(config, topology, remats=args.remat or planner.REMAT_ORDER,
                                micro_batches=args.micro_batch)
    else:
        for name, values in (("--remat", args.remat), ("--micro_batch", args.micro_batch)):
            if values and len(values) > 1:
                raise ConfigError(f"{name} takes one value without --sweep, got {values}")
        reports = [planner.plan_step(config, topology, remat=(args.remat or [None])[0],
                                     micro_batch=(args.micro_batch or [None])[0],
                                     save_executable=args.save_executable)]

    best = planner.choose(reports)
    print(report.header(config, topology))
    for r in reports:
        print("  " + r.summary())
    if args.sweep:
        print(f"fastest that fits: {best.summary()}" if best else "nothing fits: see the reports above")
    if best is not None:
        planned, _ = planner.adapt_config(config, topology, remat=best.remat_policy,
                                          micro_batch=best.micro_batch_per_chip)
        flags = estimates.launch_flags(planned, config_files.file_config(args.config))
        print(f"launch it with: {shlex.join(flags)}")
        # The flags are the difference from the config file as the training CLI loads it (without --config: from
        # the schema defaults), so the command below trains exactly what was compiled on this mesh.
        config_arg = f"--config {shlex.quote(args.config)}" if args.config else "--config <file with the defaults>"
        print(f"  on mesh {describe_mesh(best.mesh)}: python -m mellama_jax.train {config_arg} --workdir <workdir> "
              f"<these flags>; add --dry_run to check them on the slice before training")
        for line in estimates.estimate(best, config, topology, mfu=args.mfu).lines():
            print(f"  {line}")
    if args.json:
        report.write_json(args.json, config, topology, reports, best)
    if args.sweep and best and args.save_executable:
        # Recompile the winner to keep its executable (the sweep itself does not keep executables).
        planner.plan_step(config, topology, remat=best.remat_policy, micro_batch=best.micro_batch_per_chip,
                          save_executable=args.save_executable)
        print(f"executable written to {args.save_executable}")
    elif reports[-1].executable_path:
        print(f"executable written to {reports[-1].executable_path}")
    return 0 if best else 1


def _plan_generate(args, config, topology, *, mesh_set: bool) -> int:
    model_cfg = ModelConfig.from_dict(config.model.to_dict())
    plan = inference.plan_generate(model_cfg, topology, batch=args.batch, prompt_len=args.prompt_len,
                                   new_tokens=args.new_tokens, dtype=args.dtype,
                                   mesh_cfg=MeshConfig.from_dict(config.mesh.to_dict()) if mesh_set else None)
    print(plan.summary())
    if not plan.fits and not mesh_set:
        # Name the smallest slice of the same generation that does fit (one compile per size tried).
        bigger = inference.smallest_fitting(model_cfg, inference.larger_topologies(topology), batch=args.batch,
                                            prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                                            dtype=args.dtype, max_batch_checks=0)
        print(f"smallest topology that fits: {bigger.summary()}" if bigger else
              f"nor on {', '.join(inference.larger_topologies(topology))}")
    if plan.fits:
        mesh = " ".join(f"--config.mesh.{k}={v}" for k, v in plan.mesh.items())
        print(f"evaluate with: mellama-evaluate ... --batch_size {plan.max_batch} {mesh}")
    return 0 if plan.fits else 1


if __name__ == "__main__":
    sys.exit(main())
