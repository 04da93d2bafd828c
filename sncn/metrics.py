"""Metrics of the paper: top-1 error, mean corruption error (CIFAR and ImageNet), mIoU.

All errors are percentages in [0, 100]. Corruption results are passed around as a plain mapping
``{corruption: [error at severity 1, ..., error at severity 5]}`` (percent); :func:`error_table`
orders it into a ``(15, 5)`` array and :func:`table_rows` turns it into printable rows.

Reference:
    Tang et al., "SelfNorm and CrossNorm for Out-of-Distribution Robustness", Sec. 4 "Metric";
    Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
    Perturbations", ICLR 2019 (CE, mCE, relative mCE).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

# The 15 benchmark corruptions of Hendrycks & Dietterich in the paper's table order; one
# definition for the package, re-exported here for metric users.
from sncn.corruptions import CORRUPTIONS, GROUPS

__all__ = [
    "ABSENT",
    "ALEXNET_CLEAN_ERROR",
    "ALEXNET_ERRORS",
    "CORRUPTIONS",
    "NUM_SEVERITIES",
    "ConfusionMatrix",
    "ErrorMeter",
    "cifar_mce",
    "corruption_errors",
    "count_errors",
    "error_table",
    "group_errors",
    "imagenet_ce",
    "imagenet_mce",
    "iou_from_confusion",
    "miou_from_confusion",
    "relative_ce",
    "relative_mce",
    "table_rows",
    "top1_error",
]


#: Severities per corruption.
NUM_SEVERITIES = 5

#: AlexNet's top-1 error on ImageNet-C per corruption, averaged over the 5 severities, as a
#: fraction: the normaliser of the ImageNet mCE. Values from ``ALEXNET_ERR`` in
#: google-research/augmix ``imagenet.py`` ("Raw AlexNet errors taken from
#: https://github.com/hendrycks/robustness"), identical in amazon-science/crossnorm-selfnorm
#: ``imagenet.py``; listed there in the order of :data:`CORRUPTIONS`.
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}

#: AlexNet's clean top-1 error on the ImageNet validation set, as a fraction: 1 - 0.56522, the
#: acc@1 torchvision publishes for ``AlexNet_Weights.IMAGENET1K_V1`` (``alexnet-owt-4df8aa71``,
#: the weights hendrycks/robustness ``ImageNet-C/test.py`` evaluates); Hendrycks & Dietterich
#: (2019) report it rounded, 43.5%. Only the relative mCE uses it.
ALEXNET_CLEAN_ERROR: float = 0.43478


# ----------------------------------------------------------------------------------------------
# Top-1 error


def top1_error(outputs: Tensor, targets: Tensor) -> float:
    """Top-1 error in percent.

    Args:
        outputs: logits ``(N, K)``, or predicted labels ``(N,)``.
        targets: labels ``(N,)``.

    Returns:
        ``100 * mean(prediction != target)``.
    """
    wrong, total = count_errors(outputs, targets)
    return 100.0 * wrong / total


def count_errors(outputs: Tensor, targets: Tensor) -> tuple[int, int]:
    """Count top-1 mistakes, for accumulating an error over batches.

    Args:
        outputs: logits ``(N, K)``, or predicted labels ``(N,)``.
        targets: labels ``(N,)``.

    Returns:
        ``(wrong, total)``.
    """
    predictions = outputs.argmax(dim=1) if outputs.ndim == 2 else outputs  # (N,)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions {tuple(predictions.shape)} vs targets {tuple(targets.shape)}"
        )
    if targets.numel() == 0:
        raise ValueError("no targets")
    return int((predictions != targets).sum()), targets.numel()


class ErrorMeter:
    """Top-1 error accumulated over batches: ``update`` per batch, ``error`` at the end."""

    def __init__(self) -> None:
        self.wrong = 0
        self.total = 0

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        """Add one batch.

        Args:
            outputs: logits ``(N, K)`` or predicted labels ``(N,)``.
            targets: labels ``(N,)``.
        """
        wrong, total = count_errors(outputs, targets)
        self.wrong += wrong
        self.total += total

    @property
    def error(self) -> float:
        """Top-1 error in percent over everything added so far."""
        if self.total == 0:
            raise ValueError("ErrorMeter is empty")
        return 100.0 * self.wrong / self.total


# ----------------------------------------------------------------------------------------------
# Corruption errors


def error_table(
    errors: Mapping[str, Sequence[float]], corruptions: Sequence[str] = CORRUPTIONS
) -> np.ndarray:
    """Order per-severity errors into a ``(corruptions, severities)`` array.

    Args:
        errors: ``{corruption: [E_1, ..., E_5]}`` in percent; extra corruptions are ignored.
        corruptions: which rows, in which order (default the 15 of :data:`CORRUPTIONS`).

    Returns:
        float64 ``(len(corruptions), 5)``.

    Raises:
        KeyError: a corruption is missing.
        ValueError: a corruption does not have exactly 5 severities.
    """
    missing = [c for c in corruptions if c not in errors]
    if missing:
        raise KeyError(f"no errors for corruptions {missing}")
    rows = [np.asarray(errors[c], dtype=np.float64) for c in corruptions]
    bad = {
        c: r.shape for c, r in zip(corruptions, rows, strict=True) if r.shape != (NUM_SEVERITIES,)
    }
    if bad:
        raise ValueError(f"expected {NUM_SEVERITIES} severities per corruption, got {bad}")
    return np.stack(rows) if rows else np.zeros((0, NUM_SEVERITIES))


def corruption_errors(
    errors: Mapping[str, Sequence[float]], corruptions: Sequence[str] = CORRUPTIONS
) -> dict[str, float]:
    """Unnormalised corruption error per corruption: the mean over severities.

    Args:
        errors: ``{corruption: [E_1, ..., E_5]}`` in percent.
        corruptions: which corruptions (default :data:`CORRUPTIONS`).

    Returns:
        ``{corruption: mean_s E_s}`` in percent.
    """
    table = error_table(errors, corruptions)
    return dict(zip(corruptions, table.mean(axis=1).tolist(), strict=True))


def group_errors(
    errors: Mapping[str, Sequence[float]], groups: Mapping[str, Sequence[str]] = GROUPS
) -> dict[str, float]:
    """Mean error of each corruption group (noise, blur, weather, digital: the benchmark's four
    categories, :data:`sncn.corruptions.GROUPS`) over its corruptions and severities.

    Args:
        errors: ``{corruption: [E_1, ..., E_5]}`` in percent.
        groups: ``{group: corruptions}``.

    Returns:
        ``{group: error}`` in percent.
    """
    return {g: float(error_table(errors, members).mean()) for g, members in groups.items()}


def cifar_mce(
    errors: Mapping[str, Sequence[float]], corruptions: Sequence[str] = CORRUPTIONS
) -> float:
    """CIFAR mean corruption error: ``1/75 sum_c sum_s E_{s,c}``, unnormalised.

    Args:
        errors: ``{corruption: [E_1, ..., E_5]}`` in percent.
        corruptions: which corruptions (default the 15 of :data:`CORRUPTIONS`).

    Returns:
        The mCE in percent.

    Reference:
        The paper, Sec. 4 "Metric", and AugMix's ``cifar.py`` (mean accuracy over the 15 CIFAR-C
        files of 5 x 10,000 images).
    """
    return float(error_table(errors, corruptions).mean())


def imagenet_ce(
    errors: Mapping[str, Sequence[float]],
    alexnet: Mapping[str, float] = ALEXNET_ERRORS,
    corruptions: Sequence[str] = CORRUPTIONS,
) -> dict[str, float]:
    """ImageNet corruption error per corruption, normalised by AlexNet.

    ``CE_c = sum_s E_{s,c} / sum_s E^AlexNet_{s,c}``, in percent. The AlexNet constants are
    already averaged over severities, so this is ``mean_s E_{s,c} / E^AlexNet_c``.

    Args:
        errors: ``{corruption: [E_1, ..., E_5]}`` in percent.
        alexnet: ``{corruption: AlexNet error}`` as a fraction (default :data:`ALEXNET_ERRORS`).
        corruptions: which corruptions (default :data:`CORRUPTIONS`).

    Returns:
        ``{corruption: CE_c}`` in percent (AlexNet = 100).
    """
    mean = error_table(errors, corruptions).mean(axis=1)  # (C,) percent
    reference = 100.0 * np.asarray([alexnet[c] for c in corruptions])  # (C,) percent
    return dict(zip(corruptions, (100.0 * mean / reference).tolist(), strict=True))


def imagenet_mce(
    errors: Mapping[str, Sequence[float]],
    alexnet: Mapping[str, float] = ALEXNET_ERRORS,
    corruptions: Sequence[str] = CORRUPTIONS,
) -> float:
    """ImageNet mCE: ``1/15 sum_c (sum_s E_{s,c} / sum_s E^AlexNet_{s,c})``, in percent.

    Args:
        errors: ``{corruption: [E_1, ..., E_5]}`` in percent.
        alexnet: AlexNet errors as fractions (default :data:`ALEXNET_ERRORS`).
        corruptions: which corruptions (default the 15 of :data:`CORRUPTIONS`).

    Returns:
        The mCE in percent.

    Reference:
        The paper, Sec. 4 "Metric"; ``compute_mce`` in AugMix's ``imagenet.py``.
    """
    return float(np.mean(list(imagenet_ce(errors, alexnet, corruptions).values())))


def relative_ce(
    errors: Mapping[str, Sequence[float]],
    clean_error: float,
    alexnet: Mapping[str, float] = ALEXNET_ERRORS,
    alexnet_clean_error: float = ALEXNET_CLEAN_ERROR,
    corruptions: Sequence[str] = CORRUPTIONS,
) -> dict[str, float]:
    """Relative corruption error per corruption, normalised by AlexNet.

    ``rCE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^AlexNet_{s,c} - E^AlexNet_clean)``: the
    degradation from clean data, relative to AlexNet's.

    Args:
        errors: ``{corruption: [E_1, ..., E_5]}`` in percent.
        clean_error: the model's clean error in percent.
        alexnet: AlexNet corruption errors as fractions (default :data:`ALEXNET_ERRORS`).
        alexnet_clean_error: AlexNet's clean error as a fraction
            (default :data:`ALEXNET_CLEAN_ERROR`).
        corruptions: which corruptions (default :data:`CORRUPTIONS`).

    Returns:
        ``{corruption: rCE_c}`` in percent (AlexNet = 100).

    Reference:
        Hendrycks & Dietterich (2019), Sec. 3 "Relative mCE".
    """
    mean = error_table(errors, corruptions).mean(axis=1)  # (C,) percent
    reference = 100.0 * np.asarray([alexnet[c] for c in corruptions])  # (C,) percent
    gap = 100.0 * (mean - clean_error) / (reference - 100.0 * alexnet_clean_error)
    return dict(zip(corruptions, gap.tolist(), strict=True))


def relative_mce(
    errors: Mapping[str, Sequence[float]],
    clean_error: float,
    alexnet: Mapping[str, float] = ALEXNET_ERRORS,
    alexnet_clean_error: float = ALEXNET_CLEAN_ERROR,
    corruptions: Sequence[str] = CORRUPTIONS,
) -> float:
    """Relative mCE: the mean of :func:`relative_ce` over corruptions, in percent.

    Args:
        errors: ``{corruption: [E_1, ..., E_5]}`` in percent.
        clean_error: the model's clean error in percent.
        alexnet: AlexNet corruption errors as fractions.
        alexnet_clean_error: AlexNet's clean error as a fraction.
        corruptions: which corruptions (default the 15 of :data:`CORRUPTIONS`).

    Returns:
        The relative mCE in percent.

    Reference:
        Hendrycks & Dietterich (2019), Sec. 3 "Relative mCE".
    """
    rce = relative_ce(errors, clean_error, alexnet, alexnet_clean_error, corruptions)
    return float(np.mean(list(rce.values())))


def table_rows(
    errors: Mapping[str, Sequence[float]],
    *,
    clean_error: float | None = None,
    alexnet: Mapping[str, float] | None = None,
    alexnet_clean_error: float = ALEXNET_CLEAN_ERROR,
    corruptions: Sequence[str] = CORRUPTIONS,
) -> list[dict[str, str | float]]:
    """One row per corruption plus a final ``"mean"`` row, ready for a table writer.

    Each row has ``corruption``, ``s1`` ... ``s5`` (errors in percent) and ``mean`` (the
    unnormalised CE); with ``alexnet`` also ``ce`` (:func:`imagenet_ce`), and with ``alexnet``
    and ``clean_error`` also ``rel_ce`` (:func:`relative_ce`). The last row averages every
    column over corruptions, so its ``mean`` is the CIFAR mCE and its ``ce`` the ImageNet mCE.

    Args:
        errors: ``{corruption: [E_1, ..., E_5]}`` in percent.
        clean_error: the model's clean error in percent (for ``rel_ce``).
        alexnet: AlexNet errors as fractions, e.g. :data:`ALEXNET_ERRORS` (for ``ce``).
        alexnet_clean_error: AlexNet's clean error as a fraction (for ``rel_ce``).
        corruptions: which rows, in which order (default :data:`CORRUPTIONS`).

    Returns:
        ``len(corruptions) + 1`` dicts with the same keys.
    """
    table = error_table(errors, corruptions)  # (C, 5)
    columns: dict[str, np.ndarray] = {f"s{s + 1}": table[:, s] for s in range(NUM_SEVERITIES)}
    columns["mean"] = table.mean(axis=1)
    if alexnet is not None:
        columns["ce"] = np.asarray(list(imagenet_ce(errors, alexnet, corruptions).values()))
        if clean_error is not None:
            rce = relative_ce(errors, clean_error, alexnet, alexnet_clean_error, corruptions)
            columns["rel_ce"] = np.asarray(list(rce.values()))
    rows: list[dict[str, str | float]] = [
        {"corruption": c, **{k: float(v[i]) for k, v in columns.items()}}
        for i, c in enumerate(corruptions)
    ]
    rows.append({"corruption": "mean", **{k: float(v.mean()) for k, v in columns.items()}})
    return rows


# ----------------------------------------------------------------------------------------------
# Segmentation: mIoU over a whole dataset


#: How a class absent from both targets and predictions enters the mean IoU: ``"zero"`` (its IoU
#: is 0 and the mean runs over all K classes: the released evaluation) or ``"skip"`` (left out of
#: the mean).
ABSENT = ("zero", "skip")


def _check_absent(absent: str) -> None:
    if absent not in ABSENT:
        raise ValueError(f"absent must be one of {ABSENT}, got {absent!r}.")


def iou_from_confusion(confusion: np.ndarray | Tensor, absent: str = "zero") -> np.ndarray:
    """Per-class IoU from a confusion matrix.

    ``IoU_k = C_kk / (sum_j C_kj + sum_i C_ik - C_kk)`` (rows: target, columns: prediction).
    A class absent from both targets and predictions has union 0: its IoU is 0 with
    ``absent="zero"`` and NaN with ``absent="skip"``.

    Args:
        confusion: ``(K, K)`` counts, ``confusion[target, prediction]``.
        absent: ``"zero"`` or ``"skip"`` (:data:`ABSENT`).

    Returns:
        float64 ``(K,)`` in percent.

    Reference:
        ``intersectionAndUnion`` in ``segmentation/util/util.py`` and ``validate`` in
        ``segmentation/tool/train_cnsn.py`` of the released code (``intersection / (union +
        1e-10)``, which is 0 for an absent class).
    """
    _check_absent(absent)
    c = torch.as_tensor(confusion).double().cpu().numpy()
    intersection = np.diag(c)  # (K,)
    union = c.sum(axis=1) + c.sum(axis=0) - intersection  # (K,)
    fill = 0.0 if absent == "zero" else np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, 100.0 * intersection / union, fill)


def miou_from_confusion(confusion: np.ndarray | Tensor, absent: str = "zero") -> float:
    """Mean IoU in percent.

    ``absent="zero"``: the mean over all K classes, a class absent from both targets and
    predictions counting 0 (so an empty matrix gives 0). ``absent="skip"``: the mean over the
    classes present in targets or predictions (NaN for an empty matrix).

    Args:
        confusion: ``(K, K)`` counts, ``confusion[target, prediction]``.
        absent: ``"zero"`` or ``"skip"`` (:data:`ABSENT`).

    Returns:
        The mIoU in percent.

    Reference:
        ``mIoU = np.mean(iou_class)`` in ``validate``, ``segmentation/tool/train_cnsn.py`` of
        the released code (the ``"zero"`` definition).
    """
    iou = iou_from_confusion(confusion, absent)
    if absent == "zero":
        return float(iou.mean())
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


class ConfusionMatrix:
    """Accumulates a ``(K, K)`` confusion matrix over a dataset, for mIoU.

    Pixels whose target is ``ignore_index`` are skipped. The IoU of a class is the dataset's
    summed intersection over its summed union (not a mean of per-image IoUs), as in the released
    evaluation; :meth:`iou` and :meth:`miou` take ``absent`` (:data:`ABSENT`).

    Args:
        num_classes: K.
        ignore_index: target label to skip (Cityscapes/GTAV: 255).
        device: where the counts live (that of the batches, to avoid transfers).
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu"
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, predictions: Tensor, targets: Tensor) -> None:
        """Add a batch of label maps.

        Args:
            predictions: predicted labels, any shape, e.g. ``logits.argmax(1)`` ``(N, H, W)``.
            targets: labels of the same shape; ``ignore_index`` marks unlabelled pixels.

        Raises:
            ValueError: shapes differ, or a non-ignored label is outside ``[0, K)``.
        """
        if predictions.shape != targets.shape:
            raise ValueError(f"predictions {tuple(predictions.shape)} vs {tuple(targets.shape)}")
        k = self.num_classes
        keep = targets != self.ignore_index
        t = targets[keep].long().to(self.matrix.device)  # (M,)
        p = predictions[keep].long().to(self.matrix.device)  # (M,)
        if t.numel() and (t.min() < 0 or t.max() >= k or p.min() < 0 or p.max() >= k):
            raise ValueError(f"labels outside [0, {k}) besides ignore_index {self.ignore_index}")
        self.matrix += torch.bincount(t * k + p, minlength=k * k).view(k, k)

    def iou(self, absent: str = "zero") -> np.ndarray:
        """Per-class IoU in percent (:func:`iou_from_confusion`): a class absent from targets
        and predictions gets 0 (``absent="zero"``) or NaN (``"skip"``)."""
        return iou_from_confusion(self.matrix, absent)

    def miou(self, absent: str = "zero") -> float:
        """Mean IoU in percent (:func:`miou_from_confusion`): over all classes, absent ones
        counting 0 (``absent="zero"``), or over the classes present (``"skip"``)."""
        return miou_from_confusion(self.matrix, absent)
