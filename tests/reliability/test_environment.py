"""Issue 13, point 9: one lock file pins every dependency; `make install` and environment.yml use it; every
results file records it."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from concrete_subspace.provenance import default_lock_path, lock_info, read_lock

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements-lock.txt"


def project_requirements() -> list[Requirement]:
    """The library's dependencies and every extra's (``dev`` names the other extras by the project's own name)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in project["dependencies"] + extras if Requirement(r).name != project["name"]]


def test_lock_pins_every_dependency_of_pyproject_within_its_specifier():
    pins = read_lock(LOCK)
    assert default_lock_path() == LOCK
    for requirement in project_requirements():
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{requirement.name} is in pyproject.toml but not in {LOCK.name}; run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name]}, outside pyproject.toml's {requirement}; run `make lock`"
        )


def test_make_install_and_environment_yml_install_from_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "install -q -r $(LOCK)" in makefile and "--no-deps -e '.[dev]'" in makefile and "\nlock:" in makefile
    assert "- -r requirements-lock.txt" in (ROOT / "environment.yml").read_text()


def test_lock_info_hashes_the_lock_and_names_every_difference(tmp_path):
    info = lock_info(LOCK)
    assert info["lock_sha256"] == hashlib.sha256(LOCK.read_bytes()).hexdigest() and len(info["installed_sha256"]) == 64
    fake = tmp_path / "lock.txt"
    fake.write_text("# header\ntorch==0.0.1\nnot-installed-anywhere==1.0\n")
    differences = lock_info(fake)["differences"]
    assert differences["torch"]["locked"] == "0.0.1" and differences["torch"]["installed"].startswith("2.")
    assert differences["not-installed-anywhere"] == {"locked": "1.0", "installed": None}
    assert lock_info(fake)["matches_lock"] is False
    fake.write_text("torch>=2\n")
    with pytest.raises(ValueError, match=r"lock.txt:1: expected 'name==version'"):
        read_lock(fake)
