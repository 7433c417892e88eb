"""The benchmark cases: a randomly initialised ViT-B/32-sized CLIP vision tower with synthetic task vectors, heads and
images (``vit_b32``, and the seconds-long ``vit_tiny``), and the mini zoo (``mini``)."""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily at run time, so `concrete-subspace --help` stays fast
    import torch

CASES = ("mini", "vit_b32")


ALL_CASES = CASES + ("vit_tiny",)  # vit_tiny: a seconds-long smoke case, not part of the default run


# (warm-up steps, timed steps) per case when not given: a ViT-B/32 step on 2 CPU cores takes tens of seconds.
DEFAULT_STEPS = {"mini": (3, 20), "vit_b32": (1, 3), "vit_tiny": (1, 3)}


@dataclass(frozen=True)
class ViTCase:
    """Shape of the synthetic ViT case (defaults: CLIP ViT-B/32's vision tower, ~88M merged parameters)."""

    hidden: int = 768
    layers: int = 12
    heads: int = 12
    mlp: int = 3072
    patch: int = 32
    image: int = 224
    projection: int = 512
    num_tasks: int = 8
    num_classes: int = 10
    delta_scale: float = 1e-3  # task vector entries ~ N(0, delta_scale^2): small, like fine-tuning deltas
    logit_scale: float = 100.0  # CLIP's exp(logit_scale) for the zero-shot-style heads
    seed: int = 0


VIT_B32 = ViTCase()


VIT_TINY = ViTCase(hidden=64, layers=2, heads=2, mlp=128, patch=16, image=64, projection=32, num_tasks=3)  # smoke tests


VIT_CASES = {"vit_b32": VIT_B32, "vit_tiny": VIT_TINY}


def _rng(*parts: Any) -> torch.Generator:
    """A CPU generator seeded from ``parts`` (stable across processes and Python hash seeds)."""
    import torch

    return torch.Generator().manual_seed(zlib.crc32(repr(parts).encode()))


def vit_encoder(case: ViTCase = VIT_B32, device: str = "cpu"):
    """A randomly initialised CLIP vision tower + projection of the given size (an :class:`ImageEncoder`)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from concrete_subspace.models.clip_hf import ImageEncoder

    config = CLIPVisionConfig(
        hidden_size=case.hidden,
        intermediate_size=case.mlp,
        num_hidden_layers=case.layers,
        num_attention_heads=case.heads,
        image_size=case.image,
        patch_size=case.patch,
        projection_dim=case.projection,
    )
    with torch.random.fork_rng(devices=[]):  # module constructors draw from the global RNG: fork and seed it
        torch.manual_seed(case.seed)
        vision = CLIPVisionModel(config)
        vision = getattr(vision, "vision_model", vision)  # transformers 4 nests the tower; 5 is flat (same keys)
        projection = torch.nn.Linear(case.hidden, case.projection, bias=False)
    return ImageEncoder(vision, projection).to(device).eval().requires_grad_(False)


def synthetic_finetuned(pretrained: dict, task_index: int, case: ViTCase = VIT_B32) -> dict:
    """θ0 + a small random delta, made on demand for one task (so only one fine-tuned state is ever resident)."""
    import torch

    g = _rng("finetuned", case.seed, task_index)
    out = {}
    for key, value in pretrained.items():
        delta = torch.randn(value.shape, generator=g, dtype=value.dtype) * case.delta_scale
        out[key] = value + delta.to(value.device)
    return out


def synthetic_heads(case: ViTCase = VIT_B32, device: str = "cpu") -> list:
    """Zero-shot-style heads: unit-norm random class embeddings times CLIP's logit scale, one [C, D] per task."""
    import torch

    heads = []
    for t in range(case.num_tasks):
        w = torch.randn(case.num_classes, case.projection, generator=_rng("head", case.seed, t))
        heads.append((torch.nn.functional.normalize(w, dim=-1) * case.logit_scale).to(device))
    return heads


def synthetic_images(task_index: int, step: int, batch_size: int, case: ViTCase = VIT_B32, device: str = "cpu"):
    """A deterministic batch of random normalised images for (task, step)."""
    import torch

    g = _rng("images", case.seed, task_index, step)
    return torch.randn(batch_size, 3, case.image, case.image, generator=g).to(device)


def vit_problem(case: ViTCase = VIT_B32, batch_size: int = 16, device: str = "cpu"):
    """The ViT case as a :class:`MergeProblem` (task vectors stream in one fine-tuned state at a time)."""
    from concrete_subspace.models.clip_hf import pretrained_state
    from concrete_subspace.problem import MergeProblem

    encoder = vit_encoder(case, device)
    pretrained = pretrained_state(encoder)
    tasks = tuple(f"task{t}" for t in range(case.num_tasks))
    heads = dict(zip(tasks, synthetic_heads(case, device)))
    index = {t: i for i, t in enumerate(tasks)}

    def no_eval(task: str):
        return iter(())

    return MergeProblem(
        model=encoder,
        pretrained=pretrained,
        task_names=tasks,
        load_finetuned=lambda task: synthetic_finetuned(pretrained, index[task], case),
        task_logits=lambda task, features: features @ heads[task].T,
        unlabeled_batch=lambda task, step: synthetic_images(index[task], step, batch_size, case, device),
        eval_batches=no_eval,
        info=asdict(case),
    )


def mini_problem(batch_size: int = 16, device: str = "cpu"):
    """The mini zoo's problem (the full zoo if built, else the smoke zoo), or None with the reason."""
    try:
        from concrete_subspace import zoo
    except ImportError as exc:  # the zoo module is optional for the benchmark
        return None, f"concrete_subspace.zoo is not importable ({exc})"
    for smoke in (False, True):
        directory = zoo.default_zoo_dir(smoke=smoke)
        try:
            zoo.read_manifest(directory)
        except Exception:  # noqa: BLE001 - not built (or half-built): try the next one
            continue
        problem = zoo.load_zoo_problem(directory, batch_size=batch_size, device=device)
        return problem, f"{'smoke ' if smoke else ''}zoo at {directory}"
    return None, (
        f"no mini zoo built (looked in {zoo.default_zoo_dir()} and {zoo.default_zoo_dir(smoke=True)}); "
        "build it with `make zoo` (or `make zoo-smoke`)"
    )
