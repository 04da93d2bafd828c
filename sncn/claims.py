"""The paper's claims, each with a verdict computed from a profile's tables.

One place lists the claims (:data:`CLAIMS`): a sentence, where the paper makes it, and which
table of ``results/<profile>/tables/`` holds the two arms it compares (the tables are written by
the notebooks from the run files, :mod:`sncn.results`). :func:`scoreboard` reads those tables and
gives each claim our effect (mean +- std over seeds for each arm, the difference with a 95%
confidence interval), the paper's effect, where the data came from, and a verdict by one rule
(:func:`verdict`):

- ``reproduced``: the 95% confidence interval of the difference lies on the paper's side of 0;
- ``contradicted``: it lies on the other side;
- ``same direction, not significant``: the mean difference has the paper's sign, the interval
  holds 0;
- ``not resolved at this budget``: the interval holds 0 and the mean difference has the other
  sign, or an arm has fewer than 2 seeds (no spread, so no interval);
- ``not run``: the table or one of its arms is missing.

The interval is Welch's (unequal variances) over the seeds of the two arms: it measures how much
the difference varies from seed to seed on this test set. It does not include the sampling error
of a small test set, which is the same for both arms.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy import stats

from sncn import results

VERDICTS = (
    "reproduced",
    "same direction, not significant",
    "not resolved at this budget",
    "contradicted",
    "not run",
)

#: Words of a table's notes that name where its data came from, in the order they are looked for.
DATA_NOTES = (
    ("PROXY", "generated proxy"),
    ("NOT ImageNet", "CIFAR-10 as an ImageNet-format folder (not ImageNet)"),
    ("generated, not the released ImageNet-C", "ImageNet-C generated here"),
)


@dataclass(frozen=True)
class Claim:
    """A comparison the paper makes, and where a profile's tables hold its two arms.

    Attributes:
        claim: the sentence, as a reader would check it.
        paper: where the paper makes it (section, table or figure).
        table: the table's stem under ``results/<profile>/tables/``.
        arm: the row the claim is about (the value of column ``key``).
        reference: the row(s) it is compared with; with several, the best of them by mean (the
            harder comparison).
        value: the column compared; ``lower`` says which way is better.
        std: the column of the standard deviation over seeds (None: the table has none).
        where: other columns a row must match (e.g. ``{"augmentation": "WA"}``).
        key: the column naming the rows.
        paper_value: the column of the paper's numbers (None: the table has none).
        data: the column naming the data (e.g. ``"CIFAR-C"``); when the table has no such
            column, the table's notes (:data:`DATA_NOTES`), else ``default_data``.
        resolves: what would settle the claim when a profile's verdict does not (the profile,
            and the data it needs), shown with every verdict but reproduced and contradicted.
    """

    claim: str
    paper: str
    table: str
    arm: str
    reference: str | tuple[str, ...]
    value: str
    lower: bool
    std: str | None = None
    where: Mapping[str, str] = field(default_factory=dict)
    key: str = "method"
    paper_value: str | None = None
    data: str | None = None
    default_data: str = ""
    resolves: str = "the paper profile (GPUs)"


_T1 = {"table": "table1", "value": "mCE", "lower": True, "std": "mCE std",
       "where": {"dataset": "cifar10", "backbone": "wrn"}, "paper_value": "paper mCE",
       "data": "CIFAR-C", "default_data": "CIFAR-10-C",
       "resolves": "the paper profile: WRN-40-2, 100 epochs on all 50,000 images (GPUs); "
                   "01's budget curves show the trend"}  # fmt: skip
_T1_GAP = {**_T1, "value": "mCE - clean", "std": "mCE - clean std", "paper_value": None}
_T4 = {"table": "table4", "value": "target acc", "lower": False, "std": "target std",
       "paper_value": "paper target", "default_data": "IMDb -> SST-2",
       "resolves": "the paper profile: 20 epochs, more seeds (a CPU can run it)"}  # fmt: skip
_T20 = {"table": "table20_segmentation", "value": "target mIoU", "lower": False,
        "std": "target std", "paper_value": "paper target",
        "default_data": "GTA5 -> Cityscapes",
        "resolves": "the paper profile, GTA5 and Cityscapes in the data root (GPUs)"}  # fmt: skip
_F4 = {"table": "figure4", "value": "corruption error", "lower": True, "key": "method",
       "std": "corruption std",
       "arm": "FixMatch + CN (all)", "reference": "FixMatch", "data": "CIFAR-10-C",
       "default_data": "CIFAR-10-C",
       "resolves": "the paper profile: FixMatch's 1,024 epochs of 1,024 steps (GPUs)"}  # fmt: skip
_IN = {"table": "table19_imagenet_c", "value": "mCE", "lower": True, "paper_value": "paper mCE",
       "default_data": "ImageNet-C",
       "resolves": "the paper profile, ImageNet and ImageNet-C in the data root (GPU)"}  # fmt: skip

#: The paper's claims that the notebooks' tables can test, in the paper's order.
# fmt: off
CLAIMS: tuple[Claim, ...] = (
    Claim("SelfNorm lowers WRN-40-2's CIFAR-10-C mCE", "Sec. 4.1, Tables 1, 14",
          arm="sn", reference="basic", **_T1),
    Claim("CrossNorm lowers WRN-40-2's CIFAR-10-C mCE", "Sec. 4.1, Tables 1, 14",
          arm="cn", reference="basic", **_T1),
    Claim("SN and CN are complementary: SNCN (+crop) below both SN and CN", "Sec. 4.1, Table 14",
          arm="sncn", reference=("sn", "cn"), **_T1),
    # the paper's robustness claim measured apart from clean error (issue 15): the corruption
    # gap mCE - clean error; the paper reports no such number
    Claim("SelfNorm narrows WRN's corruption gap (mCE - clean error)",
          "Sec. 4.1, Tables 1, 14 (our measure)", arm="sn", reference="basic", **_T1_GAP),
    Claim("CrossNorm narrows WRN's corruption gap (mCE - clean error)",
          "Sec. 4.1, Tables 1, 14 (our measure)", arm="cn", reference="basic", **_T1_GAP),
    Claim("SNCN (+crop) narrows WRN's corruption gap (mCE - clean error)",
          "Sec. 4.1, Tables 1, 14 (our measure)", arm="sncn", reference="basic", **_T1_GAP),
    Claim("SelfNorm lowers ResNet-50's ImageNet-C mCE", "Sec. 4.1, Table 19",
          arm="sn", reference="basic", **_IN),
    Claim("CrossNorm lowers ResNet-50's ImageNet-C mCE", "Sec. 4.1, Table 19",
          arm="cn", reference="basic", **_IN),
    Claim("SN and CN are complementary on ImageNet-C: SNCN below both", "Sec. 4.1, Table 19",
          arm="sncn", reference=("sn", "cn"), **_IN),
    Claim("CN (all data) lowers FixMatch's corruption error (weak augmentation, 250 labels)",
          "Sec. 4.1, Figure 4", where={"augmentation": "WA", "labels": "250"}, **_F4),
    Claim("CN (all data) lowers FixMatch's corruption error (RandAugment, 250 labels)",
          "Sec. 4.1, Figure 4", where={"augmentation": "RA", "labels": "250"}, **_F4),
    Claim("SelfNorm raises target mIoU (synthetic to real)", "Sec. 4.2, Table 3",
          arm="SN", reference="Baseline", **_T20),
    Claim("CrossNorm (+crop) raises target mIoU (synthetic to real)", "Sec. 4.2, Table 3",
          arm="CN+Crop", reference="Baseline", **_T20),
    Claim("Cropping helps CrossNorm: CN+Crop above CN in target mIoU", "Appendix, Table 20",
          arm="CN+Crop", reference="CN", **_T20),
    Claim("SNCN (+crop) gives the best target mIoU", "Sec. 4.2, Table 3",
          arm="SNCN+Crop", reference=("SN", "CN+Crop"), **_T20),
    Claim("SelfNorm raises SST-2 accuracy (IMDb to SST-2)", "Sec. 4.3, Table 4",
          arm="sn", reference="baseline", **_T4),
    Claim("CrossNorm raises SST-2 accuracy (IMDb to SST-2)", "Sec. 4.3, Table 4",
          arm="cn", reference="baseline", **_T4),
    Claim("SNCN raises SST-2 accuracy (IMDb to SST-2)", "Sec. 4.3, Table 4",
          arm="sncn", reference="baseline", **_T4),
)
# fmt: on


@dataclass(frozen=True)
class Arm:
    """One row of a table: its mean, its standard deviation over seeds and its number of seeds."""

    name: str
    mean: float
    std: float
    seeds: int
    paper: float | None = None


def difference_interval(arm: Arm, reference: Arm, level: float = 0.95):
    """``(difference, low, high)``: ``arm.mean - reference.mean`` and Welch's confidence
    interval at ``level``; low and high are nan when an arm has fewer than 2 seeds or no std."""
    diff = arm.mean - reference.mean
    if min(arm.seeds, reference.seeds) < 2 or math.isnan(arm.std) or math.isnan(reference.std):
        return diff, math.nan, math.nan
    va, vr = arm.std**2 / arm.seeds, reference.std**2 / reference.seeds
    se = math.sqrt(va + vr)
    if se == 0:
        return diff, diff, diff
    dof = (va + vr) ** 2 / (va**2 / (arm.seeds - 1) + vr**2 / (reference.seeds - 1))
    half = stats.t.ppf(0.5 + level / 2, dof) * se
    return diff, diff - half, diff + half


def verdict(diff: float, low: float, high: float, lower: bool) -> str:
    """The verdict of the module's rule on a difference (arm - reference) and its interval;
    ``lower``: the paper claims the arm's value is lower."""
    sign = -1.0 if lower else 1.0  # positive: the paper's direction
    if math.isnan(low):
        return "not resolved at this budget"
    low, high = sorted((sign * low, sign * high))
    if low > 0:
        return "reproduced"
    if high < 0:
        return "contradicted"
    return "same direction, not significant" if sign * diff > 0 else "not resolved at this budget"


def read_table(folder: str | os.PathLike, stem: str) -> tuple[list[dict[str, str]], str] | None:
    """The rows of ``<folder>/<stem>.csv`` and the text of ``<stem>.md`` ('' without it), or None
    when the csv is not there."""
    path = Path(folder) / f"{stem}.csv"
    if not path.exists():
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    md = path.with_suffix(".md")
    return rows, (md.read_text() if md.exists() else "")


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "-") else math.nan
    except ValueError:
        return math.nan


def _arm(rows: Sequence[Mapping[str, str]], claim: Claim, name: str) -> Arm | None:
    """The row ``name`` of a claim's table as an :class:`Arm` (None: not there, or no value)."""
    found = [
        r for r in rows
        if r.get(claim.key) == name and all(r.get(k) == v for k, v in claim.where.items())
    ]  # fmt: skip
    if not found or math.isnan(_number(found[0].get(claim.value))):
        return None
    row = found[0]
    seeds = _number(row.get("seeds"))
    paper = _number(row.get(claim.paper_value)) if claim.paper_value else math.nan
    return Arm(
        name=name,
        mean=_number(row[claim.value]),
        std=_number(row.get(claim.std)) if claim.std else math.nan,
        seeds=1 if math.isnan(seeds) else int(seeds),
        paper=None if math.isnan(paper) else paper,
    )


def _data(claim: Claim, rows: Sequence[Mapping[str, str]], notes: str) -> str:
    """Where a claim's data came from: the table's data column, its notes, or the default."""
    if claim.data and rows and claim.data in rows[0]:
        kinds = sorted({r[claim.data] for r in rows if r.get(claim.data)})
        return f"{claim.default_data} ({', '.join(kinds)})" if kinds else claim.default_data
    for word, label in DATA_NOTES:
        if word in notes:
            return label
    return claim.default_data


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _stale(notes: str) -> bool:
    return bool(re.search(r"\bSTALE\b", notes))


def judge(claim: Claim, tables: str | os.PathLike) -> dict[str, Any]:
    """One scoreboard row for ``claim`` from the tables folder ``tables``."""
    row: dict[str, Any] = {"claim": claim.claim, "paper": claim.paper, "table": claim.table}
    found = read_table(tables, claim.table)
    rows, notes = found if found else ([], "")
    names = (claim.reference,) if isinstance(claim.reference, str) else claim.reference
    arms = {n: _arm(rows, claim, n) for n in (claim.arm, *names)}
    missing = [n for n, a in arms.items() if a is None]
    if missing:
        why = "no table" if found is None else f"no row {', '.join(missing)}"
        return {**row, "data": claim.default_data, "ours": "-", "reference": "-", "effect": "-",
                "95% CI": "-", "paper effect": "-", "verdict": "not run", "why": why,
                "resolved by": claim.resolves}  # fmt: skip
    arm = arms[claim.arm]
    ref = (min if claim.lower else max)((arms[n] for n in names), key=lambda a: a.mean)
    diff, low, high = difference_interval(arm, ref)
    paper = None if arm.paper is None or ref.paper is None else arm.paper - ref.paper
    seeds = min(arm.seeds, ref.seeds)

    def shown(a: Arm) -> str:
        spread = "" if math.isnan(a.std) else f" +- {_cell(a.std)}"
        return f"{a.name} {_cell(a.mean)}{spread} ({a.seeds} seed{'s' if a.seeds > 1 else ''})"

    result = verdict(diff, low, high, claim.lower)
    if seeds < 2:
        why = "fewer than 2 seeds: no spread"
    else:
        why = "Welch 95% CI over seeds" if claim.std else "the table gives no spread over seeds"
    if _stale(notes):
        why += "; the table notes STALE runs"
    if results.SAMPLE_MARK in notes:
        why += f"; the table is from the {results.SAMPLE_MARK} (not the real data)"
    return {
        **row,
        "data": _data(claim, rows, notes),
        "ours": shown(arm),
        "reference": shown(ref),
        "effect": f"{diff:+.1f}",
        "95% CI": "-" if math.isnan(low) else f"[{low:+.1f}, {high:+.1f}]",
        "paper effect": "-" if paper is None else f"{paper:+.1f}",
        "verdict": result,
        "why": why,
        "resolved by": "-" if result in ("reproduced", "contradicted") else claim.resolves,
    }


def scoreboard(tables: str | os.PathLike, claims: Sequence[Claim] = CLAIMS) -> list[dict]:
    """Every claim's row (:func:`judge`) from the tables folder of one profile."""
    return [judge(claim, tables) for claim in claims]


def save_scoreboard(profile_dir: str | os.PathLike, profile: str) -> list[dict]:
    """Write ``claims.{csv,md}`` into ``profile_dir`` (``results/<profile>``) from its tables and
    return the rows. The markdown says the rule and counts the verdicts."""
    profile_dir = Path(profile_dir)
    rows = scoreboard(profile_dir / "tables")
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    notes = [
        f"profile {profile}: {len(rows)} claims; "
        + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ".",
        "effect: ours (arm) - ours (reference), in the table's unit; paper effect: the same "
        "difference of the paper's numbers; with several references, the best of them by mean.",
        "verdict: reproduced / contradicted when Welch's 95% interval over seeds lies on the "
        "paper's / the other side of 0; same direction, not significant when it holds 0 and the "
        "mean is on the paper's side; otherwise, or with fewer than 2 seeds, not resolved at this "
        "budget (sncn.claims).",
        "resolved by: for a claim this profile does not settle, the profile (and data) that can.",
    ]  # fmt: skip
    sampled = [p.stem for p in sorted((profile_dir / "tables").glob("*.md"))
               if results.SAMPLE_MARK in p.read_text()]  # fmt: skip
    if sampled:
        notes.append(f"{results.SAMPLE_MARK}: {len(sampled)} of the tables behind these verdicts "
                     "were made from the embedded sample, not the real data; their verdicts say "
                     "nothing about the paper.")  # fmt: skip
    results.save_table(
        rows,
        "claims",
        profile_dir,
        title="The paper's claims: verdicts from this profile's tables",
        notes=notes,
        subfolder="",
    )
    return rows


#: The markers around the README's scoreboard (:func:`update_readme`).
README_BEGIN = "<!-- claims:{profile} (generated by python -m sncn.claims; do not edit) -->"
README_END = "<!-- /claims:{profile} -->"


def readme_block(profile_dir: str | os.PathLike, profile: str) -> str:
    """The README's scoreboard for a profile, from its ``claims.csv`` (:func:`save_scoreboard`):
    a compact table with the markers of :data:`README_BEGIN` and :data:`README_END`."""
    path = Path(profile_dir) / "claims.csv"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run python -m sncn.pipeline --profile {profile} (its notebook "
            "08_claims writes it) first."
        )
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    table = [
        {
            "claim (paper)": f"{r['claim']} ({r['paper']})",
            "ours vs reference": f"{r['ours']} vs {r['reference']}",
            "effect [95% CI]": r["effect"] + ("" if r["95% CI"] == "-" else f" {r['95% CI']}"),
            "paper effect": r["paper effect"],
            "data": r["data"],
            "verdict": r["verdict"],
        }
        for r in rows
    ]
    return "\n".join(
        [README_BEGIN.format(profile=profile), results.markdown_table(table).rstrip("\n"),
         README_END.format(profile=profile)]
    )  # fmt: skip


def update_readme(readme: str | os.PathLike, profile_dir: str | os.PathLike, profile: str) -> bool:
    """Replace the README's scoreboard block of ``profile`` by :func:`readme_block`; True when
    the README changed. The README must hold the two markers already (where the block goes)."""
    readme = Path(readme)
    text = readme.read_text()
    begin, end = README_BEGIN.format(profile=profile), README_END.format(profile=profile)
    if begin not in text or end not in text:
        raise ValueError(f"{readme} has no {begin} ... {end} block to fill.")
    head, rest = text.split(begin, 1)
    new = head + readme_block(profile_dir, profile) + rest.split(end, 1)[1]
    if new != text:
        readme.write_text(new)
    return new != text


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``python -m sncn.claims --profile quick``: write the scoreboard from the profile's tables
    and fill the README's block with it."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    parser.add_argument("--profile", default="quick", help="the profile whose results to read")
    parser.add_argument("--results", default="results", help="results root")
    parser.add_argument("--readme", default="README.md", help="the README to update")
    args = parser.parse_args(argv)
    profile_dir = Path(args.results) / args.profile
    save_scoreboard(profile_dir, args.profile)
    changed = update_readme(args.readme, profile_dir, args.profile)
    state = "updated" if changed else "unchanged"
    print(f"{profile_dir / 'claims.md'} written; {args.readme} {state}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
