"""The notebook pipeline end to end on throw-away notebooks in a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from sncn import hparams
from sncn.hparams import notebook_parameters
from sncn.pipeline import find_notebooks, main, run_pipeline

REPO = Path(__file__).resolve().parent.parent


def write_notebook(path: Path, body: str, parameters: str = "") -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE: str = "smoke"\nRESULTS: str = "."' + parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


@pytest.mark.slow
def test_pipeline_runs_skips_and_stops_on_failure(tmp_path, capfd):
    notebooks, results = tmp_path / "notebooks", tmp_path / "results"
    notebooks.mkdir()
    write = "from pathlib import Path\nPath(RESULTS, 'out.txt').write_text(PROFILE)"
    write_notebook(notebooks / "01_first.ipynb", write)
    write_notebook(notebooks / "not_numbered.ipynb", "raise SystemExit('never run')")
    assert [p.name for p in find_notebooks(notebooks)] == ["01_first.ipynb"]

    assert run_pipeline("smoke", notebooks, results) == 0
    assert (results / "smoke" / "out.txt").read_text() == "smoke"
    assert (results / "smoke" / "notebooks" / "01_first.ipynb").exists()
    printed = capfd.readouterr()
    assert "done in" in printed.out
    assert f"report: {results / 'smoke' / 'report.html'}" in printed.out  # after the notebooks
    assert (
        "<h1>SelfNorm and CrossNorm: results of the smoke profile</h1>"
        in (results / "smoke" / "report.html").read_text()
    )
    assert "without encryption" not in printed.err  # the kernel's TCP warning is not shown

    assert run_pipeline("smoke", notebooks, results) == 0  # same source and parameters
    assert "up to date, skipped" in capfd.readouterr().out

    error = "raise ValueError('broken on purpose: what is missing\\nwhat to do about it')"
    write_notebook(notebooks / "02_broken.ipynb", error)
    assert (
        main(["--profile", "smoke", "--notebooks", str(notebooks), "--results", str(results)]) == 1
    )
    printed = capfd.readouterr().out
    assert "02_broken (smoke): FAILED" in printed
    # the whole message, not only its last line
    assert "ValueError: broken on purpose: what is missing\n    what to do about it" in printed
    assert (results / "smoke" / "out.txt").read_text() == "smoke"  # earlier results intact


def test_pipeline_without_notebooks(tmp_path, capsys):
    assert run_pipeline("quick", tmp_path, tmp_path / "results") == 2
    assert "no notebooks" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("only", ["1", "99", "first", "01 99"])
def test_only_names_that_match_nothing_are_an_error(tmp_path, capsys, only):
    notebooks, results = tmp_path / "notebooks", tmp_path / "results"
    notebooks.mkdir()
    for name in ("01_first", "02_second"):
        write_notebook(notebooks / f"{name}.ipynb", "raise SystemExit('never run')")
    argv = ["--only", *only.split(), "--results", str(results), "--notebooks", str(notebooks)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"no notebook named {only.split()[-1]!r}" in err
    assert "the notebooks (and their prefixes) are: 01_first (01), 02_second (02)." in err
    assert not results.exists()


@pytest.mark.parametrize(
    "preset, message",
    [
        ({"EPOCH": 3}, "of 01_first: EPOCH. The parameters are: PROFILE, RESULTS, EPOCHS."),
        ({"EPOCHS": -1}, "EPOCHS must be at least 1, got -1"),
    ],
)
def test_parameters_are_checked_before_anything_runs(
    tmp_path, capsys, monkeypatch, preset, message
):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(
        notebooks / "01_first.ipynb", "raise SystemExit('never run')", "\nEPOCHS: int = 1"
    )
    monkeypatch.setitem(hparams.NOTEBOOKS, "01_first", {"quick": preset})
    assert run_pipeline("quick", notebooks, tmp_path / "results") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_profiles_and_parameters():
    assert notebook_parameters("99_none", "smoke") == {"PROFILE": "smoke"}
    with pytest.raises(ValueError, match="smoke, quick, paper"):
        notebook_parameters("99_none", "huge")


def test_drop_images_keeps_everything_but_the_images(tmp_path):
    from sncn.pipeline import drop_images

    notebook = {"cells": [
        {"cell_type": "code", "metadata": {"papermill": {"duration": 1.5}}, "outputs": [
            {"output_type": "stream", "name": "stdout", "text": "table\n"},
            {"output_type": "display_data", "metadata": {},
             "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}},
        ]},
        {"cell_type": "markdown", "metadata": {}, "source": "# title"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}  # fmt: skip
    path = tmp_path / "07.ipynb"
    path.write_text(json.dumps(notebook))
    assert drop_images(path) == 1
    kept = json.loads(path.read_text())
    stream, figure = kept["cells"][0]["outputs"]
    assert stream == notebook["cells"][0]["outputs"][0]
    assert figure["data"] == {"text/plain": "[figure: see the profile's figures/ folder]"}
    assert kept["cells"][0]["metadata"] == {"papermill": {"duration": 1.5}}
    assert kept["cells"][1] == notebook["cells"][1]
    assert drop_images(path) == 0  # nothing left to drop
