"""Synthetic-to-real segmentation, GTA5 -> Cityscapes (Table 3 and Table 20 of the paper).

What ``notebooks/05_segmentation.ipynb`` calls. An FCN with a dilated ResNet backbone
(:func:`sncn.models.fcn.fcn_resnet`) is trained on the source domain and its mIoU measured on
the source domain's held-out images and on the target domain, for the baseline, SN, CN and SNCN
with and without CrossNorm's style crop (Table 20; Table 3 shows the cropped CN and SNCN).
Finished runs are read back, not retrained.

Two data sources (:func:`prepare`):

* ``"gta5"``: a seeded quarter of GTA5's training split (source), GTA5 val (source test) and
  Cityscapes val (target), from the data root; frames are loaded into memory at ``image_size``.
* ``"proxy"``: :func:`sncn.data.segmentation.street_scenes`: flat-shaded synthetic scenes for
  training and source testing, and the *same* test scenes rendered realistic (textured, re-lit,
  colour-cast, blurred, noisy) as the target. A proxy of the style gap only; tables say so.

Settings: :data:`sncn.hparams.SEGMENTATION` (the paper's §4.2 and its released configuration:
CrossNorm after the bottlenecks of blocks 1-4 and none on the image, the random Gaussian blur in
the training augmentation, and mIoU over all 19 classes with absent ones counting 0).
:func:`setting_notes` says which of these choices a run used, for the tables' notes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sncn import results
from sncn.data.segmentation import (
    GTA5,
    NUM_CLASSES,
    TRAIN_CLASSES,
    CityscapesSegmentation,
    Frames,
    colorize,
    normalize_images,
    segmentation_batches,
    street_scenes,
)
from sncn.hparams import SEGMENTATION
from sncn.metrics import ABSENT
from sncn.models import create_model
from sncn.train import fit
from sncn.train.segmentation import (
    SegmentationTrainer,
    evaluate_miou,
    poly_schedule,
    segmentation_sgd,
)
from sncn.utils import resolve_device

#: Our method names -> (the model's ``cnsn_type``, CrossNorm crop). Table 20's columns.
METHODS: dict[str, tuple[str | None, str]] = {
    "baseline": (None, "neither"),
    "sn": ("sn", "neither"),
    "cn": ("cn", "neither"),
    "cn_crop": ("cn", "style"),
    "sncn": ("cnsn", "neither"),
    "sncn_crop": ("cnsn", "style"),
}
#: Table 3's columns among ours (its CN and SNCN use the style crop, §4.2).
TABLE3_METHODS = ("baseline", "sn", "cn_crop", "sncn_crop")

#: Table 3 of the paper: mIoU (%) on GTA5 (source) and Cityscapes (target). IBN and DR
#: (domain randomisation) are the paper's comparisons; we do not run them.
PAPER_TABLE3: dict[str, tuple[float, float]] = {
    "baseline": (63.7, 21.4),
    "ibn": (64.2, 29.6),
    "dr": (49.0, 32.7),
    "sn": (64.6, 29.9),
    "cn_crop": (61.2, 32.0),
    "sncn_crop": (63.5, 36.5),
}
#: Table 20 of the paper (crop ablation). The CN (no crop) target value is unreadable in our
#: text of the paper ("^3E5^^"), so it is None rather than a guess.
PAPER_TABLE20: dict[str, tuple[float | None, float | None]] = {
    "baseline": (63.7, 21.4),
    "sn": (64.6, 29.9),
    "cn": (61.8, None),
    "cn_crop": (61.2, 32.0),
    "sncn": (65.0, 34.1),
    "sncn_crop": (63.5, 36.5),
}
LABELS = {"baseline": "Baseline", "sn": "SN", "cn": "CN", "cn_crop": "CN+Crop", "sncn": "SNCN",
          "sncn_crop": "SNCN+Crop", "ibn": "IBN", "dr": "DR"}  # fmt: skip


@dataclass
class SegmentationData:
    """Training images and the two test sets.

    Attributes:
        train, source, target: ``(images, labels int64 (N, H, W))``; images uint8 or [0, 1]
            float ``(N, 3, H, W)`` (normalised when used), or ``(Frames, None)`` for real data
            (decoded per batch).
        info: how the data was made (for the run's params and the tables' notes).
    """

    train: tuple[Tensor, Tensor]
    source: tuple[Tensor, Tensor]
    target: tuple[Tensor, Tensor]
    info: dict[str, Any] = field(default_factory=dict)


def prepare(
    dataset: str = "proxy",
    *,
    train_images: int = 0,
    test_images: int = 0,
    image_size: Sequence[int] = (64, 128),
    seed: int = 0,
    root: str | os.PathLike | None = None,
) -> SegmentationData:
    """Make or load the training and test data.

    Args:
        dataset: ``"proxy"`` (generated) or ``"gta5"`` (GTA5 -> Cityscapes from the data root).
        train_images: proxy: scenes to generate (required); gta5: cap on the quarter (0: all).
        test_images: proxy: scenes per test domain (required); gta5: cap per test set (0: all).
        image_size: ``(H, W)`` of generated scenes, or the size GTA5 frames are resized to
            (Cityscapes frames keep theirs).
        seed: proxy: training scenes use ``seed``, test scenes ``seed + 1``; gta5: the quarter.
        root: data root.
    """
    size = (int(image_size[0]), int(image_size[1]))
    start = time.perf_counter()
    if dataset == "proxy":
        if train_images < 2 or test_images < 1:
            raise ValueError("the proxy needs train_images >= 2 and test_images >= 1, got "
                             f"{train_images} and {test_images}.")  # fmt: skip
        train = street_scenes(train_images, "synthetic", seed, size)
        source = street_scenes(test_images, "synthetic", seed + 1, size)
        target = street_scenes(test_images, "realistic", seed + 1, size)
        info = {"source_name": "synthetic proxy scenes (flat-shaded)",
                "target_name": "the same test scenes rendered realistic (textured, re-lit, "
                "colour-cast, blurred, noisy)"}  # fmt: skip
    elif dataset == "gta5":
        # decoded per batch (the quarter is ~18 GB of pixels); Cityscapes keeps its own size
        gta5 = GTA5("train", quarter=True, seed=seed, root=root)
        train = (Frames(gta5, size, train_images), None)
        source = (Frames(GTA5("val", root=root), size, test_images), None)
        target = (Frames(CityscapesSegmentation("val", root=root), None, test_images), None)
        info = {"source_name": "GTA5 val", "target_name": "Cityscapes val",
                "gta5_quarter_ids": len(gta5)}  # fmt: skip
    else:
        raise ValueError(f"dataset must be 'proxy' or 'gta5', got {dataset!r}.")
    info.update(dataset=dataset, image_size=list(size), data_seed=seed,
                train_items=len(train[0]), source_items=len(source[0]),
                target_items=len(target[0]),
                prepare_seconds=time.perf_counter() - start)  # fmt: skip
    return SegmentationData(train, source, target, info)


def _first(part: tuple[Tensor | Frames, Tensor | None], n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` images and labels of a data part (decoded if it is a :class:`Frames`)."""
    images, labels = part
    n = min(n, len(images))
    if isinstance(images, Frames):
        return images.take(range(n))
    return images[:n], labels[:n]


def run_name(method: str, setting: dict[str, Any], info: dict[str, Any], seed: int) -> str:
    """Run folder name: method, a digest of the resolved setting and data, and the seed."""
    data = {k: v for k, v in info.items() if k != "prepare_seconds"}
    parts = ("seg", info["dataset"], f"fcn{setting['depth']}", method)
    return results.run_name(*parts, seed=seed, config={"setting": setting, "data": data})


def build_model(method: str, setting: dict[str, Any]) -> torch.nn.Module:
    """The FCN of ``method`` under ``setting``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}.")
    cnsn_type, crop = METHODS[method]
    return create_model(
        "fcn_resnet",
        num_classes=NUM_CLASSES,
        depth=setting["depth"],
        width=setting["width"],
        cnsn_type=cnsn_type,
        image_cn=setting["image_cn"],
        crop=crop,
        instances=setting["instances"],
        beta=setting["beta"],
        threshold=setting["threshold"],
        backbone_weights=setting["backbone_weights"] or None,
    )


def run(
    method: str,
    results_dir: str | os.PathLike,
    data: SegmentationData,
    *,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
    progress: bool = True,
    keep_predictions: int = 4,
    retrain: bool = False,
    position: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Train on the source domain, test on source and target; return the metrics.

    A finished run is read back (with a note when it is stale: made by other code), unless
    ``retrain`` or a retrain request says otherwise (:func:`sncn.results.reuse`); one process at a
    time works on a run (:func:`sncn.results.run_lock`).

    Args:
        method: a key of :data:`METHODS`.
        results_dir: the profile's results folder; the run goes to ``runs/<run_name>``.
        data: from :func:`prepare`.
        seed: the run's seed (initialisation, order, augmentation, CrossNorm draws).
        overrides: changes to :data:`sncn.hparams.SEGMENTATION`.
        device: ``cuda`` or ``cpu`` (default: CUDA when available).
        progress: progress bars.
        keep_predictions: predicted label maps of the first target images kept for figures.
        retrain: train again even if the run finished.
        position: ``(k, n)``: run ``k`` of a grid of ``n``, shown in the progress lines.

    Returns:
        ``source_miou``, ``target_miou`` (%), per-class ``source_iou``/``target_iou``, pixel
        accuracies, ``history`` (per epoch), ``train_seconds``, ``train_images_per_second``.
    """
    unknown = set(overrides or {}) - set(SEGMENTATION)
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(SEGMENTATION)}.")
    setting = {**SEGMENTATION, **(overrides or {})}
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}.")
    if setting["miou_absent"] not in ABSENT:
        raise ValueError(f"miou_absent must be one of {ABSENT}, got {setting['miou_absent']!r}.")
    if METHODS[method][0] is None or "cn" not in METHODS[method][0]:
        setting["cn_prob"] = 0.0  # no CrossNorm to switch
    folder = results.run_dir(results_dir, run_name(method, setting, data.info, seed))
    with results.run_lock(folder):  # one process at a time trains (or reads) the run
        reused = results.reuse(folder, retrain)
        if reused is not None:
            return reused
        dev = resolve_device(device)
        torch.manual_seed(seed)
        model = build_model(method, setting).to(dev)
        train_x, train_y = data.train
        batch = setting["batch_size"]
        if len(train_x) < batch:
            raise ValueError(f"batch size {batch} exceeds the {len(train_x)} training images.")
        steps = setting["epochs"] * (len(train_x) // batch)
        optimizer = segmentation_sgd(model, setting["lr"], setting["momentum"],
                                     setting["weight_decay"], setting["head_lr_mult"])  # fmt: skip
        trainer = SegmentationTrainer(
            model, optimizer, poly_schedule(optimizer, steps, setting["power"]),
            cn_prob=setting["cn_prob"], active_num=setting["active_num"],
            aux_weight=setting["aux_weight"], device=dev,
        )  # fmt: skip
        crop = (setting["crop_size"], setting["crop_size"])

        def batches(epoch: int, generator: torch.Generator) -> Iterable:
            return segmentation_batches(train_x, train_y, batch, crop, generator,
                                        scale=tuple(setting["scale"]),
                                        rotate=tuple(setting["rotate"]),
                                        blur_prob=setting["blur_prob"],
                                        blur_kernel=setting["blur_kernel"])  # fmt: skip

        start = time.perf_counter()
        history = fit(trainer, batches, setting["epochs"], folder, seed=seed, progress=progress,
                      description=folder.name, position=position)  # fmt: skip
        train_seconds = time.perf_counter() - start
        metrics: dict[str, Any] = {
            "run": folder.name,
            "history": history,
            "train_seconds": train_seconds,
            "train_images_per_second": steps * batch / train_seconds,
        }
        for domain, (x, y) in (("source", data.source), ("target", data.target)):
            x = x if isinstance(x, Frames) else normalize_images(x)
            scores = evaluate_miou(trainer, x, y, NUM_CLASSES, window=setting["eval_window"],
                                   absent=setting["miou_absent"])  # fmt: skip
            metrics.update({f"{domain}_miou": scores["miou"], f"{domain}_iou": scores["iou"],
                            f"{domain}_pixel_acc": scores["pixel_acc"]})  # fmt: skip
        if keep_predictions:
            x = normalize_images(_first(data.target, keep_predictions)[0])
            predicted = trainer.predict(x).argmax(1).to(torch.uint8).cpu()
            torch.save(predicted, folder / "target_predictions.pt")
        params = {"method": method, "seed": seed, "device": str(dev),
                  "torch_threads": torch.get_num_threads(), **setting, **data.info}  # fmt: skip
        return results.save_run(folder, params, metrics)


def run_grid(
    methods: Sequence[str],
    seeds: Sequence[int],
    results_dir: str | os.PathLike,
    data: SegmentationData,
    **kwargs: Any,
) -> list[tuple[str, list[dict[str, Any]]]]:
    """:func:`run` for every method and seed: ``[(method, [metrics per seed])]``."""
    n = len(methods) * len(seeds)
    return [(m, [run(m, results_dir, data, seed=s, position=(i * len(seeds) + j + 1, n), **kwargs)
                 for j, s in enumerate(seeds)]) for i, m in enumerate(methods)]  # fmt: skip


def setting_notes(overrides: dict[str, Any] | None = None) -> list[str]:
    """Lines for the tables' notes naming the configuration choices of a setting.

    Which CrossNorm placement the CN and SNCN models used (after every bottleneck of blocks 1-4,
    the released configuration, with or without the image-level unit of the paper's Figure 14),
    whether the training augmentation blurred, and which mIoU definition the numbers follow.

    Args:
        overrides: the changes to :data:`sncn.hparams.SEGMENTATION` the runs used.

    Returns:
        One string per choice.
    """
    setting = {**SEGMENTATION, **(overrides or {})}
    if setting["image_cn"]:
        placement = (
            "CrossNorm after blocks 1-4 and on the input images (the caption of the paper's "
            "Figure 14: image and feature level; not the released config)."
        )
    else:
        placement = "CrossNorm after blocks 1-4 (released config); no image-level unit."
    if setting["blur_prob"] > 0:
        k = setting["blur_kernel"]
        blur = (
            f"training augmentation: random scale, rotation, Gaussian blur ({k} x {k}, "
            f"probability {setting['blur_prob']}), flip and crop (released pipeline)."
        )
    else:
        blur = "training augmentation: random scale, rotation, flip and crop (no blur)."
    if setting["miou_absent"] == "zero":
        miou = (
            "mIoU: mean over all 19 classes, a class absent from labels and predictions "
            "counting 0 (released evaluation)."
        )
    else:
        miou = "mIoU: mean over the classes present in labels or predictions only."
    return [placement, blur, miou]


def table_rows(
    runs: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    paper: dict[str, tuple[float | None, float | None]],
    methods: Sequence[str] | None = None,
) -> results.Rows:
    """Rows of Table 3 or 20: ours (mean, std over seeds) next to the paper's ``paper`` numbers;
    :class:`sncn.results.Rows` of the runs shown (the table notes stale ones).

    Args:
        runs: from :func:`run_grid`.
        paper: :data:`PAPER_TABLE3` or :data:`PAPER_TABLE20`.
        methods: rows in order (default: ``paper``'s keys); methods we did not run show ``-``,
            the paper's methods we do not implement (IBN, DR) too.
    """
    ours = dict(runs)
    rows = []
    for method in methods or list(paper):
        seeds = ours.get(method, [])
        src = results.mean_std([m["source_miou"] for m in seeds]) if seeds else (None, None)
        tgt = results.mean_std([m["target_miou"] for m in seeds]) if seeds else (None, None)
        paper_src, paper_tgt = paper.get(method, (None, None))
        rows.append({
            "method": LABELS.get(method, method), "seeds": len(seeds),
            "source mIoU": src[0], "source std": src[1], "paper source": paper_src,
            "target mIoU": tgt[0], "target std": tgt[1], "paper target": paper_tgt,
            "gap": None if not seeds else src[0] - tgt[0],
        })  # fmt: skip
    used = [m for method in methods or list(paper) for m in ours.get(method, [])]
    return results.Rows(rows, runs=used)


def per_class_rows(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> results.Rows:
    """Target-domain IoU per class and method (mean over seeds; ``-`` where a class is absent),
    as :class:`sncn.results.Rows` of these runs."""
    rows = []
    for k, name in enumerate(TRAIN_CLASSES):
        row: dict[str, Any] = {"class": name}
        for method, seeds in runs:
            values = [m["target_iou"][k] for m in seeds if m["target_iou"][k] is not None]
            row[LABELS.get(method, method)] = float(np.mean(values)) if values else None
        rows.append(row)
    return results.Rows(rows, runs=[m for _, seeds in runs for m in seeds])


def data_source(data: SegmentationData) -> str:
    """Where the segmentation data come from, in words for a figure: the generated proxy or
    GTA5 -> Cityscapes."""
    if data.info.get("dataset") == "proxy":
        return (
            "PROXY: generated two-domain street scenes, not GTA5 or Cityscapes (trained on "
            "flat-shaded scenes, shown on the same test scenes rendered realistic)"
        )
    if data.info.get("dataset") == "gta5":
        return "official GTA5 (training) and Cityscapes val (shown)"
    return str(data.info.get("dataset", "unknown data"))


def prediction_figure(
    runs: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    results_dir: str | os.PathLike,
    data: SegmentationData,
    images: int = 4,
    title: str = "",
):
    """Target images, their labels and each method's predictions (first seed), one row each.

    Predictions are read from the runs' ``target_predictions.pt``. Classes are drawn in the
    Cityscapes colours (:func:`~sncn.data.segmentation.colorize`, ignored pixels black), with a
    legend naming every class shown; the title and footer say whether the data are the generated
    proxy (:func:`data_source`).

    Args:
        runs: ``(method, [metrics per seed])`` as :func:`run_grid` returns them.
        results_dir: the profile's results folder (where the runs are).
        data: the data the runs were evaluated on.
        images: rows (target images) to show.
        title: second title line.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from sncn.data.segmentation import IGNORE_INDEX
    from sncn.data.segmentation import PALETTE as CLASS_COLOURS

    columns = [m for m, _ in runs]
    x, y = _first(data.target, images)
    n = len(x)
    fig, axes = plt.subplots(n, 2 + len(columns), figsize=(2.2 * (2 + len(columns)), 1.4 * n + 0.8),
                             squeeze=False, layout="constrained")  # fmt: skip
    shown = set(np.unique(np.asarray(y[:n])).tolist())
    for j, (_, seeds_metrics) in enumerate(runs):
        path = results.run_dir(results_dir, seeds_metrics[0]["run"]) / "target_predictions.pt"
        predicted = torch.load(path)
        for i in range(min(n, len(predicted))):
            axes[i, 2 + j].imshow(colorize(predicted[i]))
            shown |= set(np.unique(np.asarray(predicted[i])).tolist())
    for i in range(n):
        image = x[i].float() / (255 if x.dtype == torch.uint8 else 1)
        axes[i, 0].imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        axes[i, 1].imshow(colorize(y[i]))
    for j, heading in enumerate(["target image", "labels", *(LABELS[m] for m in columns)]):
        axes[0, j].set_title(heading, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    handles = [Patch(facecolor=CLASS_COLOURS[k] / 255, label=TRAIN_CLASSES[k])
               for k in sorted(shown) if k < NUM_CLASSES]  # fmt: skip
    if IGNORE_INDEX in shown:
        handles.append(Patch(facecolor="black", label="ignored"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=7, title="class",
               title_fontsize=8, frameon=False)  # fmt: skip
    target = data.info.get("target_name", "target domain")
    proxy = " (generated proxy data)" if data.info.get("dataset") == "proxy" else ""
    heading = f"Tables 3 and 20: predictions on the target domain{proxy}, first seed per method"
    fig.suptitle(f"{heading}\n{title}" if title else heading, fontsize=10)
    results.figure_footer(fig, data_source(data), f"Target domain: {target}.")
    return fig
