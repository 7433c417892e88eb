"""Paper-scale data: the eight vision test sets through ``datasets`` and the GLUE prompts of fusion_bench.

Vision: ids as fusion_bench uses them (``VISION_DATASETS``), test splits, labels from the ``ClassLabel`` feature,
images through the CLIP preprocessing (:func:`clip_image_transform`, or a ``CLIPImageProcessor``), optionally
corrupted first (:mod:`concrete_subspace.data.corruptions`). Text: GLUE validation splits (the test splits have
no labels) rendered with fusion_bench's prompt templates (:data:`GLUE_TEMPLATES`), exact-match targets.
Nothing here downloads when ``HF_DATASETS_OFFLINE=1``; prefetch with ``python -m concrete_subspace.download``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..models.hub import load_dataset_split
from ..models.templates import VISION_TASKS, classnames

# ---------------------------------------------------------------------------------------------- vision


@dataclass(frozen=True)
class VisionDatasetSpec:
    """Where a task's images live on the Hub: id, optional config name, evaluation split."""

    dataset_id: str
    config: str | None = None
    split: str = "test"


#: task key -> Hub dataset (the Hub ids fusion_bench uses).
VISION_DATASETS: dict[str, VisionDatasetSpec] = {
    "sun397": VisionDatasetSpec("tanganke/sun397"),
    "cars": VisionDatasetSpec("tanganke/stanford_cars"),
    "resisc45": VisionDatasetSpec("tanganke/resisc45"),
    "eurosat": VisionDatasetSpec("tanganke/eurosat"),
    "svhn": VisionDatasetSpec("ufldl-stanford/svhn", "cropped_digits"),
    "gtsrb": VisionDatasetSpec("tanganke/gtsrb"),
    "mnist": VisionDatasetSpec("ylecun/mnist"),
    "dtd": VisionDatasetSpec("tanganke/dtd"),
}

#: CLIP's image normalisation (OpenAI; identical in transformers' CLIPImageProcessor and open_clip).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def image_and_label_columns(features: Mapping[str, Any]) -> tuple[str, str]:
    """Names of the image column and the ClassLabel column of a ``datasets`` feature dict."""
    import datasets

    images = [k for k, f in features.items() if isinstance(f, datasets.Image)]
    labels = [k for k, f in features.items() if isinstance(f, datasets.ClassLabel)]
    if len(images) != 1 or len(labels) != 1:
        raise ValueError(
            f"expected one Image and one ClassLabel column, got images={images} labels={labels} "
            f"in features {list(features)}"
        )
    return images[0], labels[0]


def label_names(dataset: Any) -> list[str]:
    """The ClassLabel names of a ``datasets.Dataset`` (label order)."""
    return list(dataset.features[image_and_label_columns(dataset.features)[1]].names)


def resize_center_crop(image: Any, size: int = 224) -> Any:
    """CLIP geometry on a PIL image: RGB, shorter side -> ``size`` (bicubic), centre crop ``size`` x ``size``."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    image = image.convert("RGB")
    image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC)
    return TF.center_crop(image, [size, size])


def normalize_clip(pixels: Tensor) -> Tensor:
    """[.., 3, H, W] floats in [0, 1] -> CLIP-normalised pixel values."""
    mean = torch.tensor(OPENAI_CLIP_MEAN, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    return (pixels - mean) / std


def clip_image_transform(
    size: int = 224, corruption: Callable[[Tensor], Tensor] | None = None
) -> Callable[[Any], Tensor]:
    """PIL image -> [3, size, size] CLIP pixel values (resize, crop, [0,1], optional corruption, normalise).

    Matches open_clip's validation preprocessing and transformers' CLIPImageProcessor up to resampling details;
    pass ``processor=`` to :class:`VisionTestSet` for the exact HF processor of a checkpoint instead.
    """
    from torchvision.transforms import functional as TF

    def transform(image: Any) -> Tensor:
        pixels = TF.to_tensor(resize_center_crop(image, size))
        if corruption is not None:
            pixels = corruption(pixels)
        return normalize_clip(pixels)

    return transform


def processor_transform(processor: Any) -> Callable[[Any], Tensor]:
    """PIL image -> pixel values through a transformers image processor (e.g. a checkpoint's CLIPImageProcessor)."""

    def transform(image: Any) -> Tensor:
        return processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    return transform


class VisionTestSet(torch.utils.data.Dataset):
    """A ``datasets.Dataset`` of (image, label) rows as ``(pixel_values, label)`` pairs, transformed lazily."""

    def __init__(self, hf_dataset: Any, transform: Callable[[Any], Tensor], limit: int | None = None):
        self.data = hf_dataset
        self.image_column, self.label_column = image_and_label_columns(hf_dataset.features)
        self.transform = transform
        self.length = len(hf_dataset) if limit is None else min(limit, len(hf_dataset))
        self.classnames_raw = list(hf_dataset.features[self.label_column].names)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a test set of {self.length} images")
        row = self.data[int(index)]
        return self.transform(row[self.image_column]), torch.tensor(int(row[self.label_column]))

    @property
    def labels(self) -> Tensor:
        """All labels (read from the label column only, without decoding images)."""
        return torch.as_tensor(self.data[self.label_column][: self.length])


def load_vision_test_set(
    task: str,
    *,
    transform: Callable[[Any], Tensor] | None = None,
    limit: int | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    source: str | None = None,
) -> VisionTestSet:
    """Test split of ``task`` (a key of :data:`VISION_DATASETS`) as a lazily transformed torch Dataset.

    ``source`` overrides the Hub id with a local ``save_to_disk`` directory; ``limit`` keeps the first rows.
    """
    if task not in VISION_DATASETS:
        raise KeyError(f"unknown vision task {task!r}; known: {list(VISION_TASKS)}")
    spec = VISION_DATASETS[task]
    data = load_dataset_split(
        source or spec.dataset_id,
        spec.split,
        name=None if source else spec.config,
        revision=revision,
        cache_dir=cache_dir,
    )
    return VisionTestSet(data, transform or clip_image_transform(), limit=limit)


def task_classnames(task: str, test_set: VisionTestSet) -> tuple[str, ...]:
    """Zero-shot class names of ``task`` checked against (or, for Cars/SUN397, read from) the dataset labels."""
    return classnames(task, test_set.classnames_raw)


# ---------------------------------------------------------------------------------------------- GLUE

GLUE_TASKS: tuple[str, ...] = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb")
GLUE_DATASET_ID = "nyu-mll/glue"
#: Evaluation split per task (fusion_bench: validation; MNLI matched).
GLUE_SPLITS: dict[str, str] = {t: "validation" for t in GLUE_TASKS} | {"mnli": "validation_matched"}

#: fusion_bench's prompt templates (``glue_prompt_templates.py``), spelling kept as the models were trained on it.
GLUE_TEMPLATES: dict[str, dict[str, Any]] = {
    "cola": {
        "input": 'Indicate if the following sentence is grammatically correct or not: "{sentence}". '
        "Answere 'acceptable' or 'unacceptable'.",
        "target": {0: "unacceptable", 1: "acceptable"},
    },
    "mnli": {
        "input": "Does the premise: '{premise}' logically imply, contradict, or is neutral to the hypothesis: "
        "'{hypothesis}'? Answere with 'entailment', 'contradiction', or 'neutral'.",
        "target": {0: "entailment", 1: "neutral", 2: "contradiction"},
    },
    "mrpc": {
        "input": "Are the following sentences '{sentence1}' and '{sentence2}' conveying the same meaning? "
        "Answere with 'yes' or 'no'.",
        "target": {0: "no", 1: "yes"},
    },
    "qnli": {
        "input": "Given the context: '{sentence}', does the question '{question}' have an answer based on the "
        "information provided? Answer with 'yes' or 'no'.",
        "target": {0: "yes", 1: "no"},
    },
    "qqp": {
        "input": "Do the questions '{question1}' and '{question2}' have the same intent? Answere with 'yes' or 'no'.",
        "target": {0: "no", 1: "yes"},
    },
    "rte": {
        "input": "Does the text: '{sentence1}' entail that '{sentence2}' is true? Provide 'yes' or 'no'.",
        "target": {0: "yes", 1: "no"},
    },
    "sst2": {
        "input": "Given the sentence '{sentence}', determine the sentiment. Is it positive or negative?",
        "target": {0: "negative", 1: "positive"},
    },
    "stsb": {
        "input": "Consider the sentences '{sentence1}' and '{sentence2}'. On a scale from 1 (completely "
        "different) to 5 (completely similar), rate the similarity.",
        "target": "{:.1f}",
    },
}


def glue_prompt(task: str, example: Mapping[str, Any]) -> tuple[str, str]:
    """(input text, target text) of one GLUE example, as fusion_bench renders it (target '' for unknown labels)."""
    if task not in GLUE_TEMPLATES:
        raise KeyError(f"unknown GLUE task {task!r}; known: {list(GLUE_TASKS)}")
    template = GLUE_TEMPLATES[task]
    try:
        text = template["input"].format(**example)
    except KeyError as err:
        raise KeyError(f"GLUE {task} example lacks field {err.args[0]!r}; has {sorted(example)}") from None
    label = example["label"]
    if task == "stsb":
        return text, template["target"].format(float(label))
    return text, template["target"].get(int(label), "")


def glue_prompts(task: str, rows: Sequence[Mapping[str, Any]] | Any) -> tuple[list[str], list[str]]:
    """Inputs and targets of many examples (a list of dicts or a ``datasets.Dataset``)."""
    pairs = [glue_prompt(task, row) for row in rows]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def load_glue(
    task: str,
    split: str | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    source: str | None = None,
    limit: int | None = None,
) -> tuple[list[str], list[str]]:
    """Prompts and targets of a GLUE split (default: the evaluation split) from the Hub or a local saved dataset."""
    if task not in GLUE_TASKS:
        raise KeyError(f"unknown GLUE task {task!r}; known: {list(GLUE_TASKS)}")
    split = split or GLUE_SPLITS[task]
    data = load_dataset_split(
        source or GLUE_DATASET_ID, split, name=None if source else task, revision=revision, cache_dir=cache_dir
    )
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    return glue_prompts(task, data)
