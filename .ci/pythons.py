"""Print the interpreters CI proves the declared Python range with: the oldest and newest inside it, and
the newest below it (whose pip must refuse the package). Looks under pyenv's root and on PATH."""

import os
import re
import subprocess
import sys
from pathlib import Path

import tomllib
from packaging.specifiers import SpecifierSet
from packaging.version import Version

declared = SpecifierSet(tomllib.loads(Path("pyproject.toml").read_text())["project"]["requires-python"])
pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
candidates = [*pyenv_root.glob("versions/*/bin/python3"), Path(sys.executable)]

found: dict[Version, Path] = {}
for python in candidates:
    out = subprocess.run([python, "--version"], capture_output=True, text=True).stdout
    if match := re.fullmatch(r"Python (\d+\.\d+\.\d+)\s*", out):
        found.setdefault(Version(match[1]), python)

inside = sorted(v for v in found if v in declared)
below = sorted(v for v in found if v not in declared and v < inside[0]) if inside else []
if len(inside) < 2 or not below:
    sys.exit(f"need two Pythons in {declared} and one below it; found {sorted(map(str, found))}")
print(found[inside[0]], found[inside[-1]], found[below[-1]])
