"""Zoo v2 design probes (issue 11): pre-train a candidate mini CLIP, then fine-tune experts on it, then run methods.

Research script, kept as run; the chosen recipe lives in concrete_subspace.zoo. Every number is on the VALIDATION
split (the test split is never scored here). Stages, each writing JSON next to its models:

  probe.py pretrain OUT --unnamed none|third|half [--per-task N] [--steps N] [--no-shift] [--logit-scale S]
                   [--vision-hidden W] [--vision-layers L] [--vision-mlp M]
      pre-train, then zero-shot and linear-probe accuracy of theta0 per task (train -> validation)
  probe.py finetune OUT TAG [--lr 3e-4] [--steps 1400]
      experts on OUT's pre-trained model -> OUT/TAG is a complete zoo directory (manifest, symlinked data);
      individual and task-arithmetic accuracy / mean entropy along lambda, ||tau||/||theta0||, cosines, cross-transfer
  probe.py methods OUT/TAG NAME k=v ... [--eval-every N]
      one merge method on the validation split with its accuracy along the run

Run with 1 thread: OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/zoo_v2/probe.py ...
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from concrete_subspace import geometry, zoo
from concrete_subspace.data import mini
from concrete_subspace.mini_zoo.shared import seeded_init

torch.set_num_threads(1)


def unnamed_classes(kind: str) -> dict[str, list[int]]:
    """Class indices pre-training never shows: none, every third class (c % 3 == 2), or every second (odd c)."""
    if kind == "none":
        return {}
    pick = {"third": lambda c: c % 3 == 2, "half": lambda c: c % 2 == 1}[kind]
    return {t: [c for c in range(len(s.classnames)) if pick(c)] for t, s in mini.TASKS.items()}


def _invert_blur(x, rng):
    from concrete_subspace.data import shifts

    return shifts.blur(shifts.invert(x, rng), rng, sigma=1.0)


def _posterise_noise(x, rng):
    from concrete_subspace.data import shifts

    return shifts.salt_and_pepper(shifts.posterise(x, rng, levels=2), rng, fraction=0.15)


def medium_shifts() -> dict:
    """Between v2 and strong: stronger shifts for digits, landcover and directions only (the v3 candidate)."""
    from concrete_subspace.data import shifts

    return dict(shifts.MEDIUM_SHIFTS)


def strong_shifts() -> dict:
    """Stronger domain shifts for the tasks whose zero-shot stays high under the v2 shifts (a probe lever)."""
    from concrete_subspace.data import shifts

    return {
        **shifts.V2_SHIFTS,
        "mnist": _invert_blur,
        "digits": partial(shifts.blur, sigma=2.0),
        "landcover": shifts.permute_and_invert,
        "signs": partial(shifts.pixelate, block=7),
        "directions": _posterise_noise,
    }


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


@torch.no_grad()
def embed(encoder, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([encoder(zoo.to_pixel_values(images[i : i + batch])) for i in range(0, len(images), batch)])


def config(args) -> zoo.MiniConfig:
    fixed = {}
    if getattr(args, "logit_scale", None):  # init = max = log(S), and not learned (cmd_pretrain)
        fixed = {"logit_scale_init": math.log(args.logit_scale), "logit_scale_max": math.log(args.logit_scale)}
    return replace(
        zoo.mini_config(),
        domain_shift=not args.no_shift,
        unnamed_classes=unnamed_classes(args.unnamed),
        generic_classes=unnamed_classes(args.generic or "none"),
        pretrain_per_task=args.per_task,
        pretrain_steps=args.steps,
        **fixed,
        **architecture(args),
    )


def architecture(args) -> dict:
    """Vision tower width / depth / MLP size where the pretrain flags set them (issue 26 item 4), else MiniConfig's."""
    names = ("vision_hidden", "vision_layers", "vision_mlp")
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def cmd_pretrain(args) -> None:
    from transformers import CLIPModel

    from concrete_subspace.models.clip_hf import ImageEncoder, zero_shot_head

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config(args)
    t0 = time.perf_counter()
    with zoo.deterministic():
        data = zoo.generate_task_data(cfg, args.seed)
        zoo.save_task_datasets(data, out / "datasets")
        pre_x, pre_captions, _ = mini.make_pretraining_set(
            args.seed, cfg.pretrain_per_task, cfg.sizes, cfg.unnamed_classes, cfg.generic_classes
        )
        t_data = time.perf_counter() - t0
        tokenizer = zoo.build_tokenizer(mini.vocabulary(), cfg.max_text_len)
        clip = seeded_init(args.seed, lambda: CLIPModel(zoo.build_clip_config(cfg, len(tokenizer))))
        if args.logit_scale:  # issue 26 lever: the logit scale fixed (not learned) at a CLIP-like value
            clip.logit_scale.requires_grad_(False)
        losses = zoo.pretrain(clip, tokenizer, pre_x, pre_captions, cfg, args.seed)
        clip.save_pretrained(out / "pretrained")
        zoo.build_processor(tokenizer).save_pretrained(out / "pretrained")
        t_pre = time.perf_counter() - t0 - t_data
        encoder = ImageEncoder.from_clip(clip).eval()
        rows = {}
        for task in cfg.tasks:
            spec = mini.TASKS[task]
            head = zero_shot_head(clip, tokenizer, spec.classnames, spec.templates)
            xtr, ytr = (torch.from_numpy(a) for a in data[task]["train"])
            xva, yva = (torch.from_numpy(a) for a in data[task]["validation"])
            keep = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(0))[:3000]
            etr, eva = embed(encoder, xtr[keep]), embed(encoder, xva)
            pred = (eva @ head.T).argmax(-1)
            held = unnamed_classes(args.generic) if args.generic else cfg.unnamed_classes
            hidden = torch.tensor([int(y) in set(held.get(task, ())) for y in yva])
            fit = geometry.linear_probe((etr.numpy(), ytr[keep].numpy()), (eva.numpy(), yva.numpy()))
            probe, c = fit["validation"], fit["C"]
            rows[task] = {
                "zero_shot": 100.0 * float((pred == yva).float().mean()),
                "zero_shot_named": 100.0 * float((pred == yva)[~hidden].float().mean()),
                "zero_shot_unnamed": 100.0 * float((pred == yva)[hidden].float().mean()) if hidden.any() else None,
                "linear_probe": probe,
                "probe_C": c,
            }
            print(task, {k: (round(v, 1) if isinstance(v, float) else v) for k, v in rows[task].items()}, flush=True)
    avg = {k: float(np.mean([r[k] for r in rows.values()])) for k in ("zero_shot", "linear_probe")}
    print("average", {k: round(v, 1) for k, v in avg.items()})
    write_json(
        out / "pretrain.json",
        {
            "args": vars(args),
            "config": {k: v for k, v in cfg.__dict__.items() if k != "sizes"},
            "tasks": rows,
            "average": avg,
            "loss_first_last": [losses[0], float(np.mean(losses[-20:]))],
            "seconds": {
                "data": round(t_data, 1),
                "pretrain": round(t_pre, 1),
                "total": round(time.perf_counter() - t0, 1),
            },
        },
    )


def cmd_finetune(args) -> None:
    from transformers import AutoTokenizer, CLIPModel

    from concrete_subspace.models.clip_hf import ImageEncoder, pretrained_state, zero_shot_head

    src = Path(args.out)
    pre = json.loads((src / "pretrain.json").read_text())
    dst = src / args.tag
    (dst / "finetuned").mkdir(parents=True, exist_ok=True)
    base = zoo.mini_config()
    cfg = replace(
        base,
        domain_shift=pre["config"]["domain_shift"],
        unnamed_classes=pre["config"]["unnamed_classes"],
        generic_classes=pre["config"].get("generic_classes", {}),
        pretrain_per_task=pre["config"]["pretrain_per_task"],
        pretrain_steps=pre["config"]["pretrain_steps"],
        finetune_lr=args.lr,
        finetune_steps=args.steps,
        weight_decay=args.weight_decay,
        # the pre-trained tower's architecture (pretrain.json from before the flags: MiniConfig's)
        **{
            k: pre["config"].get(k, getattr(base, k))
            for k in ("vision_hidden", "vision_layers", "vision_heads", "vision_mlp")
        },
    )
    if args.shifts != "own" and not (dst / "datasets").exists():  # this variant's own task data
        from concrete_subspace.data import shifts

        chosen = {
            "v2": lambda: dict(shifts.V2_SHIFTS),
            "strong": strong_shifts,
            "medium": medium_shifts,
            "v3": medium_shifts,
            "v3-signs": lambda: dict(shifts.V3_SHIFTS),
        }
        shifts.TASK_SHIFTS.update(chosen[args.shifts]())
        with zoo.deterministic():
            zoo.save_task_datasets(zoo.generate_task_data(cfg, args.seed), dst / "datasets")
    for name in ("pretrained", "datasets"):
        if not (dst / name).exists():
            (dst / name).symlink_to(Path("..") / name)
    t0 = time.perf_counter()
    with zoo.deterministic():
        clip = CLIPModel.from_pretrained(src / "pretrained").eval()
        vision = clip.config.vision_config
        built = (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.intermediate_size)
        assert built == (cfg.vision_hidden, cfg.vision_layers, cfg.vision_heads, cfg.vision_mlp), built
        tokenizer = AutoTokenizer.from_pretrained(src / "pretrained")
        heads = {
            t: zero_shot_head(clip, tokenizer, mini.TASKS[t].classnames, mini.TASKS[t].templates) for t in cfg.tasks
        }
        encoder = ImageEncoder.from_clip(clip).eval().requires_grad_(False)
        theta0 = {k: v.clone() for k, v in pretrained_state(encoder).items()}
        data = {
            t: {s: tuple(a.numpy() for a in zoo.load_task_split(dst, t, s)) for s in ("train", "validation", "test")}
            for t in cfg.tasks
        }
        finetuned, losses = {}, {}
        for i, task in enumerate(cfg.tasks):
            expert = copy.deepcopy(encoder)
            x, y = data[task]["train"]
            losses[task] = zoo.finetune(
                expert,
                heads[task],
                torch.from_numpy(x),
                torch.from_numpy(y),
                cfg,
                args.seed * 100 + i,
                f"fine-tune {task}",
            )
            zoo.save_vision_model(expert.vision_model, dst / "finetuned" / task)
            finetuned[task] = {k: v.detach().clone() for k, v in pretrained_state(expert).items()}
        t_ft = time.perf_counter() - t0
        accuracy, premise = zoo.evaluate_zoo(encoder, theta0, finetuned, heads, data, cfg, True)
        manifest = zoo.zoo_manifest(
            cfg, args.seed, False, tokenizer, clip, accuracy, premise, [0.0] * 20, losses, {"finetune": round(t_ft, 1)}
        )
        zoo.atomic_write_json(dst / zoo.MANIFEST, manifest)
        # geometry and the task-arithmetic path, validation split only
        val = {
            t: (torch.from_numpy(data[t]["validation"][0]), torch.from_numpy(data[t]["validation"][1]))
            for t in cfg.tasks
        }

        def predict(params, task, x):
            return zoo.predict_logits(encoder, params, heads[task], x)

        geo = geometry.task_vector_geometry(theta0, finetuned)
        path = geometry.ta_path(predict, theta0, finetuned, val)
        for row in path:
            print(f"TA lambda {row['lambda']}: acc {row['accuracy']:.1f} entropy {row['entropy']:.3f}", flush=True)
        cross = geometry.cross_transfer(predict, theta0, finetuned, val, accuracy["validation"]["zero_shot"])
    v = accuracy["validation"]
    result = {
        "args": vars(args),
        "zero_shot": v["zero_shot"],
        "individual": v["individual"],
        "ta_path": path,
        "premise": geometry.entropy_premise_holds(path),
        "tau_norm_ratio": geo["tau_norm_ratio_mean"],
        "cosine_mean": geo["cosine_mean"],
        "cross": geometry.cross_summary(cross),
        "cross_matrix": cross,
        "geometry": geo,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(
        {k: result[k] for k in ("tau_norm_ratio", "cosine_mean", "cross", "premise")},
        "ZS",
        round(v["zero_shot"]["average"], 1),
        "Ind",
        round(v["individual"]["average"], 1),
    )
    write_json(dst / "finetune.json", result)


def cmd_methods(args) -> None:
    from concrete_subspace.evaluation import average, evaluate
    from concrete_subspace.registry import run_method

    params = {}
    for kv in args.params:
        k, v = kv.split("=", 1)
        params[k] = json.loads(v)
    t0 = time.perf_counter()
    with zoo.deterministic():
        problem = zoo.load_zoo_problem(args.zoo, split="validation", seed=args.seed)
        extra = {"eval_every": args.eval_every} if args.eval_every else {}
        result = (
            run_method(args.name, problem, seed=args.seed, **params, **extra)
            if "seed" in _defaults(args.name)
            else run_method(args.name, problem, **params, **extra)
        )
        scores = evaluate(problem, result.state)
    curve = [(r.get("stage"), r["step"], round(r["avg_accuracy"], 2)) for r in result.history if "avg_accuracy" in r]
    row = {
        "name": args.name,
        "params": params,
        "seed": args.seed,
        "validation": scores,
        "average": average(scores),
        "curve": curve,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps({k: row[k] for k in ("name", "params", "seed", "average", "curve", "seconds")}))
    with open(Path(args.zoo) / "methods.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def _defaults(name: str) -> dict:
    from concrete_subspace.registry import get_method

    return get_method(name).defaults


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pretrain")
    a.add_argument("out")
    a.add_argument("--unnamed", default="none", choices=("none", "third", "half"))
    a.add_argument("--per-task", type=int, default=8000)
    a.add_argument("--steps", type=int, default=4800)
    a.add_argument("--no-shift", action="store_true")
    a.add_argument("--generic", default="", choices=("", "third", "half"), help="classes captioned generically")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--logit-scale", type=float, default=0.0, help="fix the logit scale at this value (0: learned)")
    a.add_argument("--vision-hidden", type=int, default=None, help="vision tower width (default: MiniConfig's, 96)")
    a.add_argument("--vision-layers", type=int, default=None, help="vision tower depth (default: MiniConfig's, 4)")
    a.add_argument("--vision-mlp", type=int, default=None, help="vision MLP size (default: MiniConfig's, 384)")
    b = sub.add_parser("finetune")
    b.add_argument("out")
    b.add_argument("tag")
    b.add_argument("--lr", type=float, default=3e-4)
    b.add_argument("--steps", type=int, default=1400)
    b.add_argument("--weight-decay", type=float, default=0.05)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument(
        "--shifts",
        default="own",
        choices=("own", "v2", "medium", "v3", "v3-signs", "strong"),
        help="own: the pre-training directory's task data; else that variant's shifts (own datasets; v3 = medium, "
        "the name of the v3 candidate in the probe records; v3-signs = zoo v3's, data.shifts.V3_SHIFTS)",
    )
    c = sub.add_parser("methods")
    c.add_argument("zoo")
    c.add_argument("name")
    c.add_argument("params", nargs="*")
    c.add_argument("--eval-every", type=int, default=0)
    c.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    {"pretrain": cmd_pretrain, "finetune": cmd_finetune, "methods": cmd_methods}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
