"""Every notebook is tested, thin, parameterised and stored without outputs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from sncn.hparams import NOTEBOOKS, PAPER_WHEN_NONE, PROFILES

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS_ON_DISK = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def test_make_test_runs_nbval_over_every_notebook():
    """`make test` runs nbval over the notebooks folder, so no notebook can go untested."""
    makefile = (REPO / "Makefile").read_text()
    test_recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "--nbval-lax" in test_recipe and "notebooks" in test_recipe
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", p.name) for p in NOTEBOOKS_ON_DISK)


def test_registry_names_existing_notebooks_and_profiles():
    stems = {p.stem for p in NOTEBOOKS_ON_DISK}
    for stem, profiles in NOTEBOOKS.items():
        assert stem in stems, f"hparams.NOTEBOOKS names {stem}, which is not in notebooks/"
        assert set(profiles) <= set(PROFILES) - {"smoke"}


@pytest.mark.parametrize("path", NOTEBOOKS_ON_DISK, ids=lambda p: p.stem)
def test_notebook_is_thin_and_clean(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "parameters" in code[0].metadata.get("tags", []), "first code cell: parameters"
    for line in code[0].source.splitlines():  # literals only, one per line, documented
        assert re.match(r"^[A-Z_]+: \w+ = .+  # .+$", line), line
        ast.literal_eval(line.split("=", 1)[1].split("  #")[0].strip())
    for cell in code:
        assert not cell.get("outputs") and cell.get("execution_count") is None, "strip outputs"
        tree = ast.parse(cell.source)
        assert not any(
            isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(tree)
        ), "notebooks call into sncn; definitions belong in the package"


@pytest.mark.parametrize("path", NOTEBOOKS_ON_DISK, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter(path):
    """papermill parses each parameter with its type and help (``--help-notebook``)."""
    import papermill

    nb = nbformat.read(path, as_version=4)
    source = next(c.source for c in nb.cells if c.cell_type == "code")
    inspected = papermill.inspect_notebook(str(path))
    assert list(inspected) == [line.split(":")[0] for line in source.splitlines()]
    assert all(p["inferred_type_name"] != "None" and p["help"] for p in inspected.values())


@pytest.mark.parametrize("path", NOTEBOOKS_ON_DISK, ids=lambda p: p.stem)
def test_profile_overrides_are_parameters(path):
    nb = nbformat.read(path, as_version=4)
    params = nb.cells[[c.cell_type for c in nb.cells].index("code")].source
    names = {line.split(":")[0] for line in params.splitlines()}
    for profile, overrides in NOTEBOOKS.get(path.stem, {}).items():
        unknown = set(overrides) - names
        assert not unknown, f"{profile} overrides {unknown}, not in {path.name}'s parameters"


@pytest.mark.parametrize("path", NOTEBOOKS_ON_DISK, ids=lambda p: p.stem)
def test_parameters_are_resolved_right_after_the_parameters_cell(path):
    """The second code cell applies the profile and checks every value before any work."""
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert code[1].source == (
        "from sncn.hparams import resolve_parameters\n\n"
        f'globals().update(resolve_parameters("{path.stem}", globals()))'
    )


@pytest.mark.parametrize("path", NOTEBOOKS_ON_DISK, ids=lambda p: p.stem)
def test_zero_never_means_the_paper_value(path):
    """A parameter whose paper value is "the released scripts'" takes None for it, and says so."""
    nb = nbformat.read(path, as_version=4)
    params = nb.cells[[c.cell_type for c in nb.cells].index("code")].source
    assert not re.search(r"0 means|0 for the paper|0: (the paper|the released)", params)
    lines = {line.split(":")[0]: line for line in params.splitlines()}
    for name in PAPER_WHEN_NONE.get(path.stem, ()):
        assert "None" in lines[name].split("  # ")[1], lines[name]
