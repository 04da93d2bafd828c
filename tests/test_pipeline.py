"""The notebook pipeline end to end on throw-away notebooks in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from sncn.hparams import notebook_parameters
from sncn.pipeline import find_notebooks, main, run_pipeline


def write_notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE: str = "smoke"\nRESULTS: str = "."')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


@pytest.mark.slow
def test_pipeline_runs_skips_and_stops_on_failure(tmp_path, capsys):
    notebooks, results = tmp_path / "notebooks", tmp_path / "results"
    notebooks.mkdir()
    write = "from pathlib import Path\nPath(RESULTS, 'out.txt').write_text(PROFILE)"
    write_notebook(notebooks / "01_first.ipynb", write)
    write_notebook(notebooks / "not_numbered.ipynb", "raise SystemExit('never run')")
    assert [p.name for p in find_notebooks(notebooks)] == ["01_first.ipynb"]

    assert run_pipeline("smoke", notebooks, results) == 0
    assert (results / "smoke" / "out.txt").read_text() == "smoke"
    assert (results / "smoke" / "notebooks" / "01_first.ipynb").exists()
    assert "done in" in capsys.readouterr().out

    assert run_pipeline("smoke", notebooks, results) == 0  # same source and parameters
    assert "up to date, skipped" in capsys.readouterr().out

    write_notebook(notebooks / "02_broken.ipynb", "raise ValueError('broken on purpose')")
    assert (
        main(["--profile", "smoke", "--notebooks", str(notebooks), "--results", str(results)]) == 1
    )
    printed = capsys.readouterr().out
    assert "02_broken (smoke): FAILED" in printed and "broken on purpose" in printed
    assert (results / "smoke" / "out.txt").read_text() == "smoke"  # earlier results intact


def test_pipeline_without_notebooks(tmp_path, capsys):
    assert run_pipeline("quick", tmp_path, tmp_path / "results") == 0
    assert "no notebooks" in capsys.readouterr().out


def test_profiles_and_parameters():
    assert notebook_parameters("99_none", "smoke") == {"PROFILE": "smoke"}
    with pytest.raises(ValueError, match="smoke, quick, paper"):
        notebook_parameters("99_none", "huge")
