"""The paper's design studies (Figure 9, Tables 5-13) and the peers comparison, on CIFAR-C.

What ``notebooks/02_ablations.ipynb`` calls. Every study is a list of :class:`Arm` (a label, one of
the CIFAR methods of :mod:`sncn.hparams`, setting overrides, the paper's number); each arm is one
:func:`sncn.experiments.cifar_c.run`, whose run folder is named by a digest of the resolved setting
and budget, so arms with identical settings (e.g. CN at ``post`` in Figure 9 and in Table 6's
"all", or in notebook 01 at the same budget) train once.

The paper runs these on CIFAR-100-C with WRN-40-2 (Figure 9, Tables 5-7) and on both datasets and
all four backbones (Tables 8-13); its numbers here are mCE (%).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sncn.experiments import cifar_c
from sncn.results import mean_std


@dataclass(frozen=True)
class Arm:
    """One bar/cell of a study: ``method`` of :data:`sncn.hparams.CIFAR_METHODS` + overrides."""

    label: str
    method: str
    overrides: dict[str, Any] = field(default_factory=dict)
    paper: float | None = None


POSITIONS = ("residual", "post", "pre", "identity")
CROPS = ("neither", "content", "style", "both")
#: the peers switched on in every unit at every step, each applying its own paper's probability
PEER_SWITCH = {"cn_prob": 1.0, "active_num": 1000}


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
        Arm("CN", "cn", {"model": {"pos": "post"}}),
        Arm("SNCN", "sncn", {}),
        *(
            Arm(
                name,
                "cn",
                {
                    "model": {"cnsn_type": t, "pos": "post", "crop": None, "beta": None},
                    **PEER_SWITCH,
                },
            )
            for name, t in (("MixStyle", "mixstyle"), ("pAdaIN", "padain"), ("DSU", "dsu"))
        ),
    ],  # fmt: skip
}

#: Tables 8-11 (positions per backbone) and 12-13 (crops with SNCN), CIFAR-10-C numbers; the
#: CIFAR-100-C ones are in the paper's Tables 10, 11 and 13.
BACKBONE_POSITIONS = {"allconv": ("1", "2", "3"), "densenet": ("pre", "post"),
                      "wrn": POSITIONS, "resnext": POSITIONS}  # fmt: skip
PAPER_POSITIONS_C10 = {
    ("sn", "allconv"): (24.01, 26.38, 25.56), ("sn", "densenet"): (23.40, 21.96),
    ("sn", "wrn"): (22.69, 21.29, 20.78, 22.29), ("sn", "resnext"): (21.94, 24.76, 21.49, 21.99),
    ("cn", "allconv"): (25.99, 26.27, 26.84), ("cn", "densenet"): (24.72, 29.17),
    ("cn", "wrn"): (25.20, 21.62, 24.91, 23.27), ("cn", "resnext"): (26.71, 22.37, 23.75, 26.92),
}  # fmt: skip
PAPER_CROPS_C10 = {
    "allconv": (18.98, 20.29, 18.82, 20.28),
    "densenet": (18.75, 18.23, 18.70, 18.83),
    "wrn": (17.93, 17.99, 16.77, 17.47),
    "resnext": (17.73, 18.52, 18.37, 18.59),
}


def backbone_studies(backbones: Sequence[str]) -> dict[str, list[Arm]]:
    """Tables 8/9 (SN and CN positions) and 12 (SNCN crops) for ``backbones``."""
    studies: dict[str, list[Arm]] = {}
    for b in backbones:
        for kind in ("sn", "cn"):
            studies[f"table{8 if kind == 'sn' else 9}_{b}"] = [
                Arm(f"{kind.upper()} {p}", kind, {"model": {"pos": p}}, v)
                for p, v in zip(BACKBONE_POSITIONS[b], PAPER_POSITIONS_C10[(kind, b)], strict=True)
            ]
        studies[f"table12_{b}"] = [
            Arm(f"SNCN crop {c}", "sncn", {"model": {"crop": c}}, v)
            for c, v in zip(CROPS, PAPER_CROPS_C10[b], strict=True)
        ]
    return studies


def run_studies(
    studies: dict[str, list[Arm]],
    dataset: str,
    backbone: str | dict[str, str],
    seeds: Sequence[int],
    results_dir: str | os.PathLike,
    **budget: Any,
) -> dict[str, list[tuple[Arm, list[dict[str, Any]]]]]:
    """Run every arm of every study (shared arms once) for ``seeds``.

    Args:
        studies: study name -> arms.
        dataset: ``cifar10`` or ``cifar100``.
        backbone: one backbone for all studies, or study name -> backbone.
        seeds: seeds per arm.
        results_dir: the profile's results folder.
        **budget: keyword arguments of :func:`sncn.experiments.cifar_c.run` (epochs, subsets, ...).

    Returns:
        study name -> ``[(arm, [metrics per seed])]``.
    """
    out = {}
    for study, arms in studies.items():
        b = backbone if isinstance(backbone, str) else backbone[study]
        out[study] = [
            (arm, [cifar_c.run(dataset, b, arm.method, results_dir, seed=s,
                               overrides=arm.overrides, **budget)
                   for s in seeds])
            for arm in arms
        ]  # fmt: skip
    return out


def study_rows(results: list[tuple[Arm, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """One row per arm: our clean error and mCE (mean, spread over seeds) beside the paper's."""
    rows = []
    for arm, seeds in results:
        mce, mce_std = mean_std([m["mce"] for m in seeds])
        rows.append({
            "arm": arm.label,
            "clean error": mean_std([m["clean_error"] for m in seeds])[0],
            "mCE": mce,
            "mCE std": mce_std,
            "seeds": len(seeds),
            "paper mCE": arm.paper,
            "CIFAR-C": ", ".join(sorted({m["cifar_c"] for m in seeds})),
        })  # fmt: skip
    return rows


def figure9(results: dict[str, list[tuple[Arm, list[dict[str, Any]]]]], title: str = ""):
    """Figure 9: mCE of SN/CN positions (left) and CrossNorm variants (right), ours vs paper."""
    import matplotlib.pyplot as plt

    studies = [s for s in ("fig9_positions", "fig9_crossnorm_variants") if s in results]
    if not studies:
        raise ValueError("Figure 9 needs the study fig9_positions or fig9_crossnorm_variants.")
    fig, axes = plt.subplots(1, len(studies), figsize=(6 * len(studies), 4), squeeze=False)
    for ax, study in zip(axes[0], studies, strict=True):
        arms = results[study]
        labels = [a.label for a, _ in arms]
        ours = [float(np.mean([m["mce"] for m in s])) for _, s in arms]
        paper = [np.nan if a.paper is None else a.paper for a, _ in arms]
        pos = np.arange(len(arms))
        ax.bar(pos - 0.2, ours, 0.4, label="ours")
        ax.bar(pos + 0.2, paper, 0.4, label="paper (CIFAR-100-C)")
        ax.set_xticks(pos, labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("mCE (%)")
        ax.set_title(study.replace("_", " "))
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def run_all(
    studies: Sequence[str],
    backbone_tables: Sequence[str],
    dataset: str,
    backbone: str,
    seeds: Sequence[int],
    results_dir: str | os.PathLike,
    **budget: Any,
) -> dict[str, list[tuple[Arm, list[dict[str, Any]]]]]:
    """The named WRN studies on ``backbone`` plus Tables 8, 9 and 12 for ``backbone_tables``.

    ``budget["model_kwargs"]`` applies to the WRN studies only (it is architecture-specific).
    """
    unknown = set(studies) - set(WRN_STUDIES)
    if unknown:
        raise ValueError(f"unknown studies {sorted(unknown)}; choose from {sorted(WRN_STUDIES)}.")
    out = run_studies({s: WRN_STUDIES[s] for s in studies}, dataset, backbone, seeds,
                      results_dir, **budget)  # fmt: skip
    per_backbone = backbone_studies(backbone_tables)
    budget = {**budget, "model_kwargs": {}}
    for name, arms in per_backbone.items():
        b = name.split("_", 1)[1]
        out.update(run_studies({name: arms}, dataset, b, seeds, results_dir, **budget))
    return out
