"""Run folders, tables and figures on disk; the paper's numbers are consistent with each other."""

from __future__ import annotations

import json
import math
import platform
import re

import pytest
import torch

from sncn import results


def test_run_folder_roundtrip(tmp_path):
    run = results.run_dir(tmp_path, "wrn-plain-seed0")
    assert not results.is_done(run)
    with pytest.raises(FileNotFoundError, match="has not finished"):
        results.load_metrics(run)
    written = results.save_run(run, {"epochs": 2}, {"clean_error": 12.5})
    assert results.is_done(run)
    environment = results.environment()
    assert written == {"clean_error": 12.5, "code": results.code_version(),
                       "environment": environment}  # fmt: skip
    assert environment["torch"] in (torch.__version__, torch.__version__.split("+")[0])
    assert environment["python"] == platform.python_version()
    assert results.load_metrics(run) == written
    assert json.loads((run / "params.json").read_text()) == {"epochs": 2}


def test_tables(tmp_path):
    rows = [
        {"method": "Basic", "ours": 30.123, "paper": 26.9},
        {"method": "SN", "ours": float("nan"), "paper": None},
    ]
    md = results.save_table(rows, "t1", tmp_path, title="Table 1", notes=["a note"])
    text = md.read_text()
    assert text.startswith("# Table 1")
    assert "| Basic | 30.1 | 26.9 |" in text and "| SN | - | - |" in text
    assert "- a note" in text
    csv = (tmp_path / "tables" / "t1.csv").read_text().splitlines()
    assert csv[0] == "method,ours,paper" and csv[1] == "Basic,30.123,26.9"
    with pytest.raises(ValueError):
        results.markdown_table([])


def test_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = results.save_figure(fig, "fig9", tmp_path)
    assert path.exists() and (tmp_path / "figures" / "fig9.pdf").exists()
    plt.close(fig)


def test_paper_tables_agree():
    """Table 1's SNCN column is Table 14/15's SNCN+Crop+Consistency, and Basic matches."""
    for dataset in ("cifar10", "cifar100"):
        for backbone in ("allconv", "densenet", "wrn", "resnext"):
            t1 = results.TABLE1[dataset][backbone]
            t14 = results.TABLE14[dataset][backbone]
            get1 = dict(zip(results.TABLE1_METHODS, t1, strict=True))
            get14 = dict(zip(results.TABLE14_METHODS, t14, strict=True))
            assert math.isclose(get1["Basic"], get14["Basic"], abs_tol=0.051)
            assert math.isclose(get1["SNCN"], get14["SNCN+Crop+Consistency"], abs_tol=0.051)
            assert math.isclose(get1["SNCN+AugMix"], get14["SNCN+Crop+AugMix"], abs_tol=0.051)
    assert (
        results.paper_value(results.TABLE1, results.TABLE1_METHODS, "cifar10", "wrn", "SNCN")
        == 16.9
    )
    assert (
        results.paper_value(results.TABLE1, results.TABLE1_METHODS, "svhn", "wrn", "SNCN") is None
    )


def test_run_name_digest_covers_the_config():
    name = results.run_name("cifar10", "wrn", "cn", seed=3, config={"lr": 0.1, "crop": (1, 2)})
    assert re.fullmatch(r"cifar10-wrn-cn-[0-9a-f]{8}-seed3", name)
    assert name == results.run_name(
        "cifar10", "wrn", "cn", seed=3, config={"crop": [1, 2], "lr": 0.1}
    )
    assert name != results.run_name(
        "cifar10", "wrn", "cn", seed=3, config={"lr": 0.2, "crop": (1, 2)}
    )


def test_mean_std_over_seeds():
    assert results.mean_std([1.0, 2.0, 6.0]) == pytest.approx((3.0, math.sqrt(7.0)))
    mean, std = results.mean_std([4.5])
    assert mean == 4.5 and math.isnan(std)


def test_resolution_note_says_when_a_budget_cannot_tell_rows_apart():
    one_seed = [{"arm": "Basic", "mCE": 50.0, "mCE std": float("nan"), "seeds": 1},
                {"arm": "CN", "mCE": 47.0, "mCE std": float("nan"), "seeds": 1}]  # fmt: skip
    note = results.resolution_note(one_seed, "mCE", "mCE std")
    assert "no spread over seeds" in note and "span 3.0" in note and "not resolved" in note
    rows = [{"arm": "Basic", "mCE": 50.0, "mCE std": 1.0, "seeds": 3},
            {"arm": "SN", "mCE": 49.0, "mCE std": 1.0, "seeds": 3},
            {"arm": "CN", "mCE": 45.0, "mCE std": 1.0, "seeds": 3}]  # fmt: skip
    # least significant difference: t(0.975, 4) * 1.0 * sqrt(2/3) = 2.776 * 0.816 = 2.27
    note = results.resolution_note(rows, "mCE", "mCE std")
    assert "more than 2.3 points" in note and "1 of 2 differ from Basic" in note
    assert note.endswith(": CN.")
    # another reference row: SN is within 2.3 of Basic (1.0) but not of CN (4.0)
    note = results.resolution_note(rows, "mCE", "mCE std", reference=rows[1])
    assert "1 of 2 differ from SN" in note and note.endswith(": CN.")
