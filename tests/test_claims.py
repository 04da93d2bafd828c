"""The claims scoreboard (sncn.claims): the verdict rule, reading the tables, and that every
claim names a table, rows and columns the notebooks really write."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest
from scipy import stats

from sncn import claims

ROOT = Path(__file__).resolve().parents[1]
QUICK_TABLES = ROOT / "results" / "quick" / "tables"
PAPER = ROOT.parent / "shared" / "paper" / "selfnorm-crossnorm-iclr2021.txt"


def write_table(folder: Path, stem: str, rows: list[dict], notes: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{stem}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / f"{stem}.md").write_text(f"# {stem}\n\n{notes}\n")


def table1(cn_mean: float, cn_std: float, seeds: int, kind: str = "generated") -> list[dict]:
    base = {"dataset": "cifar10", "backbone": "wrn", "seeds": seeds, "clean error": 10.0,
            "paper mCE": "", "CIFAR-C": kind}  # fmt: skip
    return [
        {**base, "method": "basic", "mCE": 30.0, "mCE std": 1.0, "paper mCE": 26.9},
        {**base, "method": "sn", "mCE": 29.0, "mCE std": 1.0, "paper mCE": 20.78},
        {**base, "method": "cn", "mCE": cn_mean, "mCE std": cn_std, "paper mCE": 21.6},
        {**base, "dataset": "cifar100", "method": "cn", "mCE": 99.0, "mCE std": 1.0},
    ]


CN_CLAIM = next(c for c in claims.CLAIMS if c.claim.startswith("CrossNorm lowers WRN-40-2"))


@pytest.mark.parametrize(
    ("arm", "ref"),
    [
        ((25.0, 1.0, 3), (30.0, 2.0, 3)),
        ((29.0, 3.0, 5), (30.0, 1.0, 4)),
        ((1.0, 0.5, 2), (2.0, 0.1, 7)),
    ],
)
def test_interval_excludes_zero_exactly_when_welchs_test_rejects(arm, ref):
    a, r = claims.Arm("a", *arm), claims.Arm("r", *ref)
    diff, low, high = claims.difference_interval(a, r)
    assert diff == pytest.approx(arm[0] - ref[0])
    test = stats.ttest_ind_from_stats(*arm, *ref, equal_var=False)
    assert (low > 0 or high < 0) == (test.pvalue < 0.05)
    assert (low + high) / 2 == pytest.approx(diff)


def test_one_seed_gives_no_interval():
    _, low, high = claims.difference_interval(
        claims.Arm("a", 1, math.nan, 1), claims.Arm("r", 2, 1, 3)
    )
    assert math.isnan(low) and math.isnan(high)


@pytest.mark.parametrize(
    ("diff", "low", "high", "lower", "expected"),
    [
        (-5.0, -8.0, -2.0, True, "reproduced"),  # lower claimed, interval below 0
        (5.0, 2.0, 8.0, False, "reproduced"),  # higher claimed, interval above 0
        (5.0, 2.0, 8.0, True, "contradicted"),
        (-1.0, -3.0, 1.0, True, "same direction, not significant"),
        (1.0, -1.0, 3.0, True, "not resolved at this budget"),
        (-1.0, math.nan, math.nan, True, "not resolved at this budget"),
    ],
)
def test_verdict_rule(diff, low, high, lower, expected):
    assert claims.verdict(diff, low, high, lower) == expected


def test_judge_reads_the_arms_of_the_claim_from_the_table(tmp_path):
    write_table(tmp_path, "table1", table1(25.0, 1.0, 3, kind="official"))
    row = claims.judge(CN_CLAIM, tmp_path)
    assert row["verdict"] == "reproduced"
    assert row["ours"] == "cn 25.0 +- 1.0 (3 seeds)"  # cifar10 row, not cifar100's
    assert row["reference"] == "basic 30.0 +- 1.0 (3 seeds)"
    assert row["effect"] == "-5.0" and row["paper effect"] == "-5.3"
    assert row["data"] == "CIFAR-10-C (official)"


def test_judge_contradicted_and_one_seed(tmp_path):
    write_table(tmp_path / "a", "table1", table1(35.0, 1.0, 3))
    settled = claims.judge(CN_CLAIM, tmp_path / "a")
    assert settled["verdict"] == "contradicted" and settled["resolved by"] == "-"
    write_table(tmp_path / "b", "table1", table1(20.0, float("nan"), 1))
    row = claims.judge(CN_CLAIM, tmp_path / "b")
    assert row["verdict"] == "not resolved at this budget" and row["95% CI"] == "-"
    assert "fewer than 2 seeds" in row["why"]
    # what would settle it: the profile that trains WRN-40-2 as the paper does
    assert row["resolved by"].startswith("the paper profile: WRN-40-2")


def test_several_references_take_the_best_of_them(tmp_path):
    write_table(tmp_path, "table1", [*table1(27.0, 1.0, 3), {**table1(0, 0, 3)[0], "method": "sncn",
                                                              "mCE": 26.0}])  # fmt: skip
    complementary = next(c for c in claims.CLAIMS if c.table == "table1" and c.arm == "sncn")
    row = claims.judge(complementary, tmp_path)
    assert row["reference"].startswith("cn 27.0")  # cn (27) is better than sn (29)
    assert row["effect"] == "-1.0"


def test_missing_table_or_row_is_not_run(tmp_path):
    assert claims.judge(CN_CLAIM, tmp_path)["verdict"] == "not run"
    write_table(tmp_path, "table1", table1(25.0, 1.0, 3)[:2])  # no cn row
    row = claims.judge(CN_CLAIM, tmp_path)
    assert row["verdict"] == "not run" and row["why"] == "no row cn"


def test_stale_tables_are_named(tmp_path):
    write_table(tmp_path, "table1", table1(25.0, 1.0, 3), notes="- STALE: 2 of the 4 runs ...")
    assert "STALE" in claims.judge(CN_CLAIM, tmp_path)["why"]


def test_save_scoreboard_writes_claims_into_the_profile_folder(tmp_path):
    write_table(tmp_path / "tables", "table1", table1(25.0, 1.0, 3))
    rows = claims.save_scoreboard(tmp_path, "quick")
    assert len(rows) == len(claims.CLAIMS)
    text = (tmp_path / "claims.md").read_text()
    counted = f"1 reproduced, 1 same direction, not significant, {len(claims.CLAIMS) - 2} not run."
    assert counted in text  # cn: 25 +- 1 vs 30 +- 1; sn: 29 +- 1; the other tables are missing
    with (tmp_path / "claims.csv").open() as f:
        assert [r["verdict"] for r in csv.DictReader(f)] == [r["verdict"] for r in rows]


@pytest.mark.parametrize("claim", claims.CLAIMS, ids=lambda c: c.claim[:40])
def test_every_claim_names_rows_and_columns_of_the_committed_quick_tables(claim):
    found = claims.read_table(QUICK_TABLES, claim.table)
    assert found is not None, f"no table {claim.table} in results/quick/tables"
    rows, _ = found
    columns = {claim.key, claim.value, *claim.where} | {claim.std, claim.paper_value} - {None}
    assert columns <= set(rows[0]), columns - set(rows[0])
    names = (claim.reference,) if isinstance(claim.reference, str) else claim.reference
    for name in (claim.arm, *names):
        assert claims._arm(rows, claim, name) is not None, name


def test_every_claim_cites_a_table_or_figure_of_the_paper():
    if not PAPER.exists():
        pytest.skip(f"the paper's text is not at {PAPER}")
    paper = PAPER.read_text()
    for claim in claims.CLAIMS:
        places = re.findall(r"(Table|Figure)s? ([\d, ]+)", claim.paper)
        assert places, claim.paper
        for kind, numbers in places:
            for number in re.findall(r"\d+", numbers):
                assert f"{kind} {number}:" in paper, f"{claim.claim}: {kind} {number}"


def test_claims_are_unique():
    assert len({c.claim for c in claims.CLAIMS}) == len(claims.CLAIMS)


def test_readme_block_is_filled_between_its_markers(tmp_path):
    write_table(tmp_path / "tables", "table1", table1(25.0, 1.0, 3))
    claims.save_scoreboard(tmp_path, "quick")
    readme = tmp_path / "README.md"
    begin, end = (
        claims.README_BEGIN.format(profile="quick"),
        claims.README_END.format(profile="quick"),
    )
    readme.write_text(f"intro\n\n{begin}\nold\n{end}\n\nafter\n")
    assert claims.update_readme(readme, tmp_path, "quick")
    text = readme.read_text()
    assert text.startswith("intro\n\n") and text.endswith("\n\nafter\n") and "old" not in text
    assert "| CrossNorm lowers WRN-40-2's CIFAR-10-C mCE (Sec. 4.1, Tables 1, 14) |" in text
    assert "-5.0 [" in text and "| reproduced |" in text
    assert not claims.update_readme(readme, tmp_path, "quick")  # unchanged the second time
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="no <!-- claims:quick"):
        claims.update_readme(readme, tmp_path, "quick")
    with pytest.raises(FileNotFoundError, match="08_claims writes it"):
        claims.readme_block(tmp_path / "elsewhere", "quick")
