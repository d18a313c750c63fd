"""The package layering (pyproject's import-linter contracts) holds: model <- data <- build <- evaluation <-
training | mining | pretraining <- study."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    proc = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("module,imported", [("data/records.py", "training"), ("training/module.py", "mining"),
                                             ("evaluation/run.py", "mining"), ("pretraining/run.py", "training"),
                                             ("training/run.py", "study")])
def test_a_lower_layer_importing_a_higher_one_is_caught(tmp_path, module, imported):
    """The contracts are live: a copy of the package where a layer imports a higher one (or training and mining,
    siblings, import each other) breaks them."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "mof", copy / "mof", ignore=shutil.ignore_patterns("__pycache__", "assets"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    with open(copy / "mof" / module, "a") as f:
        f.write(f"\nfrom ..{imported} import run  # noqa\n")
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    proc = subprocess.run([lint, "--no-cache"], cwd=copy, capture_output=True, text=True,
                          env={"PYTHONPATH": str(copy), "PATH": str(Path(sys.executable).parent)})
    source = "mof." + module.removesuffix(".py").replace("/", ".")
    assert proc.returncode != 0 and f"{source} -> mof.{imported}" in proc.stdout, proc.stdout[-2000:]
