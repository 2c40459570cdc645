"""Installs must not fight the user's torch: the metadata declares ranges, `make` pins the build."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PYPROJECTS = [
    REPO / "pyproject.toml",
    REPO / "trainer" / "pyproject.toml",
    REPO / "integrations" / "langchain" / "pyproject.toml",
    REPO / "integrations" / "llamaindex" / "pyproject.toml",
]


def _torch_requirements() -> list[tuple[Path, Requirement]]:
    found = []
    for path in PYPROJECTS:
        project = tomllib.loads(path.read_text())["project"]
        groups = [project.get("dependencies", []), *project.get("optional-dependencies", {}).values()]
        found += [(path, Requirement(r)) for group in groups for r in group if Requirement(r).name == "torch"]
    return found


def test_metadata_allows_a_range_of_torch_versions() -> None:
    requirements = _torch_requirements()
    assert requirements, "kalm-rag depends on torch"
    for path, req in requirements:
        assert not any(spec.operator in ("==", "===") for spec in req.specifier), f"{path}: {req}"
        # the user's current torch and the tested one are both accepted
        assert req.specifier.contains(Version("2.6.0")) and req.specifier.contains(Version("2.13.0")), req


def test_make_pins_torch_with_a_constraints_file_on_every_install() -> None:
    constraints = (REPO / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", constraints, re.M)
    makefile = (REPO / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if re.search(r"pip(\))? install|PIP_INSTALL\)", line)]
    assert installs
    for line in installs:
        assert "PIP_INSTALL" in line or "-c $(CONSTRAINTS)" in line, line
    assert "PIP_INSTALL := $(PIP) install --quiet -c $(CONSTRAINTS)" in makefile
