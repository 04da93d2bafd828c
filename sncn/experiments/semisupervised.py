"""Semi-supervised CIFAR-10: FixMatch with and without CrossNorm (Figure 4 of the paper).

What ``notebooks/04_semisupervised.ipynb`` calls. One run = FixMatch (:mod:`sncn.train.fixmatch`)
on CIFAR-10 with ``labels`` labelled images drawn per class, then the clean test error and the
CIFAR-10-C errors (15 corruptions x 5 severities, :mod:`sncn.experiments.cifar_c`) of the EMA
model, written to a run folder (:mod:`sncn.results`). Finished runs are read back, unfinished ones
resume from their last epoch's checkpoint (:func:`sncn.train.fit`; an epoch is ``eval_step``
steps).

Variants (:data:`VARIANTS`): FixMatch with RandAugment (``ra``) or weak augmentation only
(``wa``: the strong view is a second weak one), each plain, with CN on all images
(``*_cn_all``: labelled and unlabelled images paired separately) or on the unlabelled images only
(``*_cn_unlabelled``). The paper applies CN "to all data or only the unlabeled and choose[s] the
better one"; it does not say by which measure, so the figure takes the CN variant with the lower
clean error, and the table shows both.

Settings: :data:`sncn.hparams.FIXMATCH`. As in the implementation the paper used
(kekmodel/FixMatch-pytorch): its WRN (leaky ReLU 0.1, BatchNorm momentum 0.001, pre-activation
shared by both branches only in the first block of stage 1, Xavier-normal classifier; the
``wrn`` options of :mod:`sncn.models.cifar`), its CIFAR-10 normalisation (``mean``, ``std``) for
training and for the clean and CIFAR-10-C test images, and its PIL RandAugment and Cutout
(:mod:`sncn.data.semisup`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from sncn import results
from sncn.data.semisup import SemiSupervisedBatches, split_labelled
from sncn.data.vision import load_cifar
from sncn.experiments.cifar_c import (
    corrupted_test_data,
    corrupted_test_set,
    evaluate_error,
    robustness_columns,
    robustness_metrics,
    subset,
)
from sncn.hparams import FIXMATCH
from sncn.models import create_model
from sncn.train import fit
from sncn.train.fixmatch import FixMatchTrainer, fixmatch_schedule, fixmatch_sgd
from sncn.utils import resolve_device

#: variant -> (strong augmentation "ra" | "wa", CrossNorm data None | "all" | "unlabelled")
VARIANTS: dict[str, tuple[str, str | None]] = {
    "wa": ("wa", None),
    "wa_cn_all": ("wa", "all"),
    "wa_cn_unlabelled": ("wa", "unlabelled"),
    "ra": ("ra", None),
    "ra_cn_all": ("ra", "all"),
    "ra_cn_unlabelled": ("ra", "unlabelled"),
}

#: What the text of Figure 4 gives (the figure itself is a plot; its points cannot be read from
#: the text). In the order the extracted text lists them, per panel.
PAPER_FIGURE4: list[dict[str, str]] = [
    {"panel": "WA (left)", "what": "label counts in the legend (the text says 250 and 4,000)",
     "paper": "250, 1000"},
    {"panel": "WA (left)", "what": "axis ticks (clean error / corruption error, %)",
     "paper": "12-18 and 50-58 (which axis is which is lost in the text)"},
    {"panel": "WA (left)", "what": "numbers annotating the arrows (%)", "paper": "6.4, 6.3"},
    {"panel": "RA (right)", "what": "clean error axis (%)", "paper": "5-11"},
    {"panel": "RA (right)", "what": "corruption error axis (%)", "paper": "12-24"},
    {"panel": "RA (right)", "what": "numbers annotating the arrows (%)",
     "paper": "6.5, 4.3, 0.9, 3.5"},
    {"panel": "RA (right)", "what": "text (§4.1)",
     "paper": "'with the help of CrossNorm, training with 250 labels even has 3% lower "
              "corruption error than with 1000 labels'"},
]  # fmt: skip


def check_variant(variant: str) -> tuple[str, str | None]:
    """``(strong, cn_data)`` of ``variant``, or a ValueError listing the variants."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {tuple(VARIANTS)}.")
    return VARIANTS[variant]


def resolve_setting(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """:data:`sncn.hparams.FIXMATCH` with ``overrides`` (only known keys)."""
    unknown = set(overrides or {}) - set(FIXMATCH)
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(FIXMATCH)}.")
    return {**FIXMATCH, **(overrides or {})}


#: keys of :data:`sncn.hparams.FIXMATCH` that go to the model constructor
MODEL_KEYS = (
    "depth",
    "widen_factor",
    "leaky_slope",
    "bn_momentum",
    "activate_before_residual",
    "fc_init",
)


def build_model(variant: str, setting: dict[str, Any], **model_kwargs: Any) -> torch.nn.Module:
    """The WRN of ``variant`` (``setting``'s :data:`MODEL_KEYS`): CN units after every block for
    the CN variants, plain otherwise; ``model_kwargs`` override."""
    _, cn_data = check_variant(variant)
    kwargs: dict[str, Any] = {k: setting[k] for k in MODEL_KEYS}
    if cn_data is not None:
        kwargs.update(cnsn_type="cn", pos=setting["pos"], crop=setting["crop"])
    return create_model(setting["arch"], num_classes=10, **{**kwargs, **model_kwargs})


def run_name(
    variant: str, labels: int, seed: int, setting: dict, budget: dict, data: dict | None = None
) -> str:
    """``cifar10-fixmatch-<variant>-<labels>labels-<digest>-seed<k>``; the digest covers the
    setting, the budget and ``data``, the CIFAR-10-C evaluated on
    (:func:`sncn.experiments.cifar_c.corrupted_test_data`)."""
    config = {"setting": setting, "budget": budget}
    if data is not None:
        config["data"] = data
    return results.run_name(
        "cifar10", "fixmatch", variant, f"{labels}labels", seed=seed, config=config
    )


def run(
    variant: str,
    labels: int,
    results_dir: str | os.PathLike,
    *,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    test_subset: int = 0,
    device: str | None = None,
    root: str | os.PathLike | None = None,
    progress: bool = True,
    retrain: bool = False,
    position: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Train FixMatch ``variant`` with ``labels`` labels; evaluate the EMA model on CIFAR-10(-C).

    The run's name covers the setting, the budget and the CIFAR-10-C (official or generated). A
    finished run is read back (with a note when it is stale), unless ``retrain`` or a retrain
    request says otherwise (:func:`sncn.results.reuse`); one process at a time works on a run
    (:func:`sncn.results.run_lock`).

    Args:
        variant: a key of :data:`VARIANTS`.
        labels: labelled images, a multiple of 10 (drawn per class with ``label_seed``).
        results_dir: the profile's results folder; the run goes to ``runs/<name>``.
        seed: the run's seed (initialisation, batch order, augmentation, CN draws); the labelled
            subset depends on ``label_seed`` only.
        overrides: changes to :data:`sncn.hparams.FIXMATCH` (e.g. ``{"epochs": 2, "mu": 3}``).
        model_kwargs: extra ``create_model`` kwargs (e.g. ``{"depth": 10, "widen_factor": 1}``).
        test_subset: test images, class-balanced, per corruption and severity and for the
            per-epoch test error of the history (0: all 10,000); the final clean error is on all
            10,000 test images.
        device: ``cuda`` or ``cpu`` (default: CUDA when available).
        root: data root (default :func:`sncn.data.data_root`).
        progress: progress bars.
        retrain: train again even if the run finished.
        position: ``(k, n)``: run ``k`` of a grid of ``n``, shown in the progress lines.

    Returns:
        ``clean_error``, ``mce`` (mean corruption error, %), ``errors`` ({corruption: 5 errors}),
        ``cifar_c`` ("official" or "generated"), ``history`` (per epoch: losses, mask rate,
        pseudo-label accuracy, clean test error), ``steps``, ``train_seconds``.
    """
    strong, cn_data = check_variant(variant)
    setting = resolve_setting(overrides)
    budget = {"test_subset": test_subset, "model_kwargs": model_kwargs or {}, "labels": labels,
              "variant": variant}  # fmt: skip
    data = corrupted_test_data("cifar10", test_subset or None, root)
    name = run_name(variant, labels, seed, setting, budget, data)
    folder = results.run_dir(results_dir, name)
    with results.run_lock(folder):  # one process at a time trains (or reads) the run
        reused = results.reuse(folder, retrain)
        if reused is not None:
            return reused
        dev = resolve_device(device)
        train_x, train_y = load_cifar("cifar10", "train", root)
        labelled, unlabelled = split_labelled(
            train_y, labels, setting["label_seed"], setting["unlabelled"]
        )
        all_x, all_y = load_cifar("cifar10", "test", root)  # the final clean error: all of them
        test_x, test_y = subset(all_x, all_y, test_subset or None, 0)  # per-epoch checks
        c_folder, source = corrupted_test_set("cifar10", test_subset or None, root, device=dev)
        if source != data["cifar_c"]:
            raise RuntimeError("CIFAR-10-C changed while the run was set up; run again.")

        torch.manual_seed(seed)
        model = build_model(variant, setting, **(model_kwargs or {})).to(dev)
        steps = setting["epochs"] * setting["eval_step"]
        optimizer = fixmatch_sgd(
            model, setting["lr"], setting["momentum"], setting["weight_decay"], setting["nesterov"]
        )
        trainer = FixMatchTrainer(
            model,
            optimizer,
            fixmatch_schedule(optimizer, steps, setting["warmup"]),
            threshold=setting["threshold"],
            lambda_u=setting["lambda_u"],
            temperature=setting["T"],
            ema_decay=setting["ema_decay"],
            cn_data=cn_data or "all",
            cn_prob=setting["cn_prob"] if cn_data else 0.0,
            active_num=setting["active_num"],
            amp=dev.type == "cuda",
            channels_last=dev.type == "cuda",
            device=dev,
        )

        def batches(epoch: int, generator: torch.Generator) -> Iterable:
            return SemiSupervisedBatches(
                (train_x[labelled], train_y[labelled]),
                (train_x[unlabelled], train_y[unlabelled]),
                setting["batch_size"], setting["mu"], setting["eval_step"], generator, strong, dev,
                mean=setting["mean"], std=setting["std"],
            )  # fmt: skip

        norm = {"mean": setting["mean"], "std": setting["std"]}  # the training normalisation

        def evaluate(t: FixMatchTrainer) -> dict[str, float]:
            return {"test_error": evaluate_error(t, test_x, test_y, **norm)}

        start = time.perf_counter()
        history = fit(trainer, batches, setting["epochs"], folder, seed=seed, evaluate=evaluate,
                      progress=progress, description=folder.name, position=position)  # fmt: skip
        train_seconds = time.perf_counter() - start
        metrics = {
            **robustness_metrics(trainer, all_x, all_y, c_folder, source, test_subset, **norm),
            "history": history,
            "steps": steps,
            "train_seconds": train_seconds,
        }
        params = {"variant": variant, "strong": strong, "cn_data": cn_data, "labels": labels,
                  "seed": seed, "labelled_images": len(labelled),
                  "unlabelled_images": len(unlabelled), "test_images": len(all_y),
                  "device": str(dev), **setting, "model_kwargs": model_kwargs or {},
                  "data": data}  # fmt: skip
        return results.save_run(folder, params, metrics)


def run_grid(
    variants: Sequence[str],
    labels: Sequence[int],
    seeds: Sequence[int],
    results_dir: str | os.PathLike,
    **kwargs: Any,
) -> list[tuple[str, int, list[dict[str, Any]]]]:
    """:func:`run` for every variant, label count and seed; ``kwargs`` go to :func:`run`.

    Returns:
        ``(variant, labels, [metrics per seed])``, for :func:`table_rows` and :func:`figure`.
    """
    for v in variants:
        check_variant(v)
    cells = [(v, n) for n in labels for v in variants]
    total = len(cells) * len(seeds)
    return [(v, n, [run(v, n, results_dir, seed=s, position=(i * len(seeds) + j + 1, total),
                        **kwargs) for j, s in enumerate(seeds)])
            for i, (v, n) in enumerate(cells)]  # fmt: skip


def _mean(runs: Sequence[dict[str, Any]], key: str) -> float:
    return float(np.mean([m[key] for m in runs]))


def _plain(variant: str) -> str:
    return VARIANTS[variant][0]


def table_rows(runs: Sequence[tuple[str, int, Sequence[dict[str, Any]]]]) -> results.Rows:
    """Rows of the Figure 4 table: clean error and mean corruption error (mean over seeds), and
    the changes against plain FixMatch with the same augmentation and labels (when it ran); as
    :class:`sncn.results.Rows` of these runs (the table notes stale ones)."""
    plain = {(v, n): seeds for v, n, seeds in runs if VARIANTS[v][1] is None}
    rows = []
    for variant, labels, seeds in runs:
        strong, cn_data = VARIANTS[variant]
        base = plain.get((_plain(variant), labels))
        clean, mce = _mean(seeds, "clean_error"), _mean(seeds, "mce")
        rows.append({
            "augmentation": strong.upper(), "labels": labels,
            "method": "FixMatch" if cn_data is None else f"FixMatch + CN ({cn_data})",
            "seeds": len(seeds),
            "clean error": clean,
            "clean change": None if base is None else clean - _mean(base, "clean_error"),
            "corruption error": mce,
            "corruption std": results.mean_std([m["mce"] for m in seeds])[1],
            "corruption change": None if base is None else mce - _mean(base, "mce"),
            **robustness_columns(seeds),
            "steps": seeds[0]["steps"],
            "CIFAR-10-C": ", ".join(sorted({m["cifar_c"] for m in seeds})),
        })  # fmt: skip
    return results.Rows(rows, runs=[m for *_, seeds in runs for m in seeds])


def resolution_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """For each augmentation and label count of :func:`table_rows`: can this budget tell the CN
    variants from plain FixMatch by corruption error? (:func:`sncn.results.resolution_note`)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["augmentation"], row["labels"]), []).append(row)
    notes = []
    for (strong, labels), group in groups.items():
        plain = next((r for r in group if r["method"] == "FixMatch"), group[0])
        note = results.resolution_note(group, "corruption error", "corruption std",
                                       label="method", reference=plain)  # fmt: skip
        notes.append(f"{strong}, {labels} labels: {note}")
    return notes


def best_cn(runs: Sequence[tuple[str, int, Sequence[dict[str, Any]]]]) -> dict[tuple, str]:
    """``{(augmentation, labels): CN variant with the lower clean error}`` (the paper's choice
    between CN on all data and on the unlabelled data; its measure is not stated)."""
    best: dict[tuple, tuple[float, str]] = {}
    for variant, labels, seeds in runs:
        strong, cn_data = VARIANTS[variant]
        if cn_data is not None:
            key, clean = (strong, labels), _mean(seeds, "clean_error")
            if key not in best or clean < best[key][0]:
                best[key] = (clean, variant)
    return {k: v for k, (_, v) in best.items()}


def figure(runs: Sequence[tuple[str, int, Sequence[dict[str, Any]]]], title: str = ""):
    """Figure 4: corruption error against clean error, FixMatch -> + CN, WA (a) and RA (b).

    Filled markers: plain FixMatch (diamonds) and the chosen CN variant (circles,
    :func:`best_cn`), joined by an arrow per label count; hollow circles: the other CN variant.
    One colour per label count (:data:`sncn.results.PALETTE`); legends right of the panels;
    the footer says which CIFAR-10-C (official or generated) the errors are on.

    Args:
        runs: ``(variant, labels, [metrics per seed])`` as :func:`run_grid` returns them.
        title: second title line (e.g. the profile's setting).
    """
    import matplotlib.pyplot as plt

    from sncn.experiments.cifar_c import c_source

    points = {(v, n): (_mean(s, "clean_error"), _mean(s, "mce")) for v, n, s in runs}
    chosen = best_cn(runs)
    colours = {n: results.PALETTE[i % len(results.PALETTE)]
               for i, n in enumerate(sorted({n for _, n, _ in runs}))}  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for ax, strong, panel in zip(axes, ("wa", "ra"), "ab", strict=True):
        label_counts = sorted({n for v, n, _ in runs if VARIANTS[v][0] == strong})
        for n in label_counts:
            colour = colours[n]
            plain = points.get((strong, n))
            if plain is not None:
                ax.scatter(*plain, marker="D", color=colour, label=f"FixMatch, {n} labels")
            for variant, (s, cn_data) in VARIANTS.items():
                if s != strong or cn_data is None or (variant, n) not in points:
                    continue
                picked = chosen.get((strong, n)) == variant
                ax.scatter(*points[(variant, n)], marker="o", s=50, edgecolors=colour,
                           facecolors=colour if picked else "none",
                           label=f"+ CN ({cn_data}), {n} labels")  # fmt: skip
                if picked and plain is not None:
                    ax.annotate("", points[(variant, n)], plain,
                                arrowprops={"arrowstyle": "->", "color": colour})  # fmt: skip
        ax.set_title(f"({panel}) FixMatch with {strong.upper()}", fontsize=10)
        ax.set_xlabel("clean error (%)")
        ax.set_ylabel("corruption error, CIFAR-10-C (%)")
        if label_counts:
            results.legend_outside(ax)
        else:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
    heading = "Figure 4: semi-supervised CIFAR-10 (FixMatch), with and without CrossNorm"
    fig.suptitle(f"{heading}\n{title}" if title else heading, fontsize=10)
    seeds = [m for _, _, s in runs for m in s]
    source = "CIFAR-10 test images and " + c_source(seeds) if seeds else "no runs"
    results.figure_footer(fig, source)
    return fig
