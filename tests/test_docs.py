"""The documentation site builds without warnings and covers every notebook and module."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="needs the dev extra")
def test_docs_build_strictly_with_a_page_per_notebook_and_module(tmp_path):
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        page = (tmp_path / "notebooks" / notebook.stem / "index.html").read_text()
        assert "Parameters" in page and f"notebooks/{notebook.name}" in page
    fidelity = (tmp_path / "fidelity" / "index.html").read_text()
    assert "Evaluation sets" in fidelity  # a row of FIDELITY.md
    api = " ".join(p.read_text() for p in (tmp_path / "api").glob("*/index.html"))
    documented = {m for m in ("layers", "corruptions", "evaluate", "metrics", "results")
                  if f'id="sncn.{m}"' in api}  # fmt: skip
    assert documented == {"layers", "corruptions", "evaluate", "metrics", "results"}
    assert not (tmp_path / "hooks.py").exists()
