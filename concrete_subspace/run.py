"""Run one test-time registry method on a scale's problem, on one process or under ``torchrun`` (docs/distributed.md).

    python -m concrete_subspace.run concrete_task_arithmetic --scale mini --param steps=100 --out runs/cta
    torchrun --nproc-per-node 4 -m concrete_subspace.run layer_wise_adamerging --scale paper --device cuda --out runs/lw

The same command runs on one process or N: under torchrun each rank joins the process group from the environment,
computes the entropy of its share of the tasks, and every rank ends with the same mask / coefficients
(:mod:`concrete_subspace.distributed`). Rank 0 writes ``<out>/result.json`` (scores, parameters, history, world size,
versions, device) and ``<out>/tensors.safetensors`` (mask logits and/or coefficients), atomically. Errors in the
arguments end with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

EXIT_USAGE = 2
SCALES = ("mini", "paper")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m concrete_subspace.run",
        description="Run one registry method (single process or under torchrun).",
    )
    parser.add_argument("method", help="registry name, e.g. concrete_task_arithmetic (see registry.METHODS)")
    parser.add_argument("--scale", default="mini", choices=SCALES)
    parser.add_argument("--tasks", nargs="*", default=None, help="task names (default: all of the scale)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: each rank takes cuda:LOCAL_RANK)")
    parser.add_argument("--seed", type=int, default=0, help="the run seed: test-batch order (method streams: --param)")
    parser.add_argument("--zoo-seed", type=int, default=0, help="mini scale: which built zoo (the shipped one: 0)")
    parser.add_argument("--smoke", action="store_true", help="the tiny smoke zoo (mini scale)")
    parser.add_argument("--split", default="test", choices=("test", "validation"), help="mini scale: data split")
    parser.add_argument("--arch", default="ViT-B-32", help="paper scale: ViT-B-32, ViT-L-14 or flan-t5")
    parser.add_argument("--zoo-dir", default=None, help="mini scale: a zoo directory instead of the cached one")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="method parameter (repeat)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--out", required=True, help="output directory (written by rank 0)")
    return parser


def _save(out: Path, method: str, params: dict, result, scores: dict, info: dict) -> None:
    import torch
    from safetensors.torch import save

    from .checkpoint import atomic_write_bytes, atomic_write_json
    from .evaluation import average

    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in result.extras.items() if torch.is_tensor(v)}
    if tensors:
        atomic_write_bytes(out / "tensors.safetensors", save(tensors))
    atomic_write_json(
        out / "result.json",
        {
            "method": method,
            "params": {**result.params, **params},
            "scores": scores,
            "average": average(scores),
            "history": result.history,
            **info,
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from . import distributed
    from .cli import CliError, parse_params
    from .registry import UnknownMethodError, get_method

    torch.set_num_threads(args.threads)
    try:
        get_method(args.method)
        params = parse_params(args.method, args.param)
    except (CliError, UnknownMethodError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    device = distributed.init_from_env(args.device)
    try:
        return _run(args, params, device)
    finally:
        if distributed.is_distributed():
            distributed.barrier()
            torch.distributed.destroy_process_group()


def _run(args: argparse.Namespace, params: dict, device: str) -> int:
    from . import distributed
    from .evaluation import evaluate
    from .experiments import ensure_zoo, load_problem
    from .provenance import environment_info
    from .registry import run_method

    if args.scale == "mini" and args.zoo_dir is None:
        if distributed.is_main():  # one rank builds a missing zoo; the others wait, then read it
            ensure_zoo(args.zoo_seed, args.smoke, progress=True)
        distributed.barrier()
    problem = load_problem(
        args.scale,
        args.tasks,
        device,
        args.split,
        args.seed,
        args.smoke,
        zoo_seed=args.zoo_seed,
        arch=args.arch,
        zoo_dir=args.zoo_dir,
    )
    started = time.perf_counter()
    result = run_method(args.method, problem, progress=distributed.is_main(), **params)
    seconds = time.perf_counter() - started
    local = (
        evaluate(problem, result.state, distributed.local_tasks(problem.task_names))
        if distributed.local_tasks(problem.task_names)
        else {}
    )
    scores = distributed.gather_task_values(problem.task_names, local, problem.device)
    if distributed.is_main():
        info = {
            "world_size": distributed.world_size(),
            "seconds": seconds,
            "scale": args.scale,
            "seed": args.seed,
            "zoo_seed": args.zoo_seed,
            "smoke": args.smoke,
            "split": args.split,
            "tasks": list(problem.task_names),
            "environment": environment_info(device),
        }
        _save(Path(args.out), args.method, params, result, scores, info)
        print(
            f"{args.method}: average {sum(scores.values()) / len(scores):.2f} over {len(scores)} tasks "
            f"({distributed.world_size()} process(es), {seconds:.1f} s) -> {args.out}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
