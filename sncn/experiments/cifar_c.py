"""CIFAR-10-C / CIFAR-100-C: train one (dataset, backbone, method) cell, evaluate, tabulate.

What ``notebooks/01_cifar_c.ipynb`` calls. One run = train with the paper's settings for the cell
(:func:`sncn.hparams.cifar_setting`, scaled by the profile's budget), then measure the clean test
error and the error on each of the 15 corruptions x 5 severities, and write a run folder
(:mod:`sncn.results`). Finished runs are read back, not retrained.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sncn import results, utils
from sncn.corruptions import CORRUPTIONS, GROUPS, SEVERITIES, make_c
from sncn.data import cache_root, data_root
from sncn.data.augmix import AugMixViews, augmix_loader, augmix_views_batch
from sncn.data.vision import (
    CIFAR_MEAN,
    CIFAR_STD,
    NUM_CLASSES,
    ArrayLoader,
    load_cifar,
    load_cifar_c,
    normalize,
    official_cifar_c,
    random_crop_flip,
)
from sncn.hparams import cifar_setting
from sncn.metrics import cifar_mce, group_errors
from sncn.models import create_model
from sncn.train import AugMixTrainer, ConsistencyTrainer, Trainer, cosine_schedule, fit, sgd
from sncn.utils import device_generator, resolve_device

#: Our method -> (paper table, its column) for the "paper" column of Table 1 / Tables 14-15.
PAPER_COLUMN = {
    "basic": ("1", "Basic"),
    "sn": ("14", "SN"),
    "cn": ("14", "CN"),
    "sncn": ("14", "SNCN+Crop"),
    "sncn_consistency": ("1", "SNCN"),
    "augmix": ("1", "AugMix"),
    "sncn_augmix": ("1", "SNCN+AugMix"),
}
_C_FOLDER = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}
_TEST_IMAGES = 10_000  # in the CIFAR-10 and CIFAR-100 test sets


def subset(
    images: np.ndarray, labels: np.ndarray, n: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced random subset of ``n`` items (all of them when ``n`` is None or larger)."""
    if n is None or n >= len(labels):
        return images, labels
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    take = np.concatenate([idx[: n // len(classes) + (i < n % len(classes))]
                           for i, idx in enumerate(per_class)])  # fmt: skip
    take.sort()
    return images[take], labels[take]


def cell_subsets(labels: np.ndarray, n: int, seed: int = 0) -> dict[tuple[str, int], np.ndarray]:
    """Independent class-balanced draws of ``n`` test images, one per corruption and severity.

    Cell ``(c, s)`` gets its own draw (a generator seeded from ``seed``, the corruption's index
    and ``s``): ``n // K`` images of each of the K classes (one more for the first ``n % K``),
    ordered by class, so every cell has the same label sequence and one ``labels.npy`` serves
    the 75 (:func:`sncn.corruptions.make_c`'s ``cells``). The draws depend on ``labels``, ``n``
    and ``seed`` only, so every method is evaluated on the same images and comparisons stay
    paired. Independent cells make the mCE's standard error over test images several times
    smaller than one shared subset of ``n`` (at most ``sqrt(75)`` times: hard images are hard
    under every corruption; :func:`mce_standard_error`); two cells share an image by chance
    only (``n / len(labels)`` of their images on average).

    Returns:
        ``{(corruption, severity): indices into labels}``.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if not 0 < n <= len(labels):
        raise ValueError(f"n must be between 1 and the {len(labels)} test images, got {n}")
    members = [np.flatnonzero(labels == c) for c in classes]
    counts = [n // len(classes) + (k < n % len(classes)) for k in range(len(classes))]
    short = [str(c) for c, m, k in zip(classes, members, counts, strict=True) if len(m) < k]
    if short:
        raise ValueError(f"classes {', '.join(short)} have fewer than {max(counts)} test images; "
                         "ask for fewer images per corruption and severity")  # fmt: skip
    cells = {}
    for i, corruption in enumerate(CORRUPTIONS):
        for severity in SEVERITIES:
            rng = np.random.default_rng([seed, i, severity])
            cells[corruption, severity] = np.concatenate(
                [rng.choice(m, k, replace=False) for m, k in zip(members, counts, strict=True)]
            )
    return cells


def independent_cells(n_test: int | None, n_images: int) -> bool:
    """Whether ``n_test`` images per corruption and severity out of a test set of ``n_images``
    are independent draws per cell (:func:`cell_subsets`), or the whole set, shared by all."""
    return n_test is not None and 0 < n_test < n_images


def corrupted_test_set(
    dataset: str,
    n_test: int | None,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[Path, str]:
    """The CIFAR-C folder to evaluate on: the real one if present, else one generated here.

    The real ``<root>/CIFAR-10-C`` (or ``CIFAR-100-C``) is used when it is there; every file is
    checked first (:func:`sncn.data.vision.official_cifar_c`), so a truncated or missing one
    stops the run before training, with the command that downloads it again
    (:func:`corruption_wrong` draws its ``n_test`` images per cell). Else
    :func:`sncn.corruptions.make_c` writes, for each corruption and severity, the corruption of
    its own ``n_test`` test images (:func:`cell_subsets`; all 10,000 for each when ``n_test`` is
    None) into ``<cache>/<name>-n<n_test>-cells-seed<seed>`` (``-all-seed<seed>``) in the cache
    folder (:func:`sncn.data.cache_root`) once, and later calls reuse it. The corruptions are
    computed on ``device`` (the training device in :func:`run`: on a GPU all 750,000 images in
    seconds); their random numbers are drawn on the CPU either way, so another device changes at
    most the rounding of a few pixels (float arithmetic), not the draws.

    Returns:
        ``(folder, source)`` with source ``"official"`` or ``"generated"``.
    """
    official = official_cifar_c(dataset, root)
    if official is not None:
        return official, "official"
    images, labels = load_cifar(dataset, "test", root)
    if independent_cells(n_test, len(labels)):
        cells = cell_subsets(labels, n_test, seed)
        name = f"{_C_FOLDER[dataset]}-n{n_test}-cells-seed{seed}"
    else:
        cells, name = None, f"{_C_FOLDER[dataset]}-all-seed{seed}"
    folder = cache_root(root) / name
    make_c(images, labels, folder, table="cifar", seed=seed, progress=False, cells=cells,
           device=device)  # fmt: skip
    return folder, "generated"


def corrupted_test_data(
    dataset: str, n_test: int | None, root: str | os.PathLike | None = None, seed: int = 0
) -> dict[str, Any]:
    """Which CIFAR-C :func:`corrupted_test_set` evaluates on, for a run's identity (its name),
    found without making anything.

    Args:
        dataset: ``cifar10`` or ``cifar100``.
        n_test: test images per corruption and severity (None: all).
        root: data root (default :func:`sncn.data.data_root`).
        seed: the seed of the generated set.

    Returns:
        ``{"cifar_c": "official", "files": digest}`` when the official files are there (the digest
        covers the 16 files' names and sizes and the bytes of ``labels.npy``), else
        ``{"cifar_c": "generated", "images": n_test or 0, "seed": seed, "cells":
        "independent"}`` (``"shared"`` when every cell holds all test images; the generator
        itself is part of the run's code version).
    """
    official = data_root(root) / _C_FOLDER[dataset]
    files = [official / f"{name}.npy" for name in ("labels", *CORRUPTIONS)]
    if not all(f.is_file() for f in files):
        cells = "independent" if independent_cells(n_test, _TEST_IMAGES) else "shared"
        return {"cifar_c": "generated", "images": n_test or 0, "seed": seed, "cells": cells}
    digest = hashlib.sha1(files[0].read_bytes())
    for f in files:
        digest.update(f"{f.name}:{f.stat().st_size};".encode())
    return {"cifar_c": "official", "files": digest.hexdigest()[:12]}


@torch.no_grad()
def wrong_predictions(
    trainer: Trainer,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 500,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
) -> np.ndarray:
    """Which of the uint8 NHWC ``images`` ``trainer.predict`` gets wrong (top-1).

    Args:
        trainer: the model's trainer (``predict`` and ``device`` are used).
        images, labels: uint8 ``(N, H, W, 3)`` images and their labels.
        batch_size: images per prediction.
        mean, std: the per-channel normalisation the model was trained with (default 0.5 and
            0.5, the paper's CIFAR code; FixMatch uses its own, :data:`sncn.hparams.FIXMATCH`).

    Returns:
        A boolean array ``(N,)``, True where the prediction is wrong.
    """
    wrong = []  # on the device, read once at the end: no host wait between batches
    loader = ArrayLoader(images, labels, batch_size, device=trainer.device,
                         transform=partial(normalize, mean=mean, std=std))  # fmt: skip
    for x, y in loader:
        predictions = trainer.predict(x)
        predictions = predictions.argmax(dim=1) if predictions.ndim == 2 else predictions
        wrong.append(predictions != y)
    if not wrong:
        raise ValueError("no test images")
    return torch.cat(wrong).cpu().numpy()


def evaluate_error(
    trainer: Trainer,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 500,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
) -> float:
    """Top-1 error (%) of ``trainer.predict`` on uint8 NHWC images (arguments as
    :func:`wrong_predictions`)."""
    return 100.0 * float(wrong_predictions(trainer, images, labels, batch_size, mean, std).mean())


def corruption_wrong(
    trainer: Trainer,
    folder: Path,
    n_test: int | None = None,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
    seed: int = 0,
) -> dict[str, list[np.ndarray]]:
    """``{corruption: [wrong predictions at severity 1..5]}`` on a CIFAR-C folder, normalised
    with ``mean`` and ``std``.

    When the files hold more than ``n_test`` images per severity (the official CIFAR-C), each
    corruption and severity is evaluated on its own class-balanced draw of ``n_test`` of them
    (:func:`cell_subsets` with ``seed``, the draw a generated set of ``n_test`` is made from);
    else on all images of the file.
    """
    wrong: dict[str, list[np.ndarray]] = {}
    cells = None
    for corruption in CORRUPTIONS:
        wrong[corruption] = []
        for severity in SEVERITIES:
            images, labels = load_cifar_c(folder, corruption, severity)
            if independent_cells(n_test, len(labels)):
                if cells is None:  # every file of a CIFAR-C folder has the same labels
                    cells = cell_subsets(labels, n_test, seed)
                take = cells[corruption, severity]
                images, labels = images[take], labels[take]
            wrong[corruption].append(wrong_predictions(trainer, images, labels, mean=mean, std=std))
    return wrong


def mce_standard_error(
    wrong: Mapping[str, Sequence[np.ndarray]], independent: bool = True
) -> float | None:
    """The standard error (percentage points) of the CIFAR mCE from its test images, the model
    fixed: the spread a new draw of test images would give.

    ``independent`` (each corruption and severity has its own images, :func:`cell_subsets`): the
    mCE is the mean of 75 independent error rates, so its variance is the sum of their binomial
    variances ``var(w_c) / n_c`` over 75 squared. Else the 75 errors are measured on the same
    ``n`` images: the mCE is the mean over images of ``w_i``, the share of the 75 cells in which
    image ``i`` is misclassified, and its standard error is ``std(w) / sqrt(n)`` (larger, as hard
    images are hard under every corruption). None when a cell has fewer than 2 images, or, for
    shared images, when the cells hold different numbers of them.
    """
    cells = [np.asarray(w, dtype=np.float64) for ws in wrong.values() for w in ws]
    if min(len(c) for c in cells) < 2:
        return None
    if independent:
        variance = sum(c.var(ddof=1) / len(c) for c in cells)
        return 100.0 * float(np.sqrt(variance) / len(cells))
    if len({len(c) for c in cells}) != 1:
        return None
    share = np.mean(cells, axis=0)  # (n,) w_i
    return 100.0 * float(share.std(ddof=1) / np.sqrt(len(share)))


def robustness_metrics(
    trainer: Trainer,
    test_x: np.ndarray,
    test_y: np.ndarray,
    c_folder: Path,
    source: str,
    test_subset: int = 0,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
) -> dict[str, Any]:
    """Clean error on ``(test_x, test_y)`` and CIFAR-C errors from ``c_folder`` with their mCE.

    Args:
        trainer: the model's trainer.
        test_x, test_y: the clean test images (uint8 NHWC) and labels: every runner passes the
            whole test set (10,000 images), whatever ``test_subset`` is.
        c_folder: the CIFAR-C folder (:func:`corrupted_test_set`).
        source: ``"official"`` or ``"generated"``, recorded as ``cifar_c``.
        test_subset: images per corruption and severity, each cell its own draw (0: all, the
            same images in every cell).
        mean, std: the normalisation of every test image (default 0.5 and 0.5, the paper's).

    Returns:
        ``clean_error`` with ``clean_images``, ``mce`` with ``mce_se`` (its standard error over
        test images, :func:`mce_standard_error`), ``c_images`` (images per corruption and
        severity) and ``c_cells`` (``"independent"`` draws or ``"shared"`` images), ``errors``
        (``{corruption: [E_1..E_5]}``) and ``cifar_c`` (``source``: which CIFAR-C, official or
        generated).
    """
    wrong = corruption_wrong(trainer, c_folder, test_subset or None, mean, std)
    errors = {c: [100.0 * float(w.mean()) for w in ws] for c, ws in wrong.items()}
    independent = independent_cells(test_subset, len(test_y))
    return {
        "clean_error": evaluate_error(trainer, test_x, test_y, mean=mean, std=std),
        "clean_images": len(test_y),
        "mce": cifar_mce(errors),
        "mce_se": mce_standard_error(wrong, independent),
        "c_images": len(wrong[CORRUPTIONS[0]][0]),
        "c_cells": "independent" if independent else "shared",
        "errors": errors,
        "cifar_c": source,
    }


def run_name(
    dataset: str,
    backbone: str,
    method: str,
    seed: int,
    setting: dict,
    budget: dict,
    data: dict | None = None,
) -> str:
    """``<dataset>-<backbone>-<method>-<digest>-seed<k>`` (:func:`sncn.results.run_name`; the
    digest covers the resolved setting, the budget and ``data``, the CIFAR-C evaluated on,
    :func:`corrupted_test_data`)."""
    config = {"setting": setting, "budget": budget}
    if data is not None:
        config["data"] = data
    return results.run_name(dataset, backbone, method, seed=seed, config=config)


def apply_overrides(setting: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``setting`` updated by ``overrides`` (model kwargs merged; None removes a model kwarg)."""
    unknown = set(overrides) - set(setting)
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(setting)}.")
    out = {**setting, **{k: v for k, v in overrides.items() if k != "model"}}
    model = dict(setting["model"])
    for key, value in overrides.get("model", {}).items():
        if value is None:
            model.pop(key, None)
        else:
            model[key] = value
    out["model"] = model
    return out


def build_trainer(
    setting: dict[str, Any],
    model: torch.nn.Module,
    steps: int,
    device: torch.device,
    *,
    compile: bool | Mapping[str, Any] = False,
) -> Trainer:
    """The cell's trainer: SGD (Nesterov) with a per-step cosine schedule to 1e-6.

    On CUDA the trainer runs with bfloat16 autocast (for training and for ``predict``, hence for
    every test and CIFAR-C error; no loss scaling) and channels_last memory; the released
    ``cifar.py`` trains and evaluates in fp32. On the CPU it runs in fp32.

    Args:
        setting: the cell's setting (:func:`sncn.hparams.cifar_setting`).
        model: the network, moved to ``device`` here.
        steps: optimiser steps of the whole run (the cosine schedule's length).
        device: the training device.
        compile: train through ``torch.compile`` (True, or its keyword arguments; see
            :class:`sncn.train.Trainer`).
    """
    model.to(device)
    opt = sgd(model, setting["lr"], setting["momentum"], setting["weight_decay"])
    sched = cosine_schedule(opt, steps, lr_min_ratio=1e-6 / setting["lr"])
    kwargs = dict(
        cn_prob=setting["cn_prob"],
        active_num=setting["active_num"],
        amp=device.type == "cuda",
        channels_last=device.type == "cuda",
        device=device,
        compile=compile,
    )
    if setting["trainer"] == "consistency":
        return ConsistencyTrainer(model, opt, sched, consist_wt=setting["consist_wt"], **kwargs)
    if setting["trainer"] == "augmix":
        return AugMixTrainer(model, opt, sched, consist_wt=setting["consist_wt"], **kwargs)
    return Trainer(model, opt, sched, **kwargs)


def training_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device
) -> Callable[[int, torch.Generator], ArrayLoader]:
    """The CIFAR training batches of :func:`run`, for :func:`sncn.train.fit`.

    The uint8 training images go to ``device`` once; each epoch draws a permutation, pads by 4
    and crops at random, flips at random and normalises (AugMix's and the paper's CIFAR
    augmentation, :func:`sncn.data.vision.random_crop_flip`), all on ``device`` on whole batches,
    from a generator there derived from the epoch's (:func:`sncn.utils.device_generator`: the
    epoch's generator itself on the CPU). Incomplete last batches are dropped.

    Args:
        images, labels: the training set, uint8 ``(N, 32, 32, 3)`` and ``(N,)``.
        batch_size: images per batch.
        device: the training device.

    Returns:
        ``batches(epoch, generator)``: the epoch's :class:`sncn.data.vision.ArrayLoader`.
    """
    arrays = ArrayLoader(images, labels, batch_size, drop_last=True, device=device,
                         augment=random_crop_flip, transform=normalize)  # fmt: skip

    def batches(epoch: int, generator: torch.Generator) -> ArrayLoader:
        return arrays.shuffled(device_generator(generator, device))

    return batches


def augmix_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device
) -> Callable[[int, torch.Generator], ArrayLoader]:
    """The AugMix training batches of :func:`run` with ``augmix_implementation="device"``.

    As :func:`training_batches`, the uint8 training set goes to ``device`` once and each epoch's
    permutation is drawn there; each batch is then cropped, flipped and turned into its clean
    view and two AugMix views on ``device`` (:func:`sncn.data.augmix.augmix_views_batch`), so a
    batch is ``((clean, aug1, aug2), labels)``, as :class:`sncn.data.augmix.AugMixViews` through
    a DataLoader gives it to :class:`sncn.train.AugMixTrainer`.

    Args:
        images, labels: the training set, uint8 ``(N, 32, 32, 3)`` and ``(N,)``.
        batch_size: images per batch.
        device: the training device.

    Returns:
        ``batches(epoch, generator)``: the epoch's :class:`sncn.data.vision.ArrayLoader`.
    """
    arrays = ArrayLoader(images, labels, batch_size, drop_last=True, device=device,
                         augment=augmix_views_batch)  # fmt: skip

    def batches(epoch: int, generator: torch.Generator) -> ArrayLoader:
        return arrays.shuffled(device_generator(generator, device))

    return batches


def _identity(
    dataset: str,
    backbone: str,
    method: str,
    results_dir: str | os.PathLike,
    *,
    seed: int = 0,
    epochs: int | None = None,
    train_subset: int = 0,
    test_subset: int = 0,
    batch_size: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    root: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """What makes a :func:`run` the run it is (arguments as :func:`run`'s): its resolved
    setting, the CIFAR-C it is evaluated on (:func:`corrupted_test_data`) and its folder
    (created)."""
    setting = apply_overrides(cifar_setting(dataset, backbone, method), overrides or {})
    setting["epochs"] = epochs or setting["epochs"]
    setting["batch_size"] = batch_size or setting["batch_size"]
    budget = {"train_subset": train_subset, "test_subset": test_subset,
              "model_kwargs": model_kwargs or {}}  # fmt: skip
    data = corrupted_test_data(dataset, test_subset or None, root)
    folder = results.run_dir(
        results_dir, run_name(dataset, backbone, method, seed, setting, budget, data)
    )
    return setting, data, folder


#: :func:`run`'s keyword arguments that say how a run is executed, not which run it is.
_EXECUTION = ("device", "progress", "retrain", "position", "compile")


def run_folder(
    dataset: str, backbone: str, method: str, results_dir: str | os.PathLike, **kwargs: Any
) -> Path:
    """The folder :func:`run` with these arguments trains into or reads back (created), found
    without loading or training anything.

    Args:
        dataset, backbone, method, results_dir: as :func:`run`'s.
        **kwargs: :func:`run`'s keyword arguments; those of how it runs (``device``,
            ``progress``, ``retrain``, ``position``, ``compile``) do not change the folder.
    """
    identity = {k: v for k, v in kwargs.items() if k not in _EXECUTION}
    return _identity(dataset, backbone, method, results_dir, **identity)[2]


def run(
    dataset: str,
    backbone: str,
    method: str,
    results_dir: str | os.PathLike,
    *,
    seed: int = 0,
    epochs: int | None = None,
    train_subset: int = 0,
    test_subset: int = 0,
    batch_size: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
    root: str | os.PathLike | None = None,
    progress: bool = True,
    retrain: bool = False,
    position: tuple[int, ...] | None = None,
    compile: bool | Mapping[str, Any] = False,
) -> dict[str, Any]:
    """Train and evaluate one cell; return its metrics (read back if the run already finished).

    The run's name covers the setting, the budget and the CIFAR-C (official or generated,
    :func:`corrupted_test_data`). A finished run is read back (with a note when it is stale: made
    by other code), unless ``retrain`` or a retrain request says otherwise
    (:func:`sncn.results.reuse`); one process at a time works on a run
    (:func:`sncn.results.run_lock`).

    Args:
        dataset: ``cifar10`` or ``cifar100``.
        backbone: ``allconv``, ``densenet``, ``wrn`` or ``resnext``.
        method: a key of :data:`sncn.hparams.CIFAR_METHODS`.
        results_dir: the profile's results folder; the run goes to ``runs/<name>``.
        seed: the run's seed.
        epochs, batch_size: override the paper's (None keeps them; 0 too, for old callers).
        train_subset: train on a class-balanced subset of this many images (0: all 50,000).
        test_subset: evaluate on this many test images per corruption and severity (0: all).
        model_kwargs: extra ``create_model`` kwargs (e.g. a narrower network for smoke tests).
        overrides: changes to the cell's setting (:func:`sncn.hparams.cifar_setting`), e.g.
            ``{"model": {"pos": "pre"}, "cn_prob": 0.5}``; ``model`` entries are merged, a None
            value removes a model kwarg.
        device: ``cuda`` or ``cpu`` (default: CUDA when available).
        root: data root (default :func:`sncn.data.data_root`).
        progress: progress bars.
        retrain: train again even if the run finished.
        position: ``(k, n)``: run ``k`` of a grid of ``n``, shown in the progress lines;
            ``(k, n, K)`` when K runs train at once (:func:`run_concurrently` adds K).
        compile: train through ``torch.compile`` (True, or its keyword arguments;
            :func:`build_trainer`). How the step is executed, like ``device``: recorded in
            ``params.json``, not part of the run's name.

    Returns:
        ``clean_error``, ``mce``, ``errors`` ({corruption: 5 errors}), ``cifar_c`` ("official" or
        "generated"), ``history`` (per epoch), ``steps`` (optimiser steps), ``train_seconds``,
        ``eval_seconds`` (clean and corrupted test sets), ``train_images_per_second``,
        ``code`` (the code version, :func:`sncn.results.code_version`).
    """
    setting, data, folder = _identity(
        dataset, backbone, method, results_dir, seed=seed, epochs=epochs,
        train_subset=train_subset, test_subset=test_subset, batch_size=batch_size,
        model_kwargs=model_kwargs, overrides=overrides, root=root,
    )  # fmt: skip
    with results.run_lock(folder):  # one process at a time trains (or reads) the run
        reused = results.reuse(folder, retrain)
        if reused is not None:
            return reused
        dev = resolve_device(device)
        train_x, train_y = subset(*load_cifar(dataset, "train", root), train_subset or None, seed)
        test_x, test_y = load_cifar(dataset, "test", root)  # clean error: every test image
        c_folder, source = corrupted_test_set(dataset, test_subset or None, root, device=dev)
        if source != data["cifar_c"]:
            raise RuntimeError(f"{dataset}: CIFAR-C changed while the run was set up; run again.")

        torch.manual_seed(seed)
        model = create_model(
            backbone, num_classes=NUM_CLASSES[dataset], **setting["model"], **(model_kwargs or {})
        )
        bs = setting["batch_size"]
        steps_per_epoch = len(train_y) // bs
        if steps_per_epoch < 1:
            raise ValueError(f"batch size {bs} exceeds the {len(train_y)} training images.")
        trainer = build_trainer(setting, model, setting["epochs"] * steps_per_epoch, dev,
                                compile=compile)  # fmt: skip

        if setting["trainer"] == "augmix" and setting["augmix_implementation"] == "device":
            batches = augmix_batches(train_x, train_y, bs, dev)
        elif setting["trainer"] == "augmix":
            views = AugMixViews(train_x, train_y, implementation=setting["augmix_implementation"])

            def batches(epoch: int, generator: torch.Generator) -> Iterable:
                return augmix_loader(views, bs, generator)
        else:
            batches = training_batches(train_x, train_y, bs, dev)

        start = time.perf_counter()
        history = fit(
            trainer, batches, setting["epochs"], folder, seed=seed, progress=progress,
            description=folder.name, position=position,
        )  # fmt: skip
        train_seconds = time.perf_counter() - start
        measured = robustness_metrics(trainer, test_x, test_y, c_folder, source, test_subset)
        metrics = {
            **measured,
            "history": history,
            "steps": setting["epochs"] * steps_per_epoch,
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - start - train_seconds,
            "train_images_per_second": setting["epochs"] * steps_per_epoch * bs / train_seconds,
        }
        params = {"dataset": dataset, "backbone": backbone, "method": method, "seed": seed,
                  "train_images": len(train_y), "test_images": len(test_y), "device": str(dev),
                  "compile": compile if isinstance(compile, bool) else dict(compile),
                  **setting, "model_kwargs": model_kwargs or {}, "data": data}  # fmt: skip
        return results.save_run(folder, params, metrics)


def run_grid(
    datasets: Sequence[str],
    backbones: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    results_dir: str | os.PathLike,
    *,
    concurrent: int = 1,
    **budget: Any,
) -> list[tuple[str, str, str, list[dict[str, Any]]]]:
    """:func:`run` over a grid; ``budget`` holds :func:`run`'s keyword arguments.

    With ``concurrent`` K above 1, K worker processes train the grid's runs at once, each taking
    the next run as it finishes one (:func:`run_concurrently`): several small runs sharing one
    GPU. Neither the order and shape of what is returned nor a run's numbers depend on K: each
    run seeds itself. (On the CPU torch's sums depend on its thread count, which the workers
    share out: a run trained by a worker equals the same run trained alone with as many
    threads.) Each run prints its own bar and epoch lines, labelled ``run k/n``; K bars on one
    terminal overwrite each other, so ``progress=False`` (only the line per finished run) may
    read better.

    Args:
        datasets, backbones, methods, seeds: the grid, run in this order (``k`` of ``n`` in the
            progress lines).
        results_dir: the profile's results folder.
        concurrent: runs trained at once (1: one after another in this process).
        **budget: :func:`run`'s other keyword arguments.

    Returns:
        ``(dataset, backbone, method, [metrics per seed])`` per cell, for :func:`table_rows`.
    """
    if concurrent < 1:
        raise ValueError(f"concurrent must be 1 (one run at a time) or more (runs trained at "
                         f"once by as many processes), got {concurrent}")  # fmt: skip
    cells = [(d, b, m) for d in datasets for b in backbones for m in methods]
    n = len(cells) * len(seeds)
    if concurrent == 1:
        return [
            (d, b, m, [run(d, b, m, results_dir, seed=s, position=(i * len(seeds) + j + 1, n),
                           **budget) for j, s in enumerate(seeds)])
            for i, (d, b, m) in enumerate(cells)
        ]  # fmt: skip
    calls = [dict(dataset=d, backbone=b, method=m, results_dir=results_dir, seed=s,
                  position=(i * len(seeds) + j + 1, n), **budget)
             for i, (d, b, m) in enumerate(cells) for j, s in enumerate(seeds)]  # fmt: skip
    flat = run_concurrently(calls, concurrent)
    return [
        (d, b, m, flat[i * len(seeds) : (i + 1) * len(seeds)]) for i, (d, b, m) in enumerate(cells)
    ]


def run_concurrently(calls: Sequence[Mapping[str, Any]], workers: int) -> list[dict[str, Any]]:
    """:func:`run` once per entry of ``calls`` (its keyword arguments), ``workers`` runs at once
    in as many processes (:func:`sncn.utils.run_concurrently`); their metrics in the order of
    ``calls``.

    Before the workers start, this process makes what the unfinished runs share: the training
    set's decoded cache and the CIFAR-C they are evaluated on (:func:`corrupted_test_set`, on
    the runs' device), so
    that the workers read them rather than each make them at once. Each worker limits torch to
    ``os.cpu_count() // workers`` CPU threads; on CUDA they share one GPU. Every run shows its
    place in the grid (``position``) in its own lines, and this process prints one line per
    finished run. A run that fails stops the others (a stopped run resumes from its last
    checkpoint next time) and raises :class:`RuntimeError` naming it and its folder.

    Args:
        calls: :func:`run`'s arguments for each run, all by keyword.
        workers: runs trained at once.

    Returns:
        The metrics of each run, in the order of ``calls``.
    """
    folders = [run_folder(**call) for call in calls]
    needed = {(c["dataset"], c.get("test_subset", 0), c.get("root"), c.get("device"))
              for c, f in zip(calls, folders, strict=True)
              if c.get("retrain") or not results.is_done(f)}  # fmt: skip
    for dataset, test_subset, root, device in sorted(needed, key=str):
        load_cifar(dataset, "train", root)
        corrupted_test_set(dataset, test_subset or None, root, device=resolve_device(device))
    labels = [(f"run {c['position'][0]}/{c['position'][1]} " if c.get("position") else "")
              + f"{c['dataset']} {c['backbone']} {c['method']} seed {c.get('seed', 0)}"
              for c in calls]  # fmt: skip
    # each run's progress lines count the runs after it as trained `workers` at a time
    calls = [{**c, "position": (*c["position"][:2], workers)} if c.get("position") else c
             for c in calls]  # fmt: skip
    notes = [f"Its run folder: {f}" for f in folders]
    return utils.run_concurrently(run, calls, workers, labels, notes)


Grid = list[tuple[str, str, str, list[dict[str, Any]]]]


def run_ladder(
    datasets: Sequence[str],
    backbones: Sequence[str],
    methods: Sequence[str],
    ladder: Sequence[int],
    seeds: Sequence[int],
    results_dir: str | os.PathLike,
    *,
    concurrent: int = 1,
    **budget: Any,
) -> list[tuple[int, Grid]]:
    """:func:`run_grid` once per training length of ``ladder`` (epochs over the same training
    images, each run with its own full cosine schedule), for the budget curves.

    Args:
        datasets, backbones, methods, seeds: the grid of every rung.
        ladder: epochs of each rung.
        results_dir: the profile's results folder.
        concurrent: runs trained at once within each rung (:func:`run_grid`).
        **budget: :func:`run`'s other keyword arguments (not ``epochs``).

    Returns:
        ``[(epochs, grid)]`` in the order of ``ladder``.
    """
    if "epochs" in budget:
        raise TypeError("run_ladder takes the epochs from ladder, not from epochs=")
    return [
        (epochs, run_grid(datasets, backbones, methods, seeds, results_dir, epochs=epochs,
                          concurrent=concurrent, **budget))
        for epochs in ladder
    ]  # fmt: skip


def _paired(values: Sequence[float], reference: Sequence[float]) -> tuple[float, float]:
    """Mean and std over seeds of ``values - reference``, seed by seed (NaN without a pair)."""
    if len(values) != len(reference):
        return float("nan"), float("nan")
    return results.mean_std([a - b for a, b in zip(values, reference, strict=True)])


def curve_rows(rungs: Sequence[tuple[int, Grid]], reference: str = "basic") -> results.Rows:
    """The budget curves as table rows: one per (dataset, backbone, method, rung).

    Each row has the optimiser steps, the seeds, clean error, mCE and the corruption gap (mean
    and std over seeds), the mean standard error of the mCE over test images, the differences
    from ``reference`` (the same rung and seeds, paired seed by seed) and the corruption-group
    errors (:func:`robustness_columns`).

    Args:
        rungs: ``[(epochs, grid)]`` (:func:`run_ladder`; the main grid may be one of them).
        reference: the method the differences are taken from.

    Returns:
        :class:`sncn.results.Rows`, sorted by dataset, backbone, method and steps.
    """
    cells = {(d, b, m, epochs): seeds for epochs, grid in rungs for d, b, m, seeds in grid}
    if any(s.get("steps") is None for seeds in cells.values() for s in seeds):
        raise ValueError(
            "some runs record no step count (made by older code); train them again with "
            "python -m sncn.pipeline --retrain stale (or pass retrain=True)."
        )
    rows = []
    for (d, b, m, epochs), seeds in sorted(
        cells.items(), key=lambda kv: (*kv[0][:3], kv[1][0]["steps"])
    ):
        base = cells.get((d, b, reference, epochs), [])
        clean = [s["clean_error"] for s in seeds]
        mce = [s["mce"] for s in seeds]
        gap = [s["mce"] - s["clean_error"] for s in seeds]
        d_clean = _paired(clean, [s["clean_error"] for s in base])
        d_mce = _paired(mce, [s["mce"] for s in base])
        d_gap = _paired(gap, [s["mce"] - s["clean_error"] for s in base])
        columns = robustness_columns(seeds)
        clean_mean, clean_std = results.mean_std(clean)
        mce_mean, mce_std = results.mean_std(mce)
        rows.append({
            "dataset": d, "backbone": b, "method": m, "epochs": epochs,
            "steps": seeds[0].get("steps"), "seeds": len(seeds),
            "clean error": clean_mean, "clean std": clean_std,
            "mCE": mce_mean, "mCE std": mce_std,
            "mCE - clean": columns.pop("mCE - clean"),
            "mCE - clean std": columns.pop("mCE - clean std"),
            f"clean - {reference}": d_clean[0],
            f"mCE - {reference}": d_mce[0], f"mCE - {reference} std": d_mce[1],
            f"gap - {reference}": d_gap[0], f"gap - {reference} std": d_gap[1],
            **columns,
        })  # fmt: skip
    return results.Rows(rows, runs=[m for seeds in cells.values() for m in seeds])


def budget_figure(
    rows: Sequence[Mapping[str, Any]],
    dataset: str,
    backbone: str,
    source: str = "",
    reference: str = "basic",
    title: str = "",
):
    """Clean error, mCE and the corruption gap against training steps, for one dataset and
    backbone (rows of :func:`curve_rows`).

    Top row: the three measures (mean over seeds, bars: std over seeds), with the paper's mCE
    (the published backbone trained in full, Table 1 or 14) as a dashed line per method. Bottom
    row: clean error and mCE minus ``reference``'s, seed by seed (below 0: better than
    ``reference``), and the corruption-group errors at the largest budget.

    Args:
        rows: :func:`curve_rows` rows.
        dataset, backbone: which of them to draw.
        source: the data, for the footer (:func:`c_source`).
        reference: the method of the difference panels.
        title: second title line (e.g. the model and training images).
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    rows = [r for r in rows if r["dataset"] == dataset and r["backbone"] == backbone]
    if not rows:
        raise ValueError(f"no budget-curve rows for {dataset} {backbone}")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colour = {m: results.PALETTE[i % len(results.PALETTE)] for i, m in enumerate(methods)}
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), layout="constrained")
    panels = [
        (axes[0][0], "clean error", "clean std", "clean error (%)"),
        (axes[0][1], "mCE", "mCE std", "mCE (%)"),
        (axes[0][2], "mCE - clean", "mCE - clean std", "corruption gap: mCE - clean (pts)"),
        (axes[1][0], f"clean - {reference}", None, f"clean error - {reference} (pts)"),
        (axes[1][1], f"mCE - {reference}", f"mCE - {reference} std", f"mCE - {reference} (pts)"),
    ]
    for ax, key, spread, label in panels:
        for m in methods:
            if key.endswith(f"- {reference}") and m == reference:
                continue
            mine = sorted((r for r in rows if r["method"] == m), key=lambda r: r["steps"])
            ys = [r[key] for r in mine]
            errs = [r[spread] if spread and r[spread] == r[spread] else 0.0 for r in mine]
            ax.errorbar([r["steps"] for r in mine], ys, yerr=errs, marker="o", capsize=3,
                        color=colour[m], label=m)  # fmt: skip
        if key.endswith(f"- {reference}"):
            ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("training steps (log scale)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for m in methods:
        paper = paper_number(dataset, backbone, m)
        if paper is not None:
            axes[0][1].axhline(paper, color=colour[m], linestyle="--", linewidth=1)
    axes[0][1].plot([], [], "k--", linewidth=1, label="paper (full training)")
    results.legend_outside(axes[0][2], *axes[0][1].get_legend_handles_labels())
    ax = axes[1][2]
    top = max(r["steps"] for r in rows)
    at_top = [r for r in rows if r["steps"] == top]
    width = 0.8 / max(len(at_top), 1)
    for i, r in enumerate(at_top):
        values = [r[f"{g} error"] for g in GROUPS]
        if None in values:
            continue
        ax.bar(np.arange(len(GROUPS)) + (i - (len(at_top) - 1) / 2) * width, values, width,
               color=colour[r["method"]], label=r["method"])  # fmt: skip
    ax.set_xticks(range(len(GROUPS)), list(GROUPS))
    ax.set_xlabel("corruption group")
    ax.set_ylabel("mean error (%)")
    ax.set_title(f"corruption groups at {top} steps", fontsize=9)
    heading = "Where the effects appear: errors against the training budget"
    fig.suptitle(f"{heading}\n{title}" if title else heading, fontsize=10)
    results.figure_footer(fig, source, "Each point: a run trained to that length (its own cosine "
                          "schedule), mean over seeds; bars: std over seeds.")  # fmt: skip
    return fig


def paper_number(dataset: str, backbone: str, method: str) -> float | None:
    """The paper's mCE for this cell (Table 1, or Table 14/15 for SN, CN and SNCN+Crop)."""
    table, column = PAPER_COLUMN[method]
    if table == "1":
        return results.paper_value(results.TABLE1, results.TABLE1_METHODS, dataset, backbone,
                                   column)  # fmt: skip
    return results.paper_value(results.TABLE14, results.TABLE14_METHODS, dataset, backbone, column)


def mce_se(seeds: Sequence[Mapping[str, Any]]) -> float | None:
    """The mean over seeds of the runs' ``mce_se`` (:func:`mce_standard_error`), or None when a
    run has none (made before it was recorded, or on files of unequal sizes)."""
    values = [m.get("mce_se") for m in seeds]
    return None if None in values else results.mean_std(values)[0]


def robustness_columns(seeds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Relative robustness beside an mCE, from the runs' metrics (one dict per seed, each with
    ``clean_error``, ``mce`` and ``errors``): ``mCE - clean``, the corruption gap (mean and spread
    over seeds: what the corruptions add, comparable when clean errors differ), the standard
    error of the mCE over test images (:func:`mce_se`; None for runs that did not record it), the
    mean error of each corruption group (noise, blur, weather, digital:
    :func:`sncn.metrics.group_errors`; None when a run kept no per-corruption errors)."""
    gap, gap_std = results.mean_std([m["mce"] - m["clean_error"] for m in seeds])
    groups = [group_errors(m["errors"]) for m in seeds if "errors" in m]
    complete = len(groups) == len(seeds)
    return {
        "mCE - clean": gap,
        "mCE - clean std": gap_std,
        "mCE SE (images)": mce_se(seeds),
        **{
            f"{g} error": results.mean_std([e[g] for e in groups])[0] if complete else None
            for g in GROUPS
        },
    }


def table_rows(runs: Sequence[tuple[str, str, str, Sequence[dict[str, Any]]]]) -> results.Rows:
    """Rows of Table 1 (and 14/15): ours (mean over seeds, and spread) next to the paper.

    Args:
        runs: ``(dataset, backbone, method, [metrics of each seed])``.

    Returns:
        The rows, as :class:`sncn.results.Rows` of these runs (the table notes stale ones).
    """
    rows = []
    for dataset, backbone, method, seeds in runs:
        mce, mce_std = results.mean_std([m["mce"] for m in seeds])
        paper = paper_number(dataset, backbone, method)
        table, column = PAPER_COLUMN[method]
        rows.append({
            "dataset": dataset, "backbone": backbone, "method": method,
            "seeds": len(seeds),
            "clean error": results.mean_std([m["clean_error"] for m in seeds])[0],
            "mCE": mce,
            "mCE std": mce_std,
            **robustness_columns(seeds),
            "paper mCE": paper,
            "ours - paper": None if paper is None else mce - paper,
            "paper column": f"Table {table if table == '1' else '14/15'}: {column}",
            "CIFAR-C": ", ".join(sorted({m["cifar_c"] for m in seeds})),
        })  # fmt: skip
    return results.Rows(rows, runs=[m for *_, seeds in runs for m in seeds])


def c_source(metrics: Iterable[dict[str, Any]]) -> str:
    """Where the CIFAR-C of these runs (their ``cifar_c``) came from, in words for a figure."""
    words = {
        "official": "the official CIFAR-C files (Hendrycks and Dietterich)",
        "generated": "CIFAR-C generated here (sncn.corruptions on the test images)",
    }
    return " and ".join(words.get(k, k) for k in sorted({m["cifar_c"] for m in metrics}))


def heatmap_figure(metrics: dict[str, dict[str, Any]], title: str = "", heading: str | None = None):
    """Corruption x severity error heatmaps, one panel per method (``{method: metrics}``).

    Each cell prints its error in black or white, whichever is more readable on its colour
    (:func:`sncn.results.text_colour`); the footer says which CIFAR-C the errors are on.

    Args:
        metrics: ``{method: metrics of one run}`` (``errors``, ``mce``, ``cifar_c``: ``official``,
            ``generated`` or the footer's words).
        title: second title line (e.g. the dataset and backbone).
        heading: first title line (default: Table 1's cells; :mod:`sncn.evaluate` names
            ImageNet-C).
    """
    import matplotlib.pyplot as plt

    methods = list(metrics)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods) + 1.2, 5.6),
                             sharey=True, squeeze=False, layout="constrained")  # fmt: skip
    vmax = max(max(max(v) for v in m["errors"].values()) for m in metrics.values())
    for ax, method in zip(axes[0], methods, strict=True):
        grid = np.array([metrics[method]["errors"][c] for c in CORRUPTIONS])  # (15, 5)
        image = ax.imshow(grid, vmin=0, vmax=vmax, cmap=results.HEATMAP_CMAP, aspect="auto")
        ax.set_title(f"{method}\nmCE {metrics[method]['mce']:.1f}%", fontsize=9)
        ax.set_xticks(range(5), [str(s) for s in SEVERITIES])
        ax.set_xlabel("severity (1-5)")
        ax.set_yticks(range(len(CORRUPTIONS)), CORRUPTIONS)
        for (i, j), value in np.ndenumerate(grid):
            cell = image.cmap(image.norm(value))
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                    color=results.text_colour(cell))  # fmt: skip
    axes[0][0].set_ylabel("corruption")  # shared by every panel
    fig.colorbar(image, ax=axes[0].tolist(), label="error (%)", shrink=0.8)
    heading = heading or "Table 1 cells by corruption and severity: test error (%)"
    fig.suptitle(f"{heading}\n{title}" if title else heading, fontsize=10)
    results.figure_footer(fig, c_source(metrics.values()))
    return fig
