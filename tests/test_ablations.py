"""The ablation studies: the paper's numbers per dataset, and which runs they are set beside."""

from __future__ import annotations

import matplotlib
import pytest

from sncn.experiments import ablations, cifar_c
from sncn.hparams import NOTEBOOKS, notebook_parameters

matplotlib.use("Agg")


@pytest.fixture
def fake_runs(monkeypatch):
    """``cifar_c.run`` replaced by a recorder: ``(dataset, backbone, method)`` per call."""
    calls = []

    def run(dataset, backbone, method, results_dir, **kwargs):
        calls.append((dataset, backbone, method))
        return {"mce": 30.0, "clean_error": 5.0, "cifar_c": "generated"}

    monkeypatch.setattr(cifar_c, "run", run)
    return calls


def test_backbone_tables_carry_the_numbers_of_their_dataset():
    c10 = ablations.backbone_studies(["allconv", "wrn"], "cifar10")
    c100 = ablations.backbone_studies(["allconv", "wrn"], "cifar100")
    assert sorted(c10) == ["table12_allconv", "table12_wrn", "table8_allconv", "table8_wrn",
                           "table9_allconv", "table9_wrn"]  # fmt: skip
    assert sorted(c100) == ["table10_allconv", "table10_wrn", "table11_allconv", "table11_wrn",
                            "table13_allconv", "table13_wrn"]  # fmt: skip
    assert [a.paper for a in c10["table8_allconv"]] == [24.01, 26.38, 25.56]  # Table 8
    assert [a.paper for a in c100["table10_allconv"]] == [50.30, 51.63, 51.03]  # Table 10
    assert [a.paper for a in c10["table12_wrn"]] == [17.93, 17.99, 16.77, 17.47]  # Table 12
    assert [a.paper for a in c100["table13_wrn"]] == [46.58, 45.08, 45.82, 44.46]  # Table 13
    assert {a.paper_dataset for arms in c10.values() for a in arms} == {"cifar10"}
    assert {a.paper_dataset for arms in c100.values() for a in arms} == {"cifar100"}
    # the same arms (settings) on either dataset; only the paper numbers differ
    assert [a.overrides for a in c10["table9_wrn"]] == [a.overrides for a in c100["table11_wrn"]]
    # Tables 10 and 11's WRN rows are Figure 9's CIFAR-100-C bars
    fig9 = {a.label: a.paper for a in ablations.WRN_STUDIES["fig9_positions"]}
    for kind, table in (("SN", "table10_wrn"), ("CN", "table11_wrn")):
        assert [fig9[a.label] for a in c100[table]] == [a.paper for a in c100[table]], kind
    with pytest.raises(ValueError, match="dataset"):
        ablations.backbone_studies(["wrn"], "svhn")


def test_paper_number_only_beside_runs_on_its_dataset():
    arms = ablations.backbone_studies(["densenet"], "cifar10")["table8_densenet"]
    on = {"mce": 20.0, "clean_error": 5.0, "cifar_c": "generated", "dataset": "cifar10"}
    rows = ablations.study_rows([(a, [on]) for a in arms])
    assert [r["paper mCE"] for r in rows] == [23.40, 21.96]
    assert rows[0]["dataset"] == "cifar10"
    assert "CIFAR-10-C numbers" in ablations.paper_note([(a, [on]) for a in arms])
    for other in ({**on, "dataset": "cifar100"}, {k: v for k, v in on.items() if k != "dataset"}):
        rows = ablations.study_rows([(a, [other]) for a in arms])
        assert [r["paper mCE"] for r in rows] == [None, None]
        assert "left empty" in ablations.paper_note([(a, [other]) for a in arms])
    table5 = ablations.WRN_STUDIES["table5_order"]  # CIFAR-100-C numbers
    assert [r["paper mCE"] for r in ablations.study_rows([(a, [on]) for a in table5])] == [
        None,
        None,
    ]
    c100 = {**on, "dataset": "cifar100"}
    assert [r["paper mCE"] for r in ablations.study_rows([(a, [c100]) for a in table5])] == [
        46.9,
        46.6,
    ]
    variants = ablations.WRN_STUDIES["fig9_crossnorm_variants"]
    assert "no number" in ablations.paper_note([(a, [c100]) for a in variants])


def test_run_all_runs_backbone_tables_on_their_own_dataset(fake_runs, tmp_path):
    out = ablations.run_all(["table5_order"], ["allconv"], "cifar100", "wrn", [0], tmp_path)
    assert {d for d, b, _ in fake_runs if b == "wrn"} == {"cifar100"}
    assert {d for d, b, _ in fake_runs if b == "allconv"} == {"cifar10"}
    assert sorted(out) == ["table12_allconv", "table5_order", "table8_allconv", "table9_allconv"]
    assert all(m["dataset"] == "cifar10" for _, seeds in out["table8_allconv"] for m in seeds)
    fake_runs.clear()
    out = ablations.run_all([], ["allconv"], "cifar10", "wrn", [0], tmp_path,
                            backbone_dataset="cifar100")  # fmt: skip
    assert {d for d, _, _ in fake_runs} == {"cifar100"}
    assert sorted(out) == ["table10_allconv", "table11_allconv", "table13_allconv"]
    rows = ablations.study_rows(out["table10_allconv"])
    assert [r["paper mCE"] for r in rows] == [50.30, 51.63, 51.03]


def test_paper_profile_compares_every_table_on_its_dataset(fake_runs, tmp_path):
    """The paper profile's tables: each arm with a paper number ran on that number's dataset."""
    p = notebook_parameters("02_ablations", "paper")
    assert NOTEBOOKS["02_ablations"]["paper"]["BACKBONE_DATASET"] == "cifar10"
    out = ablations.run_all(p["STUDIES"], p["BACKBONE_TABLES"], p["DATASET"], p["BACKBONE"],
                            p["SEEDS"], tmp_path, backbone_dataset=p["BACKBONE_DATASET"],
                            model_kwargs=p["MODEL_KWARGS"])  # fmt: skip
    assert {s.split("_")[0] for s in out if s.startswith("table")} >= {"table8", "table9"}
    for study, results in out.items():
        for arm, seeds in results:
            if arm.paper is not None:
                assert ablations.paper_number(arm, seeds) == arm.paper, (study, arm.label)


def test_figure9_shows_the_papers_bars_only_beside_its_dataset():
    arms = ablations.WRN_STUDIES["fig9_positions"]
    for dataset, bar_groups in (("cifar100", 2), ("cifar10", 1)):
        seeds = [{"mce": 40.0, "clean_error": 5.0, "cifar_c": "generated", "dataset": dataset}]
        fig = ablations.figure9({"fig9_positions": [(a, seeds) for a in arms]})
        assert len(fig.axes[0].containers) == bar_groups, dataset
