"""Robustness evaluation of any classifier on CIFAR-10-C and CIFAR-100-C.

:func:`evaluate` measures a model's clean error, its error under each of the 15 corruptions at
each severity and its (unnormalised) mCE, the CIFAR numbers of Hendrycks and Dietterich (2019)
and of the paper's Table 1. It follows RobustBench's conventions: the model gets unnormalised
float images in ``[0, 1]`` (``(N, 3, 32, 32)``) and does its own normalisation (or give
``preprocessing``). The corrupted images come from the official CIFAR-C files when they are in
the data root, else they are generated on the fly on the evaluation device, batch by batch, with
:func:`sncn.corruptions.corrupt` (no intermediate files): the same images
:func:`sncn.corruptions.make_c` would write for the same test images, seed and batch size.

``n_images`` evaluates a class-balanced draw of that many test images per corruption and
severity, each cell its own (:func:`sncn.experiments.cifar_c.cell_subsets`), and reports the
standard error of the mCE that the draw costs. :func:`load_model` reads ``torchvision:NAME``,
``timm:NAME`` or ``module:function`` specifications, for ``sncn evaluate`` (:mod:`sncn.cli`).
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

from sncn.corruptions import CORRUPTIONS, SEVERITIES, cell_seed, check_name, check_severity, corrupt
from sncn.data.vision import load_cifar, load_cifar_c, official_cifar_c
from sncn.experiments.cifar_c import cell_subsets, independent_cells, mce_standard_error
from sncn.metrics import cifar_mce
from sncn.utils import progress_bar

#: Dataset names of :func:`evaluate` -> the clean CIFAR dataset.
DATASETS = {"cifar10-c": "cifar10", "cifar100-c": "cifar100"}
_CLASSES = {"cifar10": 10, "cifar100": 100}
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
) -> dict[str, Any]:
    """Clean and corruption errors of a classifier, and its mCE.

    Args:
        model: any ``nn.Module`` mapping float ``(N, 3, 32, 32)`` images in ``[0, 1]`` to
            ``(N, classes)`` logits; it is put in eval mode (and moved to ``device``).
        dataset: ``"cifar10-c"`` or ``"cifar100-c"``.
        preprocessing: applied to each float batch before the model (e.g. a
            :class:`Normalize`); None for models that normalise themselves.
        corruptions, severities: which cells (default all 15 x 5; the mCE needs them all).
        n_images: test images per corruption and severity, each cell its own class-balanced
            draw (None: all 10,000 in every cell, RobustBench's setting). Clean error always
            uses all 10,000 test images.
        batch_size: images per forward pass (and per generated batch).
        device: where to run the model and generate the corruptions (default: CUDA when
            available, else the CPU).
        root: data root (default ``$SNCN_DATA``): the CIFAR test set, and ``CIFAR-10-C`` /
            ``CIFAR-100-C`` if present.
        seed: seed of the draws and of the generated corruptions.
        progress: show a progress bar with images/s (needs tqdm).

    Returns:
        ``{"dataset", "source"`` (``"official"`` or ``"generated"``), ``"clean_error"``,
        ``"clean_images"``, ``"errors"`` (``{corruption: [error at each severity]}``, in %),
        ``"mce"`` (unnormalised, % ; None unless all 15 x 5 cells were evaluated),
        ``"mce_se"`` (its standard error over test images), ``"c_images"`` (per cell),
        ``"c_cells"``, ``"severities"``, ``"seed"``, ``"device"``, ``"seconds"``,
        ``"images_per_second"}``.

    Raises:
        ValueError: an unknown dataset, corruption or severity, or a model whose outputs are not
            ``(N, classes)``.
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
        "mce_se": mce_standard_error(wrong, independent) if complete else None,
        "c_images": per_cell,
        "c_cells": "independent" if independent else "shared",
        "severities": list(severities),
        "seed": seed,
        "device": str(device),
        "seconds": seconds,
        "images_per_second": evaluated / seconds if seconds > 0 else None,
    }


def save_evaluation(result: Mapping[str, Any], out: str | os.PathLike, label: str = "model"):
    """Write ``evaluation.json`` (everything), ``evaluation.csv`` (one row per corruption and
    severity, then ``clean`` and ``mCE``) and, when matplotlib is installed,
    ``evaluation_heatmap.png`` into ``out``; returns the paths written."""
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
    if result["mce"] is not None and importlib.util.find_spec("matplotlib") is not None:
        from sncn.experiments.cifar_c import heatmap_figure

        metrics = {**result, "cifar_c": result["source"]}
        fig = heatmap_figure({label: metrics}, title=f"{result['dataset']}: error (%)")
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
            into the function's model. Empty: as constructed (random weights for torchvision and
            timm).
        num_classes: outputs of a newly built torchvision or timm model (ignored for named
            pretrained weights, which fix it).
        normalize: ``"auto"`` puts the weights' normalisation in front of torchvision and timm
            models with named pretrained weights (RobustBench: the model normalises itself), else
            none; or a key of :data:`NORMALISATIONS` for every model.

    Raises:
        ValueError: a malformed specification, or an unknown normalisation.
        ImportError: the module (or timm) cannot be imported.
    """
    kind, sep, name = spec.partition(":")
    if not sep or not kind or not name:
        raise ValueError(f"model must be torchvision:NAME, timm:NAME or module:function, got "
                         f"{spec!r}")  # fmt: skip
    if normalize != "auto" and normalize not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalize!r}; expected auto or one of: "
                         f"{', '.join(NORMALISATIONS)}")  # fmt: skip
    path = Path(weights) if weights and Path(weights).is_file() else None
    named = bool(weights) and path is None
    kwargs = {} if num_classes is None or named else {"num_classes": num_classes}
    stats = None
    if kind == "torchvision":
        import torchvision

        model = torchvision.models.get_model(name, weights=weights if named else None, **kwargs)
        if named:
            transforms = torchvision.models.get_model_weights(name)[weights].transforms()
            stats = (tuple(transforms.mean), tuple(transforms.std))
    elif kind == "timm":
        try:
            import timm
        except ImportError as error:
            raise ImportError("timm:NAME needs timm: pip install timm") from error
        if named and weights != "DEFAULT":
            raise ValueError("timm weights must be DEFAULT (its pretrained ones) or a file")
        model = timm.create_model(name, pretrained=named, **kwargs)
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
