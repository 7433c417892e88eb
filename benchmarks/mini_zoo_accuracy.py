"""Accuracy on the mini zoo at the same settings: concrete_subspace vs fusion_bench 0.2.33 (issue 5, point 2).

Both libraries get exactly the same inputs: the zoo's pre-trained vision tower and 8 fine-tuned towers, the same
zero-shot heads (exported from our problem, so the logits are bit-equal for equal weights) and the same sequence of
test-time batches (ours: ``problem.unlabeled_batch(task, step)``; fusion_bench: the same tensors, served by its
``get_shuffled_test_loader_iter``). Each library saves its merged vision state; ONE evaluation (ours, on the whole
test split) scores every saved state, so only the merge algorithm differs. What remains different is stated in
docs/benchmarks.md: the mask-sampling RNG streams (ours: a seeded generator; fusion_bench: the global torch RNG),
fusion_bench's entropy (softmax + eps) vs ours (log_softmax), and the order of floating-point operations.

Steps (the `all` command runs them in order; ours in the project's .venv, fusion_bench in its own venv):

    .venv/bin/python benchmarks/mini_zoo_accuracy.py all --zoo /tmp/zoo_v1_bench --work /tmp/mini_acc \\
        --fb-python /tmp/fb-venv/bin/python --steps 100 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
METHODS = {"cta": "concrete_task_arithmetic", "lwam": "layer_wise_adamerging"}


def export(zoo: Path, work: Path, steps: int, batch_size: int) -> None:
    """(ours venv) The pre-trained tower as a CLIPVisionModel dir, the heads and the TTA batches of ``steps`` steps."""
    import torch

    from concrete_subspace import zoo as zoo_module

    problem = zoo_module.load_zoo_problem(zoo, batch_size=batch_size, seed=0)
    work.mkdir(parents=True, exist_ok=True)
    zoo_module.save_vision_model(
        problem.model.vision_model, work / "pretrained_vision"
    )  # as the zoo saves fine-tuned towers
    dim = problem.model.visual_projection.weight.shape[0]
    eye = torch.eye(dim)
    heads = {
        t: problem.task_logits(t, eye).T.contiguous() for t in problem.task_names
    }  # features @ head.T, so I @ head.T
    batches = {t: torch.stack([problem.unlabeled_batch(t, s) for s in range(steps)]) for t in problem.task_names}
    manifest = zoo_module.read_manifest(zoo)
    torch.save(
        {
            "tasks": list(problem.task_names),
            "heads": heads,
            "batches": batches,
            "projection": problem.model.visual_projection.weight.detach().clone(),
            "finetuned": {t: str(zoo / manifest["layout"]["finetuned"][t]) for t in problem.task_names},
            "zoo": str(zoo),
            "zoo_created": manifest.get("created"),
            "format_version": manifest.get("format_version"),
            "steps": steps,
            "batch_size": batch_size,
        },
        work / "bundle.pt",
    )


def run_ours(zoo: Path, work: Path, method: str, seed: int, steps: int, batch_size: int) -> None:
    """(ours venv) Our method through the registry on the zoo problem; saves the merged vision state."""
    import torch

    from concrete_subspace import zoo as zoo_module
    from concrete_subspace.registry import run_method

    torch.manual_seed(seed)
    problem = zoo_module.load_zoo_problem(zoo, batch_size=batch_size, seed=0)
    params = {
        "steps": steps,
        "seed": seed,
        "progress": False,
        "log_every": 10**9,
        "eval_every": 0,
        "checkpoint_dir": None,
    }
    if method == "cta":
        params.update(scaling=0.3, temperature=0.5, lr=1e-3, init_logit=0.0, eval_mask="sample")
    else:
        params.update(init=0.3, clamp=False, lr=1e-3)  # fusion_bench's defaults (no clamp)
    start = time.perf_counter()
    result = run_method(METHODS[method], problem, **params)
    torch.save(
        {
            "state": {k: v.detach().cpu() for k, v in result.state.items()},
            "seconds": time.perf_counter() - start,
            "params": params,
        },
        work / f"ours_{method}_seed{seed}.pt",
    )


def run_fusion_bench(work: Path, method: str, seed: int, steps: int, batch_size: int) -> None:
    """(fusion_bench venv) fusion_bench's loop and final merge on the exported zoo; saves the merged vision state."""
    import importlib.util

    import lightning as L
    import torch
    from transformers import CLIPVisionModel

    bundle = torch.load(work / "bundle.pt", weights_only=False)
    spec = importlib.util.spec_from_file_location("fb_bench", ROOT / "benchmarks" / "fusion_bench_bench.py")
    fb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fb)
    tasks = bundle["tasks"]

    class Pool:
        model_names = tasks

        def load_model(self, name):
            path = work / "pretrained_vision" if name == "_pretrained_" else bundle["finetuned"][name]
            return CLIPVisionModel.from_pretrained(path).eval()

    if method == "cta":
        from fusion_bench.method.concrete_subspace.clip_concrete_task_arithmetic import (
            ConcreteTaskArithmeticAlgorithmForCLIP as Base,
        )
    else:
        from fusion_bench.method.adamerging.clip_layer_wise_adamerging import CLIPLayerWiseAdaMergingAlgorithm as Base
    counters = {t: 0 for t in tasks}
    iterators = {}

    class OnZoo(Base):
        def get_shuffled_test_loader_iter(self, task):
            def serve():
                while True:
                    step = counters[task]
                    counters[task] += 1
                    images = bundle["batches"][task][step]
                    yield images, torch.zeros(len(images), dtype=torch.long)

            return iterators.setdefault(task, serve())

        def on_test_time_adaptation_start(self):  # heads are set below (the exported ones)
            pass

    cfg = fb.config_for("concrete_task_arithmetic" if method == "cta" else "layer_wise_adamerging", steps, batch_size)
    algo = OnZoo(cfg)
    fabric = L.Fabric(accelerator="cpu", devices=1)
    fabric.launch()
    algo.fabric = fabric
    pool = Pool()
    algo.modelpool = pool
    algo.zeroshot_weights = {t: h for t, h in bundle["heads"].items()}  # our heads already carry the logit scale
    algo.logit_scale_exp = torch.tensor(1.0)
    projection = torch.nn.Linear(bundle["projection"].shape[1], bundle["projection"].shape[0], bias=False)
    projection.weight.data.copy_(bundle["projection"])
    algo.visual_projection = projection.requires_grad_(False)
    torch.manual_seed(seed)  # fusion_bench samples masks from the global RNG
    start = time.perf_counter()
    if method == "cta":
        module, mask_model = algo.setup_models()
        algo.train_mask(module=module, mask_model=mask_model)
        with torch.no_grad():  # as ConcreteTaskArithmeticAlgorithmForCLIP.run (eval_mask_type: continuous)
            mask = mask_model.sample_mask(mask_type="continuous", temperature=cfg.temperature)
            mask = {k: m / torch.mean(m) for k, m in mask.items()}
            model = module.merge_and_unload(mask)
    else:
        module = algo.construct_layer_wise_merged_model(pool)
        module = algo.test_time_adaptation(module)
        model = module.merge_and_unload()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state = {(k if k.startswith("vision_model.") else f"vision_model.{k}"): v for k, v in state.items()}
    torch.save(
        {"state": state, "seconds": time.perf_counter() - start, "params": dict(cfg)},
        work / f"fusion_bench_{method}_seed{seed}.pt",
    )


def evaluate_all(zoo: Path, work: Path, out: Path) -> dict:
    """(ours venv) Per-task test accuracy of every saved merged state, with one evaluation code for all."""
    import torch

    from concrete_subspace import zoo as zoo_module
    from concrete_subspace.evaluation import average, evaluate

    problem = zoo_module.load_zoo_problem(zoo, batch_size=16, seed=0)
    keys = list(problem.pretrained)
    rows = []
    for path in sorted(work.glob("*_seed*.pt")):
        saved = torch.load(path, weights_only=False)
        state = saved["state"]
        missing = [k for k in keys if k not in state]
        if missing:
            raise KeyError(f"{path}: merged state lacks {len(missing)} merged keys, e.g. {missing[:3]}")
        scores = evaluate(problem, {k: state[k].to(problem.pretrained[k].dtype) for k in keys})
        impl, method, seed = path.stem.rsplit("_", 2)
        rows.append(
            {
                "implementation": impl,
                "method": METHODS[method],
                "seed": int(seed[4:]),
                "accuracy": scores,
                "average": average(scores),
                "seconds": saved["seconds"],
            }
        )
    bundle = torch.load(work / "bundle.pt", weights_only=False)
    payload = {
        "zoo": str(zoo),
        "zoo_created": bundle["zoo_created"],
        "zoo_format_version": bundle["format_version"],
        "steps": bundle["steps"],
        "batch_size": bundle["batch_size"],
        "rows": rows,
        "load_average": os.getloadavg()[0],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    return payload


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["export", "ours", "fusion_bench", "evaluate", "all"])
    parser.add_argument("--zoo", type=Path, default=Path("/tmp/zoo_v1_bench"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/mini_acc"))
    parser.add_argument("--method", choices=list(METHODS), default="cta")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fb-python", default="/tmp/fb-venv/bin/python")
    parser.add_argument("--out", type=Path, default=RESULTS / "mini_zoo_accuracy.json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.command == "export":
        export(args.zoo, args.work, args.steps, args.batch_size)
    elif args.command == "ours":
        run_ours(args.zoo, args.work, args.method, args.seed, args.steps, args.batch_size)
    elif args.command == "fusion_bench":
        run_fusion_bench(args.work, args.method, args.seed, args.steps, args.batch_size)
    elif args.command == "evaluate":
        print(json.dumps(evaluate_all(args.zoo, args.work, args.out), indent=1))
    else:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(args.threads),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
        }
        common = [
            "--zoo",
            str(args.zoo),
            "--work",
            str(args.work),
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
            "--threads",
            str(args.threads),
        ]
        me = str(Path(__file__).resolve())
        subprocess.run([sys.executable, me, "export", *common], check=True, env=env)
        for method in args.methods:
            for seed in args.seeds:
                for python, impl in ((sys.executable, "ours"), (args.fb_python, "fusion_bench")):
                    print(f"{impl} {method} seed {seed}", flush=True)
                    subprocess.run(
                        [python, me, impl, "--method", method, "--seed", str(seed), *common], check=True, env=env
                    )
        subprocess.run([sys.executable, me, "evaluate", *common, "--out", str(args.out)], check=True, env=env)
        print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
