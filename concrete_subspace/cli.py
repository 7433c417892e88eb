"""Command line: ``concrete-subspace info | merge | zoo build | bench | download``.

Errors in the user's input end the command with one line on stderr and exit status 2; an unexpected internal
error shows its traceback (exit status 1), and ``--debug`` shows the traceback of user errors too.
``merge`` never writes into, over or around its inputs, and moves its output into place only once complete.
One module (about 480 lines) on purpose: every sub-command shares the parameter parsing, the input checks and the
error handling here; the work itself is in the library modules each command calls.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
HF_SIDE_FILES = (
    "config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
)
# Parameter ranges the data-free merges need (checked before any model is loaded).
PARAM_RANGES = {"density": (0.0, 1.0)}


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class DuplicateModelWarning(UserWarning):
    """The same fine-tuned model is given twice (same file, or identical weights): it would count double."""


def parse_value(key: str, text: str, default: Any) -> Any:
    """Parse ``text`` into the type of the parameter's default (bool, int, float, str, tuple of floats); no eval.

    Floats must be finite (``nan``/``inf`` are refused).
    """
    try:
        if isinstance(default, bool):
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"expected true/false, got {text!r}")
            return lowered in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return finite(float(text))
        if isinstance(default, tuple):
            return tuple(finite(float(part)) for part in text.split(","))
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


def finite(value: float) -> float:
    """``value`` if it is a finite number; NaN and ±Inf are refused."""
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    return value


def parse_params(method: str, items: Sequence[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> typed overrides, checked against the method's parameters and their ranges."""
    from .registry import get_method, resolve_params

    defaults = get_method(method).defaults
    if items and not defaults:
        raise CliError(f"method {method!r} takes no parameters; drop --param {items[0]}")
    overrides = {}
    for item in items:
        if "=" not in item:
            raise CliError(f"--param expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        resolve_params(method, {key: None})  # unknown names fail here, with the valid ones listed
        overrides[key] = parse_value(key, text, defaults[key])
        if key in PARAM_RANGES and not PARAM_RANGES[key][0] <= overrides[key] <= PARAM_RANGES[key][1]:
            raise CliError(f"--param {item}: {key} must be in [{PARAM_RANGES[key][0]}, {PARAM_RANGES[key][1]}]")
    return overrides


def check_out(out: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse an --out that is, contains or lies inside an input; an existing file; or a non-empty directory."""
    target = out.resolve()
    for path in inputs:
        source = path.resolve()
        if target == source:
            raise CliError(f"--out {out} is the input {path}; choose another output directory")
        if target in source.parents:
            raise CliError(f"--out {out} contains the input {path}; choose an output directory outside the inputs")
        if source in target.parents:
            raise CliError(f"--out {out} lies inside the input {path}; choose an output directory outside the inputs")
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise CliError(f"--out {out}: {parent} is a file, not a directory")
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is an existing file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CliError(f"--out {out} is not empty; pass --overwrite to replace it")


def write_output(out: Path, write) -> None:
    """Run ``write(tmp)`` in a temporary directory beside ``out``, then move it into place (replacing ``out``).

    A crash or error leaves ``out`` as it was; a symlinked ``out`` has its target replaced (no hidden leftovers).
    """
    from .own_models import replace_directory

    replace_directory(out, write)


def state_digest(state) -> str:
    """SHA-256 over a state dict's keys and tensor bytes (to spot the same model given twice)."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def warn_duplicate_paths(paths: Sequence[str]) -> None:
    """Warn when two --finetuned arguments name the same file or directory."""
    seen: dict[Path, str] = {}
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            warnings.warn(
                f"fine-tuned model {path} is given twice (also as {seen[resolved]}); it counts double in the merge",
                DuplicateModelWarning,
                stacklevel=2,
            )
        seen.setdefault(resolved, path)


def load_checked(path: str, role: str):
    """Load a checkpoint for the CLI; a missing file inside a directory becomes a one-line error."""
    from .state_io import load_state_dict

    try:
        return load_state_dict(path)
    except FileNotFoundError as err:
        raise CliError(f"{role}: {err}") from None


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .provenance import environment_info

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(json.dumps(environment_info(device), indent=2))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from .checkpoint import atomic_write_json
    from .provenance import environment_info
    from .registry import get_method, resolve_params
    from .state_io import save_state_dict
    from .task_vectors import check_finite, float_keys, task_vector

    if args.config is not None:
        return merge_from_config(args)
    missing = [flag for flag in ("method", "pretrained", "finetuned", "out") if getattr(args, flag) is None]
    if missing:
        raise CliError(f"merge needs --config, or --{' --'.join(missing)} for a data-free merge")
    from .own_models import NEEDS_TRAIN_LABELS

    spec = get_method(args.method)
    if spec.name in NEEDS_TRAIN_LABELS:
        raise CliError(f"method {args.method!r} needs labeled training data; use it from Python (a MergeProblem)")
    if spec.data_free is None:
        raise CliError(
            f"method {args.method!r} needs test data: describe the models and image folders in a config and run "
            f"`concrete-subspace merge --config merge.yaml` (docs/merge_your_own.md)"
        )
    params = resolve_params(args.method, parse_params(args.method, args.param))
    inputs = [Path(p) for p in [args.pretrained, *args.finetuned]]
    for path in inputs:
        if not path.exists():
            raise CliError(f"no such checkpoint file or directory: {path}")
    out = Path(args.out)
    check_out(out, inputs, args.overwrite)
    warn_duplicate_paths(args.finetuned)
    started = time.perf_counter()
    pretrained = load_checked(args.pretrained, "--pretrained")
    check_finite(pretrained, name=f"pre-trained model {args.pretrained}")
    merged_keys = float_keys(pretrained)
    if args.only_finetuned_keys:
        first = load_checked(args.finetuned[0], "--finetuned")
        merged_keys = [k for k in merged_keys if k in first]
        del first
    reference = {k: pretrained[k] for k in merged_keys}
    digests: dict[str, str] = {}

    def vectors():
        for path in args.finetuned:
            state = load_checked(path, "--finetuned")
            state = {k: v for k, v in state.items() if k in reference or not args.only_finetuned_keys}
            digest = state_digest({k: state[k] for k in reference if k in state})
            if digest in digests and Path(digests[digest]).resolve() != Path(path).resolve():
                warnings.warn(
                    f"fine-tuned models {digests[digest]} and {path} have identical weights; the model "
                    f"counts double in the merge",
                    DuplicateModelWarning,
                    stacklevel=2,
                )
            digests.setdefault(digest, path)
            yield task_vector(reference, state, name=f"fine-tuned model {path}")

    merged = spec.data_free(reference, vectors(), **params)
    check_finite(merged, name=f"merged model ({args.method} with {params})")
    full = {**pretrained, **{k: merged[k] for k in merged_keys}}

    def write(directory: Path) -> None:
        save_state_dict(directory / "model.safetensors", full, metadata={"format": "pt"})
        if Path(args.pretrained).is_dir():
            for name in HF_SIDE_FILES:
                if (Path(args.pretrained) / name).exists():
                    shutil.copyfile(Path(args.pretrained) / name, directory / name)
        atomic_write_json(
            directory / "merge.json",
            {
                "method": args.method,
                "pretty_name": spec.pretty_name,
                "reference": spec.reference,
                "params": params,
                "pretrained": str(args.pretrained),
                "finetuned": [str(p) for p in args.finetuned],
                "merged_tensors": len(merged_keys),
                "wall_time_s": round(time.perf_counter() - started, 3),
                **environment_info("cpu"),
            },
        )

    write_output(out, write)
    print(f"merged {len(args.finetuned)} models with {spec.pretty_name} -> {out / 'model.safetensors'}")
    return 0


def merge_from_config(args: argparse.Namespace) -> int:
    """``merge --config``: any method on the config's models and image folders (flags override the config)."""
    from .own_models import merge_own_models, read_yaml

    path = Path(args.config)
    raw = read_yaml(path)
    if args.method is not None:
        raw["method"] = args.method
    if args.pretrained is not None or args.finetuned is not None or args.only_finetuned_keys:
        raise CliError(
            "with --config, give the models in the config (models.pretrained, models.finetuned); "
            "--pretrained, --finetuned and --only-finetuned-keys are for data-free merges without one"
        )
    if args.param:
        if "method" not in raw:
            raise CliError(f"{path}: the config has no 'method' key")
        raw["params"] = {**(raw.get("params") or {}), **parse_params(raw["method"], args.param)}
    report = merge_own_models(
        raw, args.out, base=path.resolve().parent, overwrite=args.overwrite, progress=not args.quiet
    )
    out = report["out"]
    scores = {t: a for t, a in report["accuracy"].items() if a is not None}
    summary = f"; accuracy {', '.join(f'{t} {a:.2f}' for t, a in scores.items())}" if scores else ""
    print(f"merged {len(report['tasks'])} models with {report['pretty_name']} -> {out}{summary}")
    return 0


def cmd_zoo_build(args: argparse.Namespace) -> int:
    from .mini_text_zoo import shipped as text_shipped
    from .mini_zoo import shipped
    from .status import show_status
    from .text_zoo import build_text_zoo
    from .zoo import build_zoo

    show_status()
    try:
        if args.scale == "mini-text":
            path = build_text_zoo(
                args.out,
                seed=args.seed,
                smoke=args.smoke,
                force=args.force,
                progress=not args.quiet,
                from_scratch=args.from_scratch,
            )
            if args.from_scratch and text_shipped.ships(args.seed, args.smoke, any_format=True):
                print(shipped.format_comparison(text_shipped.compare_text_to_shipped(path)))
        else:
            path = build_zoo(
                args.out,
                scale=args.scale,
                seed=args.seed,
                smoke=args.smoke,
                force=args.force,
                progress=not args.quiet,
                methods=args.methods,
                precision=args.precision,
                from_scratch=args.from_scratch,
            )
            if args.from_scratch and shipped.ships(args.seed, args.smoke, args.precision, any_format=True):
                try:
                    print(shipped.format_comparison(shipped.compare_to_shipped(path)))
                except shipped.StaleShippedZooError as err:
                    print(f"not compared: {err}")
    except (FileExistsError, shipped.ZooIntegrityError, shipped.StaleShippedZooError) as err:
        raise CliError(str(err)) from None
    print(path)
    return 0


def cmd_zoo_ship(args: argparse.Namespace) -> int:
    from .mini_text_zoo import shipped as text_shipped
    from .mini_zoo import shipped
    from .mini_zoo.build import rebuilt_zoo_dir

    try:
        if args.scale == "mini-text":
            built = Path(args.zoo_dir) if args.zoo_dir else text_shipped.rebuilt_text_zoo_dir(0)
            target = text_shipped.ship_text_zoo(built)
        else:
            target = shipped.ship_zoo(Path(args.zoo_dir) if args.zoo_dir else rebuilt_zoo_dir(0))
    except (FileNotFoundError, ValueError, shipped.ZooIntegrityError) as err:
        raise CliError(str(err)) from None
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"shipped -> {target} ({size / 1e6:.1f} MB); stage it with `git add {target}`")
    return 0


def run_bench(argv: Sequence[str]) -> int:
    """The benchmark harness is a research tool beside the library (benchmarks/harness/), not in the installed package."""
    print(
        "concrete-subspace: bench moved out of the package: in a source checkout run `make bench` or "
        "`python -m benchmarks.harness --help` (benchmarks/README.md)",
        file=sys.stderr,
    )
    return 2


def run_download(argv: Sequence[str]) -> int:
    from .download import main as download_main

    return int(download_main(list(argv)) or 0)


# Sub-commands with their own argument parsers: everything after the name is passed through unparsed.
PASSTHROUGH = {"bench": run_bench, "download": run_download}


def _methods():
    from .registry import METHODS

    return METHODS


def methods_help() -> str:
    """The data-free methods with their parameters and defaults, and the names of the others (for merge --help)."""
    methods = _methods()
    free = {n: s for n, s in methods.items() if s.data_free is not None}
    width = max(map(len, free))
    lines = ["data-free methods (--method NAME) and their parameters (--param KEY=VALUE, default shown):"]
    for name, spec in free.items():
        params = ", ".join(f"{k}={v}" for k, v in spec.defaults.items()) or "no parameters"
        lines.append(f"  {name:<{width}}  {spec.pretty_name}: {params}")
    from .own_models import NEEDS_TRAIN_LABELS

    test_time = [n for n in methods if n not in free and n not in NEEDS_TRAIN_LABELS]
    lines.append(f"test-time methods (describe the models and image folders in --config): {', '.join(test_time)}")
    lines.append(f"methods that need labeled training data (Python only): {', '.join(NEEDS_TRAIN_LABELS)}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of any error, user errors included",
    )
    parser = argparse.ArgumentParser(prog="concrete-subspace", description=__doc__.splitlines()[0], parents=[debug])
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="versions and device", parents=[debug])
    info.set_defaults(func=cmd_info)

    merge = sub.add_parser(
        "merge",
        help="merge checkpoints: data-free methods from flags, every method from a --config",
        parents=[debug],
        epilog=methods_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Merge fine-tuned checkpoints of one pre-trained model: a data-free method from the flags, "
        "or any method (the test-time ones on your image folders) from --config merge.yaml. "
        "The inputs are never modified; the output is written to a temporary directory "
        "and moved into place when complete.",
    )
    merge.add_argument(
        "--config",
        default=None,
        help="YAML file: the models, the tasks' image folders, the method and its parameters; runs every "
        "method, the test-time ones included (docs/merge_your_own.md)",
    )
    merge.add_argument("--method", default=None, help="method name (with --config: overrides the config's)")
    merge.add_argument(
        "--pretrained",
        default=None,
        help="pre-trained checkpoint: HF directory, .safetensors or .pt/.bin (weights only)",
    )
    merge.add_argument("--finetuned", default=None, nargs="+", help="fine-tuned checkpoints, same format")
    merge.add_argument(
        "--out",
        default=None,
        help="output directory (model.safetensors + merge.json; with --config: a CLIPModel directory, "
        "mask.safetensors and report.json); must not be, contain or lie inside an input; must be empty or "
        "new unless --overwrite",
    )
    merge.add_argument("--quiet", action="store_true", help="no progress bars (--config)")
    merge.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out (its old contents are deleted once the new model is in place)",
    )
    merge.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="override a method parameter (repeatable)"
    )
    merge.add_argument(
        "--only-finetuned-keys",
        action="store_true",
        help="merge only the float tensors present in the fine-tuned checkpoints (e.g. CLIPVisionModel fine-tunes of a CLIPModel)",
    )
    merge.set_defaults(func=cmd_merge)

    zoo = sub.add_parser("zoo", help="the offline mini model zoo")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    build = zoo_sub.add_parser("build", help="build (or reuse) the mini zoo", parents=[debug])
    build.add_argument(
        "--scale",
        default="mini",
        choices=["mini", "mini-text"],
        help="mini: the small CLIP image zoo; mini-text: all-MiniLM-L6-v2 + LoRA experts on real text",
    )
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--out", default=None, help="zoo directory (default: the cache directory)")
    build.add_argument("--smoke", action="store_true", help="tiny zoo for CI and notebook tests")
    build.add_argument("--force", action="store_true", help="rebuild even if a complete zoo exists")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.add_argument(
        "--methods",
        action="store_true",
        help="mini: also record the core merge methods' test-split results at the mini defaults in the manifest "
        "(224 s on zoo v2 here; notebook 01 computes the same runs)",
    )
    build.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="bf16: train under bf16 autocast (own cache directory, suffix -bf16)",
    )
    build.add_argument(
        "--from-scratch",
        action="store_true",
        help="pre-train and fine-tune (mini, about 25 min) or fine-tune the LoRA experts (mini-text, about 7 min) "
        "instead of using the zoo shipped with the package; the shipped seed's rebuild goes to its own directory "
        "(suffix -rebuilt) and is compared with the shipped zoo",
    )
    build.set_defaults(func=cmd_zoo_build)
    ship = zoo_sub.add_parser(
        "ship",
        help="copy a built zoo's weights (mini) or LoRA adapters (mini-text) and manifest into the package "
        "(replaces the shipped zoo)",
        parents=[debug],
    )
    ship.add_argument("--scale", default="mini", choices=["mini", "mini-text"], help="which zoo to ship")
    ship.add_argument(
        "zoo_dir",
        nargs="?",
        default=None,
        help="a complete zoo built with hashes (default: the seed-0 rebuild of `zoo build --from-scratch` at --scale)",
    )
    ship.set_defaults(func=cmd_zoo_ship)

    sub.add_parser("bench", help="moved: `make bench` in a source checkout (benchmarks/harness/)", add_help=False)
    sub.add_parser(
        "download", help="prefetch paper-scale models and datasets into the HF cache (see its --help)", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        return PASSTHROUGH[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        try:
            return args.func(args)
        except user_errors() as err:
            if getattr(args, "debug", False):
                raise
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"concrete-subspace: error: {message}", file=sys.stderr)
            return EXIT_USAGE


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input (one line, exit 2); anything else is a bug and keeps its traceback."""
    from .checkpoint import CheckpointError
    from .own_models import OwnModelsError
    from .registry import UnknownMethodError
    from .state_io import CheckpointFileError, UnsafeCheckpointError
    from .task_vectors import StateDictError

    return (
        CliError,
        OwnModelsError,
        UnknownMethodError,
        StateDictError,
        CheckpointError,
        CheckpointFileError,
        UnsafeCheckpointError,
    )


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr: ``concrete-subspace: warning: <Category>: <message>`` (no source echo)."""
    text = str(message).splitlines()[0] if str(message) else ""
    print(f"concrete-subspace: warning: {category.__name__}: {text}", file=file or sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
