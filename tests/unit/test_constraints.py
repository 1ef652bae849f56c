"""constraints.txt (the exact versions make install takes) must stay inside pyproject's ranges.

A pin outside a range makes pip refuse the install on a fresh clone, which CI would only find
after a 3-minute install; a dependency with no pin is exactly what let an upstream release
(transformers 5.25) change a fresh clone between two sessions.
"""
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
UNPINNED = {"torch"}  # the Makefile pins the CPU wheel; a CUDA machine takes its own build


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact 'name==version' pin"
            pins[canonicalize_name(name)] = version
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in ("dev", "web", "bench"):
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def test_every_runtime_and_dev_dependency_is_pinned_inside_its_pyproject_range():
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        if name in UNPINNED:
            assert name not in pins, f"constraints.txt pins {name}, which the Makefile installs itself"
            continue
        assert name in pins, f"constraints.txt has no pin for {req.name} (pyproject: {req})"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {req}")


def test_the_makefile_installs_with_the_constraints_and_reinstalls_when_they_change():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt -e \".[dev]\"" in makefile
    assert "$(STAMP): pyproject.toml constraints.txt" in makefile
