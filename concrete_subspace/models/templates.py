"""Zero-shot prompt templates and class names of the paper's eight vision tasks.

Templates are those of mlfoundations/task_vectors (``src/datasets/templates.py``), which the paper's runs and
fusion_bench both use. Class names are listed here for the six small label sets, in the label order of the
Hub datasets in :data:`concrete_subspace.data.paper.VISION_DATASETS`; Cars (196) and SUN397 (397) take their
names from the dataset's ``ClassLabel`` feature, cleaned by :func:`clean_classname` (as task_vectors derives
them from folder names), so their order always matches the labels.

Task keys (``sun397, cars, resisc45, eurosat, svhn, gtsrb, mnist, dtd``) are the column names of the
published tables in ``concrete_subspace/data/reference/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

Template = Callable[[str], str]

#: Task keys in the paper's table order.
VISION_TASKS: tuple[str, ...] = ("sun397", "cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd")


def _formats(*patterns: str) -> tuple[Template, ...]:
    """Templates as callables ``classname -> prompt`` from '{}' format strings (the strings stay inspectable)."""
    return tuple((lambda c, p=p: p.format(c)) for p in patterns)


TEMPLATE_STRINGS: dict[str, tuple[str, ...]] = {
    "cars": (
        "a photo of a {}.",
        "a photo of the {}.",
        "a photo of my {}.",
        "i love my {}!",
        "a photo of my dirty {}.",
        "a photo of my clean {}.",
        "a photo of my new {}.",
        "a photo of my old {}.",
    ),
    "dtd": (
        "a photo of a {} texture.",
        "a photo of a {} pattern.",
        "a photo of a {} thing.",
        "a photo of a {} object.",
        "a photo of the {} texture.",
        "a photo of the {} pattern.",
        "a photo of the {} thing.",
        "a photo of the {} object.",
    ),
    "eurosat": (
        "a centered satellite photo of {}.",
        "a centered satellite photo of a {}.",
        "a centered satellite photo of the {}.",
    ),
    "gtsrb": (
        'a zoomed in photo of a "{}" traffic sign.',
        'a centered photo of a "{}" traffic sign.',
        'a close up photo of a "{}" traffic sign.',
    ),
    "mnist": ('a photo of the number: "{}".',),
    "resisc45": tuple(
        f"{kind} {what} of {art}{{}}."
        for art in ("", "a ", "the ")
        for kind, what in (
            ("satellite", "imagery"),
            ("aerial", "imagery"),
            ("satellite", "photo"),
            ("aerial", "photo"),
            ("satellite", "view"),
            ("aerial", "view"),
        )
    ),
    "sun397": ("a photo of a {}.", "a photo of the {}."),
    "svhn": ('a photo of the number: "{}".',),
}

CLASSNAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(i) for i in range(10)),
    "svhn": tuple(str(i) for i in range(10)),
    "eurosat": (
        "annual crop land",
        "forest",
        "brushland or shrubland",
        "highway or road",
        "industrial buildings or commercial buildings",
        "pasture land",
        "permanent crop land",
        "residential buildings or homes or apartments",
        "river",
        "lake or sea",
    ),
    "dtd": (
        "banded",
        "blotchy",
        "braided",
        "bubbly",
        "bumpy",
        "chequered",
        "cobwebbed",
        "cracked",
        "crosshatched",
        "crystalline",
        "dotted",
        "fibrous",
        "flecked",
        "freckled",
        "frilly",
        "gauzy",
        "grid",
        "grooved",
        "honeycombed",
        "interlaced",
        "knitted",
        "lacelike",
        "lined",
        "marbled",
        "matted",
        "meshed",
        "paisley",
        "perforated",
        "pitted",
        "pleated",
        "polka-dotted",
        "porous",
        "potholed",
        "scaly",
        "smeared",
        "spiralled",
        "sprinkled",
        "stained",
        "stratified",
        "striped",
        "studded",
        "swirly",
        "veined",
        "waffled",
        "woven",
        "wrinkled",
        "zigzagged",
    ),
    "resisc45": (
        "airplane",
        "airport",
        "baseball diamond",
        "basketball court",
        "beach",
        "bridge",
        "chaparral",
        "church",
        "circular farmland",
        "cloud",
        "commercial area",
        "dense residential",
        "desert",
        "forest",
        "freeway",
        "golf course",
        "ground track field",
        "harbor",
        "industrial area",
        "intersection",
        "island",
        "lake",
        "meadow",
        "medium residential",
        "mobile home park",
        "mountain",
        "overpass",
        "palace",
        "parking lot",
        "railway",
        "railway station",
        "rectangular farmland",
        "river",
        "roundabout",
        "runway",
        "sea ice",
        "ship",
        "snowberg",
        "sparse residential",
        "stadium",
        "storage tank",
        "tennis court",
        "terrace",
        "thermal power station",
        "wetland",
    ),
    "gtsrb": (
        "red and white circle 20 kph speed limit",
        "red and white circle 30 kph speed limit",
        "red and white circle 50 kph speed limit",
        "red and white circle 60 kph speed limit",
        "red and white circle 70 kph speed limit",
        "red and white circle 80 kph speed limit",
        "end / de-restriction of 80 kph speed limit",
        "red and white circle 100 kph speed limit",
        "red and white circle 120 kph speed limit",
        "red and white circle red car and black car no passing",
        "red and white circle red truck and black car no passing",
        "red and white triangle road intersection warning",
        "white and yellow diamond priority road",
        "red and white upside down triangle yield right-of-way",
        "stop",
        "empty red and white circle",
        "red and white circle no truck entry",
        "red circle with white horizonal stripe no entry",
        "red and white triangle with exclamation mark warning",
        "red and white triangle with black left curve approaching warning",
        "red and white triangle with black right curve approaching warning",
        "red and white triangle with black double curve approaching warning",
        "red and white triangle rough / bumpy road warning",
        "red and white triangle car skidding / slipping warning",
        "red and white triangle with merging / narrow lanes warning",
        "red and white triangle with person digging / construction / road work warning",
        "red and white triangle with traffic light approaching warning",
        "red and white triangle with person walking warning",
        "red and white triangle with child and person walking warning",
        "red and white triangle with bicyle warning",
        "red and white triangle with snowflake / ice warning",
        "red and white triangle with deer warning",
        "white circle with gray strike bar no speed limit",
        "blue circle with white right turn arrow mandatory",
        "blue circle with white left turn arrow mandatory",
        "blue circle with white forward arrow mandatory",
        "blue circle with white forward or right turn arrow mandatory",
        "blue circle with white forward or left turn arrow mandatory",
        "blue circle with white keep right arrow mandatory",
        "blue circle with white keep left arrow mandatory",
        "blue circle with white arrows indicating a traffic circle",
        "white circle with gray strike bar indicating no passing for cars has ended",
        "white circle with gray strike bar indicating no passing for trucks has ended",
    ),
}

#: Number of classes per task (checks feature-derived names and heads).
NUM_CLASSES: dict[str, int] = {
    "sun397": 397,
    "cars": 196,
    "resisc45": 45,
    "eurosat": 10,
    "svhn": 10,
    "gtsrb": 43,
    "mnist": 10,
    "dtd": 47,
}


def _check_task(task: str) -> None:
    """Raise a clear KeyError for an unknown task key."""
    if task not in NUM_CLASSES:
        raise KeyError(f"unknown vision task {task!r}; known: {list(VISION_TASKS)}")


def templates(task: str) -> tuple[Template, ...]:
    """The task_vectors prompt templates of ``task`` as callables ``classname -> prompt``."""
    _check_task(task)
    return _formats(*TEMPLATE_STRINGS[task])


def clean_classname(name: str) -> str:
    """Readable class name from a dataset label: SUN397 paths '/a/abbey' or 'a/apse/indoor' -> 'apse indoor', '_' -> ' '."""
    name = name.strip()
    name = re.sub(r"^/?[a-z]/(?=.)", "", name)  # SUN397's leading one-letter folder
    return re.sub(r"\s+", " ", name.replace("/", " ").replace("_", " ")).strip()


def classnames(task: str, feature_names: Sequence[str] | None = None) -> tuple[str, ...]:
    """Class names of ``task`` in label order: the fixed list, or cleaned ``feature_names`` for Cars/SUN397.

    When both exist, the counts must agree (a mismatch means the dataset is not the one the list was made for).
    """
    _check_task(task)
    if task in CLASSNAMES:
        names = CLASSNAMES[task]
        if feature_names is not None and len(feature_names) != len(names):
            raise ValueError(
                f"{task}: dataset has {len(feature_names)} labels but the class-name list has {len(names)}"
            )
        return names
    if feature_names is None:
        raise ValueError(
            f"{task}: class names come from the dataset's label feature; pass feature_names "
            f"(e.g. dataset.features['label'].names)"
        )
    names = tuple(clean_classname(n) for n in feature_names)
    if len(names) != NUM_CLASSES[task]:
        raise ValueError(f"{task}: expected {NUM_CLASSES[task]} class names, the dataset has {len(names)}")
    return names
