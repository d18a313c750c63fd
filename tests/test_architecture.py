"""The package layering (pyproject's import-linter contracts) holds: model <- data <- build <- evaluation <- training."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    proc = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_a_lower_layer_importing_a_higher_one_is_caught(tmp_path):
    """The contract is live: a copy of the package where data imports training breaks it."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "mof", copy / "mof", ignore=shutil.ignore_patterns("__pycache__", "assets"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    with open(copy / "mof" / "data" / "records.py", "a") as f:
        f.write("\nfrom ..training import module  # noqa\n")
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    proc = subprocess.run([lint, "--no-cache"], cwd=copy, capture_output=True, text=True,
                          env={"PYTHONPATH": str(copy), "PATH": str(Path(sys.executable).parent)})
    assert proc.returncode != 0 and "mof.data.records -> mof.training" in proc.stdout, proc.stdout[-2000:]
