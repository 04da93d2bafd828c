"""Notebook parameters: a profile means its values, misspelt names and bad values stop the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from sncn.hparams import NOTEBOOKS, PAPER_WHEN_NONE, PROFILES, resolve_parameters
from sncn.pipeline import declared_parameters

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
#: How papermill's injected cell reads in IPython's input history (``In``).
INJECTED = '# Parameters\nPROFILE = "quick"\nEPOCHS = 1\n'


def namespace(stem: str, **values) -> dict:
    """A notebook's globals after its parameters cell (annotations and values), updated."""
    types, defaults = declared_parameters(NOTEBOOK_DIR / f"{stem}.ipynb")
    return {"__annotations__": types, **defaults, **values}


def test_a_profile_means_its_values():
    ns = namespace("05_segmentation", PROFILE="quick")
    resolved = resolve_parameters("05_segmentation", ns, given=["PROFILE"])
    quick = NOTEBOOKS["05_segmentation"]["quick"]
    assert resolved["EPOCHS"] == quick["EPOCHS"] != ns["EPOCHS"]
    for name, value in quick.items():
        assert resolved[name] == value, name
    assert resolved["RESULTS"] == ns["RESULTS"] and resolved["PROFILE"] == "quick"


def test_explicit_values_win_over_the_profile_and_are_reported(capsys):
    ns = namespace("05_segmentation", PROFILE="quick", EPOCHS=1)  # 1 is also the smoke default
    resolved = resolve_parameters("05_segmentation", ns, given=["PROFILE", "EPOCHS"])
    assert resolved["EPOCHS"] == 1
    assert resolved["TRAIN_IMAGES"] == NOTEBOOKS["05_segmentation"]["quick"]["TRAIN_IMAGES"]
    printed = capsys.readouterr().out
    assert "profile quick" in printed and "given explicitly: EPOCHS=1" in printed


def test_smoke_is_the_parameters_cell():
    ns = namespace("05_segmentation")
    resolved = resolve_parameters("05_segmentation", ns, report=False)
    assert resolved == {name: ns[name] for name in ns["__annotations__"]}


def test_given_names_come_from_papermills_injected_cell():
    _, defaults = declared_parameters(NOTEBOOK_DIR / "05_segmentation.ipynb")
    cell = "PROFILE: str = 'smoke'\nEPOCHS: int = 1\n"
    resolve = 'globals().update(resolve_parameters("05_segmentation", globals()))'
    ns = namespace("05_segmentation", PROFILE="quick", EPOCHS=1, In=["", cell, INJECTED, resolve])
    assert resolve_parameters("05_segmentation", ns, report=False)["EPOCHS"] == 1
    # the parameters cell ran again after the injected one: nothing is given any more
    ns["In"] = ["", cell, INJECTED, resolve, cell, resolve]
    quick = NOTEBOOKS["05_segmentation"]["quick"]["EPOCHS"]
    assert resolve_parameters("05_segmentation", ns, report=False)["EPOCHS"] == quick


def test_unknown_profile_is_an_error():
    with pytest.raises(ValueError, match="'banana'; choose one of smoke, quick, paper"):
        resolve_parameters("05_segmentation", namespace("05_segmentation", PROFILE="banana"))


def test_misspelt_parameter_is_an_error_listing_the_parameters():
    ns = namespace("05_segmentation", EPOCH=3)
    with pytest.raises(ValueError, match="EPOCH\\. The parameters are: PROFILE, .*, EPOCHS, "):
        resolve_parameters("05_segmentation", ns, given=["EPOCH"])


@pytest.mark.parametrize(
    "stem, values, message",
    [
        ("05_segmentation", {"EPOCHS": -1}, "EPOCHS must be at least 1, got -1"),
        ("05_segmentation", {"EPOCHS": None}, "EPOCHS None is not a value here"),
        ("05_segmentation", {"EPOCHS": 2.5}, "EPOCHS must be int, got float"),
        ("01_cifar_c", {"EPOCHS": 0}, "None gives the paper's value, 0 does not"),
        ("01_cifar_c", {"BATCH_SIZE": 0}, "BATCH_SIZE must be at least 1"),
        ("01_cifar_c", {"METHODS": ["sncn", "sncn_crop"]}, "unknown \\['sncn_crop'\\]"),
        ("01_cifar_c", {"SEEDS": "[0, 1]"}, "SEEDS must be list.*-y 'NAME: \\[...\\]'"),
        ("01_cifar_c", {"DATASETS": []}, "DATASETS must be a non-empty list"),
        ("05_segmentation", {"CN_PROB": 1.5}, "CN_PROB must be between 0 and 1"),
        ("05_segmentation", {"IMAGE_SIZE": [64]}, "IMAGE_SIZE must be at least 1"),
        ("05_segmentation", {"DATASET": "cityscapes"}, "choose from proxy, gta5"),
        ("03_imagenet_c", {"DATA_DIR": 7}, "DATA_DIR must be str.*-r NAME VALUE"),
        ("04_semisupervised", {"EMA_DECAY": 1.0}, "EMA_DECAY must be at least 0 and below 1"),
        ("07_visualization", {"SN_SEVERITY": 6}, "SN_SEVERITY must be between 1 and 5"),
    ],
)
def test_invalid_values_stop_before_any_work(stem, values, message):
    with pytest.raises(ValueError, match=message):
        resolve_parameters(stem, namespace(stem, **values), given=list(values))


def test_every_problem_is_listed_at_once():
    ns = namespace("05_segmentation", EPOCHS=-1, LR=0.0)
    with pytest.raises(ValueError, match="(?s)EPOCHS must.*\n  LR must be above 0"):
        resolve_parameters("05_segmentation", ns, given=["EPOCHS", "LR"])


def test_none_is_the_paper_value_where_zero_was():
    """0 never means "the paper's value": None does, where the notebook says so."""
    ns = namespace("01_cifar_c", EPOCHS=None, BATCH_SIZE=None)
    resolved = resolve_parameters("01_cifar_c", ns, given=["EPOCHS", "BATCH_SIZE"], report=False)
    assert resolved["EPOCHS"] is None and resolved["BATCH_SIZE"] is None
    for stem, names in PAPER_WHEN_NONE.items():
        for name in names:
            assert NOTEBOOKS[stem]["paper"][name] is None, (stem, name)


@pytest.mark.parametrize("stem", sorted(NOTEBOOKS))
@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_of_every_notebook_is_valid(stem, profile):
    resolve_parameters(stem, namespace(stem, PROFILE=profile), given=["PROFILE"], report=False)


def run_papermill(tmp_path: Path, stem: str, parameters: dict) -> Exception:
    """Run a repository notebook's first two code cells with plain papermill (a third cell
    stops it there, so a check that let a bad value through never starts the work); return the
    error it stopped with."""
    import nbformat
    import papermill

    nb = nbformat.read(NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    nb.cells = nb.cells[: code[1] + 1] + [nbformat.v4.new_code_cell("raise SystemExit('past')")]
    nbformat.write(nb, tmp_path / f"{stem}.ipynb")
    with pytest.raises(papermill.PapermillExecutionError) as caught:
        papermill.execute_notebook(
            str(tmp_path / f"{stem}.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters=parameters,
            cwd=str(NOTEBOOK_DIR),
            progress_bar=False,
            kernel_name="python3",
            extra_arguments=["--log-level=ERROR"],
        )
    return caught.value


@pytest.mark.slow
@pytest.mark.parametrize(
    "given, message",
    [
        ({"EPOCH": 3}, "unknown parameter(s) of 05_segmentation: EPOCH. The parameters are: "),
        ({"PROFILE": "banana"}, "unknown profile 'banana'; choose one of smoke, quick, paper"),
        ({"EPOCHS": -1}, "EPOCHS must be at least 1, got -1"),
    ],
)
def test_plain_papermill_stops_in_the_second_cell(tmp_path, given, message):
    """``papermill 05_segmentation.ipynb out.ipynb -p ...`` fails before any work."""
    error = run_papermill(tmp_path, "05_segmentation", {**given, "RESULTS": str(tmp_path / "r")})
    assert error.ename == "ValueError" and "resolve_parameters" in error.source
    assert message in error.evalue
    assert not (tmp_path / "r").exists()
