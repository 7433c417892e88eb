"""Command line: ``concrete-subspace info | merge | zoo build | bench | download``.

Errors in the user's input end the command with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def parse_value(key: str, text: str, default: Any) -> Any:
    """Parse ``text`` into the type of the parameter's default (bool, int, float, str, tuple of floats); no eval."""
    try:
        if isinstance(default, bool):
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"expected true/false, got {text!r}")
            return lowered in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            return tuple(float(part) for part in text.split(","))
        if default is None:
            lowered = text.strip().lower()
            if lowered == "none":
                return None
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return text
        return text
    except ValueError as err:
        raise CliError(f"--param {key}={text}: {err}") from None


def parse_params(method: str, items: Sequence[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> typed overrides, checked against the method's parameters."""
    from .merging import get_method, resolve_params

    defaults = get_method(method).defaults
    overrides = {}
    for item in items:
        if "=" not in item:
            raise CliError(f"--param expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        resolve_params(method, {key: None})  # unknown names fail here, with the valid ones listed
        overrides[key] = parse_value(key, text, defaults[key])
    return overrides


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .provenance import environment_info

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(json.dumps(environment_info(device), indent=2))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from .checkpoint import atomic_write_json
    from .merging import get_method, resolve_params
    from .provenance import environment_info
    from .state_io import load_state_dict, save_state_dict
    from .task_vectors import float_keys, task_vector

    spec = get_method(args.method)
    if spec.data_free is None:
        raise CliError(f"method {args.method!r} needs test data and a model adapter; use it from Python or a notebook. "
                       f"Data-free methods: {', '.join(n for n, s in _methods().items() if s.data_free)}")
    params = resolve_params(args.method, parse_params(args.method, args.param))
    for path in [args.pretrained, *args.finetuned]:
        if not Path(path).exists():
            raise CliError(f"no such checkpoint file or directory: {path}")
    started = time.perf_counter()
    pretrained = load_state_dict(args.pretrained)
    merged_keys = float_keys(pretrained)
    if args.only_finetuned_keys:
        first = load_state_dict(args.finetuned[0])
        merged_keys = [k for k in merged_keys if k in first]
        del first
    reference = {k: pretrained[k] for k in merged_keys}

    def vectors():
        for path in args.finetuned:
            state = load_state_dict(path)
            yield task_vector(reference, {k: v for k, v in state.items() if k in reference or not args.only_finetuned_keys},
                              name=f"fine-tuned model {path}")

    merged = spec.data_free(reference, vectors(), **params)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    full = {**pretrained, **{k: merged[k] for k in merged_keys}}
    save_state_dict(out / "model.safetensors", full, metadata={"format": "pt"})
    if Path(args.pretrained).is_dir():
        for name in ("config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                     "merges.txt", "special_tokens_map.json"):
            if (Path(args.pretrained) / name).exists():
                shutil.copyfile(Path(args.pretrained) / name, out / name)
    atomic_write_json(out / "merge.json", {
        "method": args.method, "pretty_name": spec.pretty_name, "reference": spec.reference, "params": params,
        "pretrained": str(args.pretrained), "finetuned": [str(p) for p in args.finetuned],
        "merged_tensors": len(merged_keys), "wall_time_s": round(time.perf_counter() - started, 3),
        **environment_info("cpu")})
    print(f"merged {len(args.finetuned)} models with {spec.pretty_name} -> {out / 'model.safetensors'}")
    return 0


def cmd_zoo_build(args: argparse.Namespace) -> int:
    if args.scale == "mini-text":
        from .text_zoo import build_text_zoo

        path = build_text_zoo(args.out, seed=args.seed, smoke=args.smoke, force=args.force, progress=not args.quiet)
        print(path)
        return 0
    from .zoo import build_zoo

    path = build_zoo(args.out, scale=args.scale, seed=args.seed, smoke=args.smoke, force=args.force, progress=not args.quiet)
    print(path)
    return 0


def run_bench(argv: Sequence[str]) -> int:
    from .bench import main as bench_main

    return int(bench_main(list(argv)) or 0)


def run_download(argv: Sequence[str]) -> int:
    from .download import main as download_main

    return int(download_main(list(argv)) or 0)


# Sub-commands with their own argument parsers: everything after the name is passed through unparsed.
PASSTHROUGH = {"bench": run_bench, "download": run_download}


def _methods():
    from .merging import METHODS

    return METHODS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="concrete-subspace", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="versions and device")
    info.set_defaults(func=cmd_info)

    merge = sub.add_parser("merge", help="merge checkpoints with a data-free method (weight_averaging, task_arithmetic, ties_merging)")
    merge.add_argument("--method", required=True)
    merge.add_argument("--pretrained", required=True, help="pre-trained checkpoint: HF directory, .safetensors or .pt/.bin (weights only)")
    merge.add_argument("--finetuned", required=True, nargs="+", help="fine-tuned checkpoints, same format")
    merge.add_argument("--out", required=True, help="output directory (model.safetensors + merge.json)")
    merge.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="override a method parameter (repeatable)")
    merge.add_argument("--only-finetuned-keys", action="store_true",
                       help="merge only the float tensors present in the fine-tuned checkpoints (e.g. CLIPVisionModel fine-tunes of a CLIPModel)")
    merge.set_defaults(func=cmd_merge)

    zoo = sub.add_parser("zoo", help="the offline mini model zoo")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    build = zoo_sub.add_parser("build", help="build (or reuse) the mini zoo")
    build.add_argument("--scale", default="mini", choices=["mini", "mini-text"],
                       help="mini: the small CLIP image zoo; mini-text: all-MiniLM-L6-v2 + LoRA experts on real text")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--out", default=None, help="zoo directory (default: the cache directory)")
    build.add_argument("--smoke", action="store_true", help="tiny zoo for CI and notebook tests")
    build.add_argument("--force", action="store_true", help="rebuild even if a complete zoo exists")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(func=cmd_zoo_build)

    sub.add_parser("bench", help="benchmark the merge loops (see `concrete-subspace bench --help`)", add_help=False)
    sub.add_parser("download", help="prefetch paper-scale models and datasets into the HF cache (see its --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        return PASSTHROUGH[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .merging import UnknownMethodError
    from .task_vectors import StateDictError

    try:
        return args.func(args)
    except (CliError, UnknownMethodError, StateDictError, CheckpointError, FileNotFoundError, ValueError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"concrete-subspace: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
