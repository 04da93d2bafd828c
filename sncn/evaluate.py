"""Robustness evaluation of any classifier on CIFAR-10-C, CIFAR-100-C and ImageNet-C.

:func:`evaluate` measures a model's clean error, its error under each of the 15 corruptions at
each severity and its mCE: on CIFAR the unnormalised mCE of Hendrycks and Dietterich (2019) and
of the paper's Table 1, on ImageNet-C the AlexNet-normalised mCE and the relative mCE (the
paper's Table 2). It follows RobustBench's conventions: the model gets unnormalised float images
in ``[0, 1]`` (``(N, 3, 32, 32)`` for CIFAR, ``(N, 3, 224, 224)`` for ImageNet) and does its own
normalisation (or give ``preprocessing``).

CIFAR: the corrupted images come from the official CIFAR-C files when they are in the data root,
else they are generated on the fly on the evaluation device, batch by batch, with
:func:`sncn.corruptions.corrupt` (no intermediate files): the same images
:func:`sncn.corruptions.make_c` would write for the same test images, seed and batch size.
``n_images`` evaluates a class-balanced draw of that many test images per corruption and
severity, each cell its own (:func:`sncn.experiments.cifar_c.cell_subsets`), and reports the
standard error of the mCE that the draw costs.

ImageNet-C: the clean images are the ImageNet validation folder ``<root>/imagenet/val/<wnid>/*``
or, without it, the 1,000-image sample ``<root>/imagenet_sample``
(:class:`sncn.data.vision.ImageNetSample`), at ``Resize(256) + CenterCrop(224)``. The corrupted
images are the official ``<root>/ImageNet-C/<corruption>/<severity>/<wnid>/*`` when that folder
exists, else the clean crops corrupted on the fly with the 224-px table of
:mod:`sncn.corruptions` (the images ``make_c(..., table="imagenet")`` would write for the same
crops, seed and batch size). ImageNet-C images are 224 x 224 crops; by default
(``imagenet_c_geometry="released"``) they go through Resize(256) + CenterCrop(224) again before
the model, an 8/7 enlargement, as in the paper's and AugMix's ``imagenet.py``, RobustBench and
:mod:`sncn.experiments.imagenet_c`; ``"stored"`` feeds them as they are (FIDELITY.md).
``n_images`` takes one class-balanced random subset of that many images, shared by the clean
error and every cell (each JPEG is decoded once). The result's ``data`` says which data were
used.

:func:`load_model` reads ``torchvision:NAME``, ``timm:NAME`` or ``module:function``
specifications, for ``sncn evaluate`` (:mod:`sncn.cli`).
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms

from sncn.corruptions import CORRUPTIONS, SEVERITIES, cell_seed, check_name, check_severity, corrupt
from sncn.data import data_root, sample_for, sample_root
from sncn.data.vision import (
    ImageNetSample,
    imagenet_c_folder,
    imagenet_class_to_idx,
    imagenet_folder,
    imagenet_transform,
    load_cifar,
    load_cifar_c,
    official_cifar_c,
)
from sncn.experiments.cifar_c import cell_subsets, independent_cells, mce_standard_error
from sncn.metrics import (
    ALEXNET_ERRORS,
    cifar_mce,
    imagenet_ce,
    imagenet_mce,
    relative_ce,
    relative_mce,
)
from sncn.utils import progress_bar

#: Dataset names of :func:`evaluate` -> the clean dataset.
DATASETS = {"cifar10-c": "cifar10", "cifar100-c": "cifar100", "imagenet-c": "imagenet"}
_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
#: Side of the ImageNet(-C) images the model gets (the centre crop; ImageNet-C's stored size).
IMAGENET_SIZE = 224
#: Per-channel normalisations that :func:`load_model` can put in front of a model.
NORMALISATIONS = {
    "none": None,
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # the paper's CIFAR code
}


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, for models that expect normalised images."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


@torch.no_grad()
def _wrong(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    preprocessing: Callable[[Tensor], Tensor] | None,
    num_classes: int,
) -> np.ndarray:
    """Which of the uint8 NCHW ``images`` (on the model's device) the model gets wrong."""
    x = images.float().div_(255)
    if preprocessing is not None:
        x = preprocessing(x)
    logits = model(x)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(
            f"the model returned outputs of shape {tuple(logits.shape)}; a classifier of the "
            f"{num_classes} classes of the dataset must return (batch, {num_classes}) logits "
            "(give a model with that many outputs, e.g. --num-classes)"
        )
    return (logits.argmax(1) != labels).cpu().numpy()


def evaluate(
    model: nn.Module,
    dataset: str = "cifar10-c",
    *,
    preprocessing: Callable[[Tensor], Tensor] | None = None,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    n_images: int | None = None,
    batch_size: int = 250,
    device: str | torch.device | None = None,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
    imagenet_c_geometry: str = "released",
) -> dict[str, Any]:
    """Clean and corruption errors of a classifier, and its mCE.

    Args:
        model: any ``nn.Module`` mapping float ``(N, 3, 32, 32)`` (CIFAR) or
            ``(N, 3, 224, 224)`` (ImageNet) images in ``[0, 1]`` to ``(N, classes)`` logits
            (10, 100 or 1,000 classes); it is put in eval mode (and moved to ``device``).
        dataset: ``"cifar10-c"``, ``"cifar100-c"`` or ``"imagenet-c"``.
        preprocessing: applied to each float batch before the model (e.g. a
            :class:`Normalize`); None for models that normalise themselves.
        corruptions, severities: which cells (default all 15 x 5; the mCE needs them all; the
            ImageNet CE of a corruption needs its 5 severities).
        n_images: CIFAR: test images per corruption and severity, each cell its own
            class-balanced draw (None: all 10,000 in every cell, RobustBench's setting); the
            clean error always uses all 10,000 test images. ImageNet-C: one class-balanced
            random subset of that many validation (or sample) images, shared by the clean error
            and every cell (None: all of them, 50,000 for ImageNet's validation set); with
            official ImageNet-C, each cell's folder gets the same draw (the same files when it
            holds the validation images).
        batch_size: images per forward pass (and per generated batch).
        device: where to run the model and generate the corruptions (default: CUDA when
            available, else the CPU).
        root: data root (default ``$SNCN_DATA``): the CIFAR test set, and ``CIFAR-10-C`` /
            ``CIFAR-100-C`` if present; ``imagenet/val`` or else ``imagenet_sample``, and
            ``ImageNet-C`` if present.
        seed: seed of the draws and of the generated corruptions.
        progress: show a progress bar with images/s (needs tqdm).
        workers: ImageNet-C: ``DataLoader`` processes decoding the JPEGs (0: this process;
            default: one less than the CPUs this process may use, at most 8). Ignored for CIFAR,
            which is decoded into memory once.
        imagenet_c_geometry: ImageNet-C: ``"released"`` (default: the corrupted 224-px crops
            go through Resize(256) + CenterCrop(224) again, as the paper's code, AugMix and
            RobustBench do) or ``"stored"`` (as they are).

    Returns:
        ``{"dataset", "source"`` (``"official"`` or ``"generated"``), ``"clean_error"``,
        ``"clean_images"``, ``"errors"`` (``{corruption: [error at each severity]}``, in %),
        ``"mce"`` (None unless all 15 x 5 cells were evaluated), ``"mce_normalisation"``
        (``"none"``: CIFAR's unnormalised mean; ``"alexnet"``: ImageNet's, AlexNet = 100),
        ``"mce_se"`` (its standard error over test images), ``"c_images"`` (per cell),
        ``"c_cells"`` (``"independent"`` draws or ``"shared"`` images), ``"severities"``,
        ``"seed"``, ``"device"``, ``"seconds"``, ``"images_per_second"}``; ImageNet-C adds
        ``"ce"`` and ``"relative_ce"`` (``{corruption: %}``, AlexNet = 100, for corruptions with
        all 5 severities, else None), ``"relative_mce"`` (None unless all 75 cells) and
        ``"data"``, which data were used: ``clean`` (``"imagenet-val"`` or
        ``"imagenet-sample"``), ``clean_folder``, ``embedded_sample`` (the repository's
        few-image sample, :func:`sncn.data.sample_for`), ``clean_images`` (evaluated),
        ``clean_available`` (in the folder), ``subset`` (the draw, or None: all),
        ``corrupted`` (``"official"`` or ``"generated"``), ``corrupted_folder`` (the official
        one, or None), ``corruption_table`` (``"imagenet"`` when generated),
        ``preprocessing`` and ``description`` (one line, in words).

    Raises:
        ValueError: an unknown dataset, corruption or severity, or a model whose outputs are not
            ``(N, classes)``.
        FileNotFoundError: ImageNet-C without ImageNet's validation folder and without the
            sample, or an official ImageNet-C folder lacking a requested cell.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of: {', '.join(DATASETS)}")
    corruptions = [check_name(c) for c in corruptions]
    severities = [check_severity(s) for s in severities]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    name = DATASETS[dataset]
    num_classes = _CLASSES[name]
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    if name == "imagenet":
        return _imagenet_c(model, preprocessing, corruptions, severities, n_images, batch_size,
                           device, root, seed, progress, workers,
                           imagenet_c_geometry)  # fmt: skip
    test_x, test_y = load_cifar(name, "test", root, progress=progress)
    official = official_cifar_c(name, root)
    independent = independent_cells(n_images, len(test_y))
    cells = cell_subsets(test_y, n_images, seed) if independent else None
    per_cell = n_images if independent else len(test_y)
    description = f"{dataset} ({'official' if official else 'generated'})"
    total = len(test_y) + per_cell * len(corruptions) * len(severities)
    bar = progress_bar(total, progress, unit="img", desc=description)  # shows images/s
    start = time.perf_counter()

    def predictions(images: np.ndarray, labels: np.ndarray, make=None) -> np.ndarray:
        wrong = []
        for k in range(0, len(labels), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[k : k + batch_size]))
            x = x.to(device).permute(0, 3, 1, 2)
            if make is not None:
                x = make(x)
            y = torch.from_numpy(labels[k : k + batch_size]).to(device)
            wrong.append(_wrong(model, x, y, preprocessing, num_classes))
            bar.update(len(y))
        return np.concatenate(wrong)

    clean = predictions(test_x, test_y)
    wrong: dict[str, list[np.ndarray]] = {}
    for corruption in corruptions:
        wrong[corruption] = []
        for severity in severities:
            take = cells[corruption, severity] if cells is not None else slice(None)
            if official is not None:
                images, labels = load_cifar_c(official, corruption, severity)
                wrong[corruption].append(predictions(images[take], labels[take]))
                continue
            make = partial(corrupt, name=corruption, severity=severity, table="cifar",
                           generator=torch.Generator().manual_seed(
                               cell_seed(seed, corruption, severity)))  # fmt: skip
            wrong[corruption].append(predictions(test_x[take], test_y[take], make))
    bar.close()
    seconds = time.perf_counter() - start
    errors = {c: [100.0 * float(w.mean()) for w in ws] for c, ws in wrong.items()}
    complete = list(corruptions) == list(CORRUPTIONS) and list(severities) == list(SEVERITIES)
    evaluated = len(test_y) + per_cell * len(corruptions) * len(severities)
    return {
        "dataset": dataset,
        "source": "official" if official is not None else "generated",
        "clean_error": 100.0 * float(clean.mean()),
        "clean_images": len(test_y),
        "errors": errors,
        "mce": cifar_mce(errors) if complete else None,
        "mce_normalisation": "none",
        "mce_se": mce_standard_error(wrong, independent) if complete else None,
        "c_images": per_cell,
        "c_cells": "independent" if independent else "shared",
        "severities": list(severities),
        "seed": seed,
        "device": str(device),
        "seconds": seconds,
        "images_per_second": evaluated / seconds if seconds > 0 else None,
    }


# ----------------------------------------------------------------------------------------------
# ImageNet-C


def _imagenet_c(
    model: nn.Module,
    preprocessing: Callable[[Tensor], Tensor] | None,
    corruptions: Sequence[str],
    severities: Sequence[int],
    n_images: int | None,
    batch_size: int,
    device: torch.device,
    root: str | os.PathLike | None,
    seed: int,
    progress: bool,
    workers: int | None,
    geometry: str,
) -> dict[str, Any]:
    """:func:`evaluate` on ImageNet-C (arguments checked there; the result is described there).

    Generated cells: the clean batch is decoded once and corrupted for every cell in turn, each
    cell with its own generator advanced batch by batch. Official cells: read folder by folder.
    """
    workers = _default_workers() if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    clean_set, labels, data = _imagenet_clean(root)
    keep = imagenet_subset(labels, n_images, seed)
    official = _official_imagenet_c(root, corruptions, severities)
    source = "official" if official is not None else "generated"
    cells = [(c, s) for c in corruptions for s in severities]
    folders: dict[tuple[str, int], tuple[Dataset, np.ndarray]] = {}  # official cells
    files: set[tuple[str, ...]] = set()  # the drawn files of each, relative to its folder
    if geometry not in GEOMETRIES:
        raise ValueError(f"imagenet_c_geometry must be one of {GEOMETRIES}, got {geometry!r}")
    for c, s in cells if official is not None else ():
        folder = official / c / str(s)
        cell = imagenet_c_folder(c, s, root, transform=_official_crop(geometry),
                                 class_to_idx=_class_map(folder, root))  # fmt: skip
        take = imagenet_subset(cell.targets, n_images, seed)
        files.add(tuple(Path(cell.samples[i][0]).relative_to(folder).as_posix() for i in take))
        folders[c, s] = cell, take
    sizes = sorted({len(take) for _, take in folders.values()} or {len(keep)})
    if len(sizes) > 1:
        raise ValueError(f"the ImageNet-C cells of {official} hold different numbers of images "
                         f"({sizes[0]} to {sizes[-1]} after the draw); extract the archives "
                         "again")  # fmt: skip
    per_cell = sizes[0]
    bar = progress_bar(len(keep) + per_cell * len(cells), progress, unit="img",
                       desc=f"imagenet-c ({source})")  # fmt: skip
    start = time.perf_counter()

    def run(images: Tensor, targets: Tensor) -> np.ndarray:
        wrong = _wrong(model, images.to(device), targets.to(device), preprocessing, 1000)
        bar.update(len(targets))
        return wrong

    clean: list[np.ndarray] = []
    wrong: dict[tuple[str, int], list[np.ndarray]] = {cell: [] for cell in cells}
    # one generator per cell, advanced batch by batch: make_c(crops, table="imagenet")'s images
    generators = {cell: torch.Generator().manual_seed(cell_seed(seed, *cell)) for cell in cells}
    frost_dir = data_root(root) / "frost"  # else the copy shipped in sncn (find_frost_dir)
    for x, y in _batches(clean_set, keep, batch_size, workers):
        x = x.to(device)
        clean.append(run(x, y))
        if official is None:
            for c, s in cells:
                z = corrupt(x, c, s, table="imagenet", generator=generators[c, s],
                            frost_dir=frost_dir)  # fmt: skip
                wrong[c, s].append(run(_reframe(z) if geometry == "released" else z, y))
    for (c, s), (cell, take) in folders.items():
        for x, y in _batches(cell, take, batch_size, workers):
            wrong[c, s].append(run(x, y))
    bar.close()
    seconds = time.perf_counter() - start

    by_corruption = {c: [np.concatenate(wrong[c, s]) for s in severities] for c in corruptions}
    errors = {c: [100.0 * float(w.mean()) for w in ws] for c, ws in by_corruption.items()}
    clean_error = 100.0 * float(np.concatenate(clean).mean())
    five = list(severities) == list(SEVERITIES)  # a corruption's CE needs its 5 severities
    complete = five and list(corruptions) == list(CORRUPTIONS)
    # the mCE is the mean over images of each image's AlexNet-weighted errors: its standard error
    # over the (shared) images is mce_standard_error of the weighted cells
    weighted = {c: [w / ALEXNET_ERRORS[c] for w in ws] for c, ws in by_corruption.items()}
    paired = len(files) <= 1  # every cell holds the same images in the same order
    n_clean = len(keep)
    data.update(
        clean_images=n_clean,
        clean_available=len(labels),
        subset=(None if n_clean == len(labels)
                else f"class-balanced random draw of {n_clean} (seed {seed})"),
        corrupted=source,
        corrupted_folder=str(official) if official is not None else None,
        corruption_table="imagenet" if official is None else None,
        preprocessing=(f"clean: Resize(256) + CenterCrop({IMAGENET_SIZE}); ImageNet-C: "
                       + ("the official 224-px crops" if official is not None
                          else "the clean crops, corrupted")
                       + (", then Resize(256) + CenterCrop(224) again (as released)"
                          if geometry == "released" else ", as they are")
                       + "; floats in [0, 1], not normalised"),
    )  # fmt: skip
    what = "ImageNet validation set" if data["clean"] == "imagenet-val" else "ImageNet sample"
    if data["embedded_sample"]:
        what = "embedded ImageNet sample (sample_data/)"
    count = f"{n_clean:,}" if n_clean == len(labels) else f"{n_clean:,} of {len(labels):,}"
    corrupted = (
        f"official ImageNet-C ({official})"
        if official is not None
        else "generated on the fly from those crops (sncn.corruptions, table imagenet)"
    )
    data["description"] = f"clean: {what}, {count} images; corrupted: {corrupted}"
    evaluated = n_clean + per_cell * len(cells)
    return {
        "dataset": "imagenet-c",
        "source": source,
        "data": data,
        "clean_error": clean_error,
        "clean_images": n_clean,
        "errors": errors,
        "ce": imagenet_ce(errors, corruptions=list(corruptions)) if five else None,
        "relative_ce": (relative_ce(errors, clean_error, corruptions=list(corruptions))
                        if five else None),
        "mce": imagenet_mce(errors) if complete else None,
        "mce_normalisation": "alexnet",
        "relative_mce": relative_mce(errors, clean_error) if complete else None,
        "mce_se": mce_standard_error(weighted, independent=False) if complete and paired else None,
        "c_images": per_cell,
        "c_cells": "shared",
        "severities": list(severities),
        "seed": seed,
        "device": str(device),
        "seconds": seconds,
        "images_per_second": evaluated / seconds if seconds > 0 else None,
    }  # fmt: skip


def imagenet_subset(labels: Sequence[int] | np.ndarray, n: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a class-balanced random draw of ``n`` of ``labels``.

    Each of the K classes gives ``n // K`` images, and ``n % K`` classes drawn at random one
    more (so a draw of 10 of ImageNet's 1,000 classes is 10 random classes, not the first ten);
    which images, and which classes, depend on ``labels``, ``n`` and ``seed`` only, so every
    model, and every official ImageNet-C cell of the same files, gets the same draw.

    Args:
        labels: one label per image.
        n: images to draw; None, or at least ``len(labels)``: all of them.
        seed: seed of the draw.

    Raises:
        ValueError: ``n < 1``, or a class with fewer images than its share.
    """
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    if n < 1:
        raise ValueError(f"n must be >= 1 (or None: all images), got {n}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    extra = set(rng.choice(len(classes), n % len(classes), replace=False).tolist())
    take = []
    for i, label in enumerate(classes):
        members = np.flatnonzero(labels == label)
        k = n // len(classes) + (i in extra)
        if k > len(members):
            raise ValueError(
                f"class {label} has {len(members)} images, fewer than the {k} that a "
                f"class-balanced draw of {n} needs; ask for fewer images or all"
            )
        take.append(rng.choice(members, k, replace=False))
    return np.sort(np.concatenate(take))


def _clean_transform() -> transforms.Compose:
    """PIL image -> uint8 ``(3, 224, 224)``: the geometry of :func:`imagenet_transform` (test),
    ``Resize(256) + CenterCrop(224)``, without its float conversion and normalisation (the model
    gets ``[0, 1]`` images and normalises them itself)."""
    resize, crop, *_ = imagenet_transform(train=False).transforms
    return transforms.Compose([resize, crop, transforms.PILToTensor()])


#: How ImageNet-C's 224-px crops reach the model (:func:`evaluate`'s ``imagenet_c_geometry``).
GEOMETRIES = ("released", "stored")


def _official_crop(geometry: str) -> Callable[[Any], Tensor]:
    """An official ImageNet-C image (a 224 x 224 crop) -> uint8 ``(3, 224, 224)``: through
    Resize(256) + CenterCrop(224) again (``"released"``, on the PIL image as the paper's code)
    or as stored."""
    again = _clean_transform()

    def crop(image: Any) -> Tensor:
        if image.size != (IMAGENET_SIZE, IMAGENET_SIZE):
            raise ValueError(f"ImageNet-C images are {IMAGENET_SIZE} x {IMAGENET_SIZE} px, got "
                             f"one of {image.size[0]} x {image.size[1]}: not an ImageNet-C "
                             "folder")  # fmt: skip
        if geometry == "released":
            return again(image)
        return transforms.functional.pil_to_tensor(image)

    return crop


def _reframe(x: Tensor) -> Tensor:
    """Generated 224-px crops through Resize(256) + CenterCrop(224) again (tensor resize with
    antialiasing; ``"released"`` geometry)."""
    x = transforms.functional.resize(x, [256], antialias=True)
    return transforms.functional.center_crop(x, [IMAGENET_SIZE])


def _class_map(folder: Path, root: str | os.PathLike | None) -> dict[str, int] | None:
    """wnid -> label for an ImageFolder-layout ``folder``: None (sorted wnids: the standard
    labels) when it has ImageNet's 1,000 class folders, else the sample's ``labels.csv`` map
    (:func:`imagenet_class_to_idx`), or None when there is none (the reader then explains)."""
    if folder.is_dir() and sum(e.is_dir() for e in os.scandir(folder)) == 1000:
        return None
    try:
        return imagenet_class_to_idx(root)
    except (FileNotFoundError, ValueError):
        return None


def _imagenet_clean(root: str | os.PathLike | None) -> tuple[Dataset, np.ndarray, dict[str, Any]]:
    """The clean images (uint8 224-px crops): ImageNet's validation folder, else the sample."""
    base = data_root(root)
    val = base / "imagenet" / "val"
    if not val.is_dir() and (base / "imagenet" / "validation").is_dir():
        val = base / "imagenet" / "validation"  # imagenet_folder reads it as "val" too
    transform = _clean_transform()
    if val.is_dir():
        folder = imagenet_folder("val", root, transform=transform,
                                 class_to_idx=_class_map(val, root))  # fmt: skip
        data = {"clean": "imagenet-val", "clean_folder": str(val), "embedded_sample": False}
        return folder, np.asarray(folder.targets), data
    sample = base / "imagenet_sample"
    if (sample / "labels.csv").is_file() or sample_for("imagenet_sample", root) is not None:
        dataset = ImageNetSample(root, transform=transform)
        where = dataset.samples[0][0].parent.parent
        embedded = sample_root() is not None and where.is_relative_to(sample_root())
        data = {"clean": "imagenet-sample", "clean_folder": str(where), "embedded_sample": embedded}
        return dataset, np.asarray([label for _, label in dataset.samples]), data
    raise FileNotFoundError(
        f"no ImageNet validation set ({val}/<wnid>/*.JPEG) and no ImageNet sample "
        f"({sample}/labels.csv with images/) in the data root {base}: put ImageNet's validation "
        "images there in torchvision's ImageFolder layout (ILSVRC-2012 from "
        "https://image-net.org), or the 1,000-image sample, or point --root / $SNCN_DATA at a "
        "data root that has one"
    )


def _official_imagenet_c(
    root: str | os.PathLike | None, corruptions: Sequence[str], severities: Sequence[int]
) -> Path | None:
    """``<root>/ImageNet-C`` if it exists (after checking that it has every requested cell),
    else None: the corruptions are then generated."""
    base = data_root(root) / "ImageNet-C"
    if not base.is_dir():
        return None
    wanted = [f"{c}/{s}" for c in corruptions for s in severities]
    missing = [cell for cell in wanted if not (base / cell).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{base} lacks {len(missing)} of the {len(wanted)} corruption/severity folders asked "
            f"for (e.g. {missing[0]}): extract noise.tar, blur.tar, weather.tar and digital.tar of "
            f"https://zenodo.org/record/2235448 into it (<corruption>/<severity>/<wnid>/*.JPEG), "
            "ask only for the corruptions it has, or move it away to generate the corruptions on "
            "the fly"
        )
    return base


def _batches(dataset: Dataset, indices: np.ndarray, batch_size: int, workers: int) -> DataLoader:
    """``(uint8 images, labels)`` batches of ``dataset[indices]``, in order."""
    return DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=False,
                      num_workers=workers)  # fmt: skip


def _default_workers() -> int:
    """One less than the CPUs this process may use, at most 8 (0 on one CPU)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(8, (cpus or 1) - 1))


def save_evaluation(result: Mapping[str, Any], out: str | os.PathLike, label: str = "model"):
    """Write ``evaluation.json`` (everything), ``evaluation.csv`` (one row per corruption and
    severity, then ``clean``, ``mCE`` and, for ImageNet-C, ``relative mCE``) and, when matplotlib
    is installed and all 75 cells were evaluated, ``evaluation_heatmap.png`` into ``out``;
    returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "evaluation.json", out / "evaluation.csv"]
    paths[0].write_text(json.dumps({"model": label, **result}, indent=2) + "\n")
    with open(paths[1], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["corruption", "severity", "error"])
        for corruption, values in result["errors"].items():
            for severity, error in zip(result["severities"], values, strict=True):
                writer.writerow([corruption, severity, f"{error:.4f}"])
        writer.writerow(["clean", "", f"{result['clean_error']:.4f}"])
        if result["mce"] is not None:
            writer.writerow(["mCE", "", f"{result['mce']:.4f}"])
        if result.get("relative_mce") is not None:
            writer.writerow(["relative mCE", "", f"{result['relative_mce']:.4f}"])
    if result["mce"] is not None and importlib.util.find_spec("matplotlib") is not None:
        from sncn.experiments.cifar_c import heatmap_figure

        if "data" in result:  # ImageNet-C: the footer says which data, the mCE is AlexNet's
            metrics = {**result, "cifar_c": result["data"]["description"]}
            heading = "ImageNet-C by corruption and severity: top-1 error (%), mCE AlexNet = 100"
        else:
            metrics = {**result, "cifar_c": result["source"]}
            heading = None
        fig = heatmap_figure({label: metrics}, title=f"{result['dataset']}: error (%)",
                             heading=heading)  # fmt: skip
        paths.append(out / "evaluation_heatmap.png")
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    return paths


def load_model(
    spec: str, weights: str = "", num_classes: int | None = None, normalize: str = "auto"
) -> nn.Module:
    """A model from a specification, in eval mode.

    Args:
        spec: ``torchvision:NAME`` (``torchvision.models.get_model``), ``timm:NAME``
            (``timm.create_model``) or ``module:function`` (a function of an importable module,
            or of a ``.py`` file given by path, returning the model; the current folder is
            searched first).
        weights: torchvision: a weights name (e.g. ``DEFAULT``, ``IMAGENET1K_V1``; downloaded by
            torchvision, or read from its cache) or a local state dict path; timm: ``DEFAULT``
            for its pretrained weights, or a path; ``module:function``: a state dict path loaded
            into the function's model. Empty or ``none``: as constructed (random weights for
            torchvision and timm).
        num_classes: outputs of a newly built torchvision or timm model (ignored for named
            pretrained weights, which fix it).
        normalize: ``"auto"`` puts the weights' normalisation in front of torchvision and timm
            models with named pretrained weights (RobustBench: the model normalises itself), else
            none; or a key of :data:`NORMALISATIONS` for every model.

    Raises:
        ValueError: a malformed specification, or an unknown normalisation.
        ImportError: the module (or timm) cannot be imported.
        OSError: named weights that are neither in torch's cache nor downloadable (offline);
            the message says where to put the file.
    """
    kind, sep, name = spec.partition(":")
    if not sep or not kind or not name:
        raise ValueError(f"model must be torchvision:NAME, timm:NAME or module:function, got "
                         f"{spec!r}")  # fmt: skip
    if normalize != "auto" and normalize not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalize!r}; expected auto or one of: "
                         f"{', '.join(NORMALISATIONS)}")  # fmt: skip
    if weights.lower() == "none" and not Path(weights).is_file():
        weights = ""
    path = Path(weights) if weights and Path(weights).is_file() else None
    named = bool(weights) and path is None
    kwargs = {} if num_classes is None or named else {"num_classes": num_classes}
    stats = None
    if kind == "torchvision":
        import torchvision

        if named:
            options = torchvision.models.get_model_weights(name)
            if weights not in options.__members__:
                raise ValueError(
                    f"torchvision's {name} has no weights {weights!r} (nor is it a file); "
                    f"expected one of: {', '.join(options.__members__)}, a state dict file, or none"
                )
            chosen = options[weights]
            try:
                model = torchvision.models.get_model(name, weights=chosen, **kwargs)
            except OSError as error:  # offline: urllib's URLError, or a failed write
                file = Path(torch.hub.get_dir()) / "checkpoints" / Path(chosen.url).name
                raise OSError(
                    f"cannot get the {weights} weights of torchvision's {name} ({error}): "
                    f"download {chosen.url} to {file} on a machine that can, or pass a state "
                    "dict file as the weights (--weights PATH)"
                ) from error
            preset = chosen.transforms()
            stats = (tuple(preset.mean), tuple(preset.std))
        else:
            model = torchvision.models.get_model(name, weights=None, **kwargs)
    elif kind == "timm":
        try:
            import timm
        except ImportError as error:
            raise ImportError("timm:NAME needs timm: pip install timm") from error
        if named and weights != "DEFAULT":
            raise ValueError("timm weights must be DEFAULT (its pretrained ones) or a file")
        try:
            model = timm.create_model(name, pretrained=named, **kwargs)
        except OSError as error:  # offline: huggingface_hub's and requests' errors are OSErrors
            raise OSError(
                f"cannot get the pretrained weights of timm's {name} ({error}): download them "
                "with timm on a machine that can (they go to the Hugging Face cache, "
                "$HF_HOME), or pass a state dict file as the weights (--weights PATH)"
            ) from error
        if named:
            config = model.pretrained_cfg
            stats = (tuple(config["mean"]), tuple(config["std"]))
    else:
        model = _import_function(kind, name)()
        if not isinstance(model, nn.Module):
            raise ValueError(f"{spec} returned {type(model).__name__}, not a torch nn.Module")
        if named:
            raise ValueError(f"weights for {spec} must be a state dict file, got {weights!r}")
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    if normalize != "auto":
        stats = NORMALISATIONS[normalize]
    if stats is not None:
        model = nn.Sequential(Normalize(*stats), model)
    return model.eval()


def _import_function(module: str, function: str) -> Callable[[], Any]:
    """``function`` of ``module`` (a dotted name, or a ``.py`` file path)."""
    if module.endswith(".py"):
        spec = importlib.util.spec_from_file_location(Path(module).stem, module)
        if spec is None or not Path(module).is_file():
            raise ImportError(f"no Python file {module}")
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        loaded = importlib.import_module(module)
    if not callable(getattr(loaded, function, None)):
        raise ValueError(f"{module} has no function {function!r}")
    return getattr(loaded, function)
