"""The paper's design studies (Figure 9, Tables 5-13) and the peers comparison, on CIFAR-C.

What ``notebooks/02_ablations.ipynb`` calls. Every study is a list of :class:`Arm` (a label, one of
the CIFAR methods of :mod:`sncn.hparams`, setting overrides, the paper's number); each arm is one
:func:`sncn.experiments.cifar_c.run`, whose run folder is named by a digest of the resolved setting
and budget, so arms with identical settings (e.g. CN at ``post`` in Figure 9 and in Table 6's
"all", or in notebook 01 at the same budget) train once.

The paper runs these on CIFAR-100-C with WRN-40-2 (Figure 9, Tables 5-7) and on both datasets and
all four backbones (Tables 8-13: 8, 9 and 12 on CIFAR-10-C, 10, 11 and 13 on CIFAR-100-C); its
numbers here are mCE (%). Each arm records the dataset of its paper number (``paper_dataset``), and
a table shows the paper's number only beside runs on that dataset (:func:`study_rows`,
:func:`paper_note`): the WRN studies run on another dataset, or backbone tables of one dataset,
are never set beside the other dataset's numbers.

The peers study puts MixStyle, pAdaIN and DSU (:mod:`sncn.peers`) both in CrossNorm's slots (the
CN units after every WRN block, switched on in every unit at every step) and at each one's own
paper's sites (``peer_sites="own"``: :data:`sncn.models.cifar.OWN_SITES`, on at every step); its
table says which in the column ``placement``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sncn.experiments import cifar_c
from sncn.models.cifar import OWN_SITES
from sncn.results import Rows, mean_std


@dataclass(frozen=True)
class Arm:
    """One bar/cell of a study: ``method`` of :data:`sncn.hparams.CIFAR_METHODS` + overrides.

    ``paper`` is the paper's mCE (%) on ``paper_dataset``'s CIFAR-C (CIFAR-100-C for the WRN
    studies; the backbone tables set theirs).
    """

    label: str
    method: str
    overrides: dict[str, Any] = field(default_factory=dict)
    paper: float | None = None
    placement: str | None = None  # where the units sit, for the peers table
    paper_dataset: str = "cifar100"


#: dataset -> the name of its corrupted test set
C_NAMES = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}


POSITIONS = ("residual", "post", "pre", "identity")
CROPS = ("neither", "content", "style", "both")
#: the peers switched on in every unit at every step, each applying its own paper's probability
PEER_SWITCH = {"cn_prob": 1.0, "active_num": 1000}
#: the peers of CrossNorm: table name -> ``cnsn_type``
PEERS = {"MixStyle": "mixstyle", "pAdaIN": "padain", "DSU": "dsu"}
#: ``peer_sites`` of the CIFAR models -> how the peers table names the placement
PLACEMENTS = {"crossnorm": "CN slots", "own": "own sites"}
CN_SLOTS = "CN slots: after every block (post)"


def _peer_arm(name: str, sites: str) -> Arm:
    """A peer of CrossNorm in CrossNorm's slots or at its own paper's sites (``sites``)."""
    peer = PEERS[name]
    model = {"cnsn_type": peer, "pos": "post", "crop": None, "beta": None}
    if sites == "own":
        model["peer_sites"] = "own"  # absent for CN slots: their run names predate the option
    placement = CN_SLOTS if sites == "crossnorm" else f"own sites: {OWN_SITES[peer]}"
    overrides = {"model": model, **PEER_SWITCH}
    return Arm(f"{name} ({PLACEMENTS[sites]})", "cn", overrides, placement=placement)


def _blocks(where: str) -> dict[str, Any]:
    if where == "image":
        return {"blocks": (), "image": True}
    return {"blocks": "all" if where == "all" else (int(where[-1]),)}


#: WRN-40-2 studies (Figure 9, Tables 5-7) with the paper's CIFAR-100-C numbers.
WRN_STUDIES: dict[str, list[Arm]] = {
    "fig9_positions": [
        *(
            Arm(f"SN {p}", "sn", {"model": {"pos": p}}, v)
            for p, v in zip(POSITIONS, (49.28, 47.44, 49.82, 48.43), strict=True)
        ),
        *(
            Arm(f"CN {p}", "cn", {"model": {"pos": p}}, v)
            for p, v in zip(POSITIONS, (52.06, 48.76, 51.74, 50.26), strict=True)
        ),
    ],  # fmt: skip  (Tables 10 and 11, WRN rows)
    "fig9_crossnorm_variants": [
        Arm(f"CN {k}-instance, crop {c}", "cn", {"model": {"instances": k, "crop": c}})
        for k in (1, 2)
        for c in CROPS
    ],  # the paper gives these only as bars of Figure 9
    "table5_order": [
        Arm("SN -> CN", "sncn", {"model": {"order": "sn-cn", "crop": "neither"}}, 46.9),
        Arm("CN -> SN", "sncn", {"model": {"order": "cn-sn", "crop": "neither"}}, 46.6),
    ],
    "table6_blocks": [
        Arm("none", "basic", {}, 53.3),
        *(
            Arm(f"SN {w}", "sn", {"model": {"pos": "post", **_blocks(w)}}, v)
            for w, v in zip(
                ("image", "block1", "block2", "block3", "all"),
                (52.9, 48.9, 52.2, 51.3, 47.4),
                strict=True,
            )
        ),
        *(
            Arm(f"CN {w}", "cn", {"model": {"pos": "post", **_blocks(w)}}, v)
            for w, v in zip(
                ("image", "block1", "block2", "block3", "all"),
                (54.3, 52.2, 51.2, 51.5, 48.8),
                strict=True,
            )
        ),
    ],  # fmt: skip
    "table7_components": [
        Arm("Basic", "basic", {}, 53.3),
        Arm("SE", "basic", {"model": {"cnsn_type": "se", "pos": "residual"}}, 52.3),
        Arm("SE (post)", "basic", {"model": {"cnsn_type": "se", "pos": "post"}}, 51.0),
        Arm("SN", "sn", {"model": {"pos": "post"}}, 47.4),
        Arm("CN", "cn", {"model": {"pos": "post"}}, 48.8),
        Arm("SNCN", "sncn", {"model": {"crop": "neither"}}, 46.6),
        Arm("SNCN+Crop", "sncn", {}, 44.5),
        Arm("SNCN+Crop+CR", "sncn_consistency", {}, 43.7),
    ],
    "peers": [
        Arm("CN", "cn", {"model": {"pos": "post"}}, placement=CN_SLOTS),
        Arm("SNCN", "sncn", {}, placement=CN_SLOTS),
        *(_peer_arm(name, sites) for sites in PLACEMENTS for name in PEERS),
    ],
}

#: Positions of SN and CN per backbone in Tables 8-11 (the CIFAR models' ``pos``).
BACKBONE_POSITIONS = {"allconv": ("1", "2", "3"), "densenet": ("pre", "post"),
                      "wrn": POSITIONS, "resnext": POSITIONS}  # fmt: skip
#: dataset -> the paper's tables of SN positions, CN positions and SNCN crops (App. 6.2)
PAPER_TABLE_NUMBERS = {"cifar10": (8, 9, 12), "cifar100": (10, 11, 13)}
#: dataset -> (method, backbone) -> the paper's mCE at each :data:`BACKBONE_POSITIONS` entry:
#: Tables 8 (SN) and 9 (CN) on CIFAR-10-C, Tables 10 (SN) and 11 (CN) on CIFAR-100-C.
PAPER_POSITIONS = {
    "cifar10": {
        ("sn", "allconv"): (24.01, 26.38, 25.56), ("sn", "densenet"): (23.40, 21.96),
        ("sn", "wrn"): (22.69, 21.29, 20.78, 22.29),
        ("sn", "resnext"): (21.94, 24.76, 21.49, 21.99),
        ("cn", "allconv"): (25.99, 26.27, 26.84), ("cn", "densenet"): (24.72, 29.17),
        ("cn", "wrn"): (25.20, 21.62, 24.91, 23.27),
        ("cn", "resnext"): (26.71, 22.37, 23.75, 26.92),
    },
    "cifar100": {
        ("sn", "allconv"): (50.30, 51.63, 51.03), ("sn", "densenet"): (53.86, 54.67),
        ("sn", "wrn"): (49.28, 47.44, 49.82, 48.43),
        ("sn", "resnext"): (47.56, 49.00, 50.86, 50.44),
        ("cn", "allconv"): (52.20, 52.49, 52.69), ("cn", "densenet"): (55.44, 57.57),
        ("cn", "wrn"): (52.06, 48.76, 51.74, 50.26),
        ("cn", "resnext"): (51.47, 46.95, 47.87, 50.22),
    },
}  # fmt: skip
#: dataset -> backbone -> the paper's mCE of SNCN with crop neither, content, style, both (each
#: backbone at its SNCN position): Table 12 on CIFAR-10-C, Table 13 on CIFAR-100-C. Read through
#: the text extraction's typos: "18:75" -> 18.75, "17:93" -> 17.93, "17:73-" -> 17.73,
#: "5138" -> 51.38, "46:58" -> 46.58, "-41.03-" -> 41.03.
PAPER_CROPS = {
    "cifar10": {
        "allconv": (18.98, 20.29, 18.82, 20.28),
        "densenet": (18.75, 18.23, 18.70, 18.83),
        "wrn": (17.93, 17.99, 16.77, 17.47),
        "resnext": (17.73, 18.52, 18.37, 18.59),
    },
    "cifar100": {
        "allconv": (44.17, 46.92, 43.86, 46.08),
        "densenet": (51.38, 49.40, 49.13, 48.97),
        "wrn": (46.58, 45.08, 45.82, 44.46),
        "resnext": (41.03, 44.85, 42.96, 46.52),
    },
}


def backbone_studies(backbones: Sequence[str], dataset: str = "cifar10") -> dict[str, list[Arm]]:
    """The SN and CN positions and the SNCN crops per backbone, with the paper's numbers of
    ``dataset``: Tables 8, 9 and 12 for ``cifar10``, Tables 10, 11 and 13 for ``cifar100``.

    Args:
        backbones: CIFAR backbones (keys of :data:`BACKBONE_POSITIONS`).
        dataset: ``cifar10`` or ``cifar100``, the dataset the arms are run on.

    Returns:
        ``table<k>_<backbone>`` -> arms, ``k`` the paper's table number for ``dataset``.
    """
    if dataset not in PAPER_TABLE_NUMBERS:
        raise ValueError(f"dataset must be one of {sorted(PAPER_TABLE_NUMBERS)}, got {dataset!r}.")
    sn_table, cn_table, crop_table = PAPER_TABLE_NUMBERS[dataset]
    studies: dict[str, list[Arm]] = {}
    for b in backbones:
        for kind, table in (("sn", sn_table), ("cn", cn_table)):
            paper = PAPER_POSITIONS[dataset][(kind, b)]
            studies[f"table{table}_{b}"] = [
                Arm(f"{kind.upper()} {p}", kind, {"model": {"pos": p}}, v, paper_dataset=dataset)
                for p, v in zip(BACKBONE_POSITIONS[b], paper, strict=True)
            ]
        studies[f"table{crop_table}_{b}"] = [
            Arm(f"SNCN crop {c}", "sncn", {"model": {"crop": c}}, v, paper_dataset=dataset)
            for c, v in zip(CROPS, PAPER_CROPS[dataset][b], strict=True)
        ]
    return studies


def run_studies(
    studies: dict[str, list[Arm]],
    dataset: str,
    backbone: str | dict[str, str],
    seeds: Sequence[int],
    results_dir: str | os.PathLike,
    *,
    first: int = 0,
    total: int | None = None,
    **budget: Any,
) -> dict[str, list[tuple[Arm, list[dict[str, Any]]]]]:
    """Run every arm of every study (shared arms once) for ``seeds``.

    Args:
        studies: study name -> arms.
        dataset: ``cifar10`` or ``cifar100``.
        backbone: one backbone for all studies, or study name -> backbone.
        seeds: seeds per arm.
        results_dir: the profile's results folder.
        first, total: the runs here are runs ``first + 1, first + 2, ...`` of ``total`` (default:
            of these runs alone), for the progress lines.
        **budget: keyword arguments of :func:`sncn.experiments.cifar_c.run` (epochs, subsets, ...).

    Returns:
        study name -> ``[(arm, [metrics per seed])]``; each metrics dict is
        :func:`sncn.experiments.cifar_c.run`'s with the run's ``dataset`` added.
    """
    total = total or first + len(seeds) * sum(len(arms) for arms in studies.values())
    out, k = {}, first
    for study, arms in studies.items():
        b = backbone if isinstance(backbone, str) else backbone[study]
        out[study] = []
        for arm in arms:
            per_seed = []
            for s in seeds:
                k += 1
                per_seed.append({**cifar_c.run(dataset, b, arm.method, results_dir, seed=s,
                                               overrides=arm.overrides, position=(k, total),
                                               **budget), "dataset": dataset})  # fmt: skip
            out[study].append((arm, per_seed))
    return out


def _datasets(seeds: Sequence[dict[str, Any]]) -> set[str | None]:
    return {m.get("dataset") for m in seeds}


def paper_number(arm: Arm, seeds: Sequence[dict[str, Any]]) -> float | None:
    """The arm's paper mCE if its runs (``seeds``' ``dataset``) are on the paper's dataset, else
    None: a number of one CIFAR-C is never set beside runs on the other (or of unknown data)."""
    return arm.paper if _datasets(seeds) == {arm.paper_dataset} else None


def paper_note(results: list[tuple[Arm, list[dict[str, Any]]]]) -> str:
    """A table note saying what its ``paper mCE`` column holds, or why it is empty."""
    theirs = sorted({arm.paper_dataset for arm, _ in results if arm.paper is not None})
    if not theirs:
        return "paper mCE: the paper gives no number for these arms."
    names = " and ".join(C_NAMES.get(d, d) for d in theirs)
    if all(paper_number(a, s) is not None for a, s in results if a.paper is not None):
        return f"paper mCE: the paper's {names} numbers, the dataset of our runs."
    ours = sorted({str(d) for _, seeds in results for d in _datasets(seeds)})
    return (f"paper mCE left empty where our runs ({', '.join(ours)}) are not on the dataset of "
            f"the paper's numbers ({names}): they are not comparable.")  # fmt: skip


def study_rows(results: list[tuple[Arm, list[dict[str, Any]]]]) -> Rows:
    """One row per arm: our clean error and mCE (mean, spread over seeds) beside the paper's
    (:func:`paper_number`: empty unless the runs are on the paper's dataset), the runs'
    ``dataset``; a ``placement`` column when an arm has one (the peers study). The rows are
    :class:`sncn.results.Rows` of these runs (the table notes stale ones)."""
    rows = []
    with_placement = any(arm.placement is not None for arm, _ in results)
    for arm, seeds in results:
        mce, mce_std = mean_std([m["mce"] for m in seeds])
        rows.append({
            "arm": arm.label,
            **({"placement": arm.placement} if with_placement else {}),
            "clean error": mean_std([m["clean_error"] for m in seeds])[0],
            "mCE": mce,
            "mCE std": mce_std,
            **cifar_c.robustness_columns(seeds),
            "seeds": len(seeds),
            "dataset": ", ".join(sorted(str(d) for d in _datasets(seeds))),
            "paper mCE": paper_number(arm, seeds),
            "CIFAR-C": ", ".join(sorted({m["cifar_c"] for m in seeds})),
        })  # fmt: skip
    return Rows(rows, runs=[m for _, seeds in results for m in seeds])


#: Figure 9's panels: study -> (panel title, x-axis label)
FIG9_PANELS = {
    "fig9_positions": ("(a) positions of SN and CN units", "unit and position"),
    "fig9_crossnorm_variants": ("(b) CrossNorm variants", "CrossNorm instances and crop"),
}


def figure9(results: dict[str, list[tuple[Arm, list[dict[str, Any]]]]], title: str = ""):
    """Figure 9: mCE of SN/CN positions (a) and CrossNorm variants (b), ours beside the paper's.

    Our bars name the corrupted test set of their runs; the paper's bars (its CIFAR-100-C
    numbers) stand only beside runs on that dataset (:func:`paper_number`), and the footer says
    when they are left out and which CIFAR-C (official or generated) our runs used. Legends sit
    to the right of the panels, outside the bars.

    Args:
        results: study -> ``[(arm, [metrics per seed])]`` with ``fig9_positions`` and/or
            ``fig9_crossnorm_variants``.
        title: second title line (e.g. the profile's setting).
    """
    import matplotlib.pyplot as plt

    from sncn.results import PALETTE, figure_footer, legend_outside

    studies = [s for s in FIG9_PANELS if s in results]
    if not studies:
        raise ValueError("Figure 9 needs the study fig9_positions or fig9_crossnorm_variants.")
    fig, axes = plt.subplots(1, len(studies), figsize=(7.5 * len(studies), 4.6), squeeze=False,
                             layout="constrained")  # fmt: skip
    omitted: set[str] = set()
    ours_data: set[str] = set()
    for ax, study in zip(axes[0], studies, strict=True):
        arms = results[study]
        labels = [a.label for a, _ in arms]
        ours = [float(np.mean([m["mce"] for m in s])) for _, s in arms]
        paper = [paper_number(a, s) for a, s in arms]
        datasets = sorted({str(d) for _, s in arms for d in _datasets(s)})
        ours_name = " and ".join(C_NAMES.get(d, d) for d in datasets)
        ours_data.add(ours_name)
        pos = np.arange(len(arms))
        shown = any(v is not None for v in paper)
        width = 0.4 if shown else 0.6
        ax.bar(pos - 0.2 if shown else pos, ours, width, color=PALETTE[0],
               label=f"ours ({ours_name})")  # fmt: skip
        theirs = sorted({C_NAMES[a.paper_dataset] for a, _ in arms if a.paper is not None})
        if shown:
            ax.bar(pos + 0.2, [np.nan if v is None else v for v in paper], width,
                   color=PALETTE[1], label=f"paper ({' and '.join(theirs)})")  # fmt: skip
        else:
            omitted.update(theirs)
        panel, xlabel = FIG9_PANELS[study]
        ax.set_xticks(pos, labels, rotation=45, ha="right", fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mCE (%)")
        ax.set_title(panel, fontsize=10)
        legend_outside(ax)
    heading = "Figure 9: mean corruption error of SN/CN positions and CrossNorm variants"
    fig.suptitle(f"{heading}\n{title}" if title else heading, fontsize=10)
    seeds = [m for study in studies for _, s in results[study] for m in s]
    note = ""
    if omitted:
        note = (f"The paper's bars ({' and '.join(sorted(omitted))}) are left out: our runs are "
                f"on {' and '.join(sorted(ours_data))}, another test set.")  # fmt: skip
    figure_footer(fig, f"ours on {cifar_c.c_source(seeds)}; paper: its Figure 9", note)
    return fig


def run_all(
    studies: Sequence[str],
    backbone_tables: Sequence[str],
    dataset: str,
    backbone: str,
    seeds: Sequence[int],
    results_dir: str | os.PathLike,
    *,
    backbone_dataset: str = "cifar10",
    **budget: Any,
) -> dict[str, list[tuple[Arm, list[dict[str, Any]]]]]:
    """The named WRN studies on ``dataset`` plus the backbone tables on ``backbone_dataset``.

    Args:
        studies: keys of :data:`WRN_STUDIES`, run with ``backbone``.
        backbone_tables: backbones whose position and crop tables (:func:`backbone_studies`) run.
        dataset: the WRN studies' dataset (the paper's: ``cifar100``).
        backbone: the WRN studies' backbone (the paper's: ``wrn``).
        seeds: seeds per arm.
        results_dir: the profile's results folder.
        backbone_dataset: the backbone tables' dataset: ``cifar10`` runs the paper's Tables 8,
            9 and 12, ``cifar100`` its Tables 10, 11 and 13.
        **budget: :func:`sncn.experiments.cifar_c.run` keywords; ``model_kwargs`` applies to the
            WRN studies only (it is architecture-specific).

    Returns:
        study name -> ``[(arm, [metrics per seed])]`` (:func:`run_studies`).
    """
    unknown = set(studies) - set(WRN_STUDIES)
    if unknown:
        raise ValueError(f"unknown studies {sorted(unknown)}; choose from {sorted(WRN_STUDIES)}.")
    wrn = {s: WRN_STUDIES[s] for s in studies}
    per_backbone = backbone_studies(backbone_tables, backbone_dataset)
    total = len(seeds) * sum(len(arms) for arms in [*wrn.values(), *per_backbone.values()])
    out = run_studies(wrn, dataset, backbone, seeds, results_dir, total=total, **budget)
    done = len(seeds) * sum(len(arms) for arms in wrn.values())
    budget = {**budget, "model_kwargs": {}}
    for name, arms in per_backbone.items():
        b = name.split("_", 1)[1]
        out.update(run_studies({name: arms}, backbone_dataset, b, seeds, results_dir,
                               first=done, total=total, **budget))  # fmt: skip
        done += len(seeds) * len(arms)
    return out
