"""The package layering in pyproject.toml's [tool.importlinter] holds on the real tree, and
a back-import added to a copy of it breaks the contract naming that import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages: list[str] = config["tool"]["importlinter"]["root_packages"]
    return packages


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # The tree's own packages first on the path: the copy is checked, not the installed tree.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_tree_keeps_every_contract() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken." in result.stdout


def test_a_back_import_into_the_store_breaks_the_layers(tmp_path: Path) -> None:
    for package in _packages():
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "store" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport api.errors  # noqa: E402\n")

    result = _lint_imports(tmp_path)

    assert result.returncode != 0, result.stdout + result.stderr
    out = result.stdout
    assert "Packages import only the layers below them BROKEN" in out
    assert "The blob store knows nothing of the services built on it BROKEN" in out
    assert "store.errors -> api.errors" in out
    # Nothing else changed: the contracts that do not involve the store still hold.
    assert "The cache and the router share only the replica reader KEPT" in out
