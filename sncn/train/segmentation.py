"""Semantic segmentation training: pixel cross-entropy with an auxiliary head, poly schedule.

The settings of the paper's released code (``segmentation/config/gtav/*.yaml`` and
``tool/train_cnsn.py`` in amazon-science/crossnorm-selfnorm): SGD with momentum 0.9 and weight
decay 1e-4, base lr 0.01 for the backbone and 10x for the heads, lr ``base * (1 - step /
total) ** 0.9`` per iteration, ``main + 0.4 * aux`` cross-entropy ignoring label 255, CrossNorm
switched on (one unit) in half of the steps.

Evaluation (:func:`evaluate_miou`) accumulates one confusion matrix over the whole set (mIoU as
in :class:`sncn.metrics.ConfusionMatrix`; by default the released definition, the mean over all
19 classes with a class absent from labels and predictions counting 0), either on whole images
or, for frames larger than the training crop, with a sliding window (crop-sized windows at
stride 2/3 of the crop, logits of overlapping windows averaged: the semseg test protocol the
paper's code comes from).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sncn.data.segmentation import Frames, normalize_images
from sncn.metrics import ABSENT, ConfusionMatrix
from sncn.train.base import Logs, Trainer

__all__ = [
    "SegmentationTrainer",
    "evaluate_miou",
    "poly_schedule",
    "segmentation_sgd",
    "sliding_window_logits",
]


def segmentation_sgd(
    model: nn.Module,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    head_lr_mult: float = 10.0,
) -> torch.optim.SGD:
    """SGD with the backbone (and style units) at ``lr`` and the heads at ``head_lr_mult * lr``.

    Heads are the parameters whose names contain ``classifier`` (torchvision's FCN heads).
    """
    heads = [p for n, p in model.named_parameters() if "classifier" in n]
    rest = [p for n, p in model.named_parameters() if "classifier" not in n]
    groups = [{"params": rest, "lr": lr}, {"params": heads, "lr": lr * head_lr_mult}]
    return torch.optim.SGD(
        [g for g in groups if g["params"]], lr, momentum=momentum, weight_decay=weight_decay
    )


def poly_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9
) -> torch.optim.lr_scheduler.PolynomialLR:
    """The poly learning rate, ``lr * (1 - step / total_steps) ** power``, stepped per update
    (0 from ``total_steps`` on): torch's ``PolynomialLR``, the released ``poly_learning_rate``."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total_steps, power=power)


class SegmentationTrainer(Trainer):
    """Pixel-wise cross-entropy (``ignore_index``) on ``"out"`` plus ``aux_weight`` times that on
    ``"aux"``, for models returning torchvision's ``{"out", "aux"}`` dict.

    Args:
        aux_weight: weight of the auxiliary head's loss (paper's code: 0.4).
        ignore_index: label of unlabelled pixels (255).
        Others: see :class:`sncn.train.Trainer`.
    """

    def __init__(self, *args, aux_weight: float = 0.4, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index

    def loss(self, batch: Sequence[Tensor]) -> tuple[Tensor, Logs]:
        """Main plus weighted auxiliary cross-entropy of one ``(images, labels)`` batch."""
        x, y = (self._to_device(t) for t in batch)
        on = self._cn_on()
        out = self.forward_cn(x, on)
        main = F.cross_entropy(out["out"].float(), y, ignore_index=self.ignore_index)
        logs = {"main_loss": main.detach(), "cn_on": float(on)}
        if "aux" in out and out["aux"] is not None and self.aux_weight:
            aux = F.cross_entropy(out["aux"].float(), y, ignore_index=self.ignore_index)
            logs["aux_loss"] = aux.detach()
            return main + self.aux_weight * aux, logs
        return main, logs

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Main-head logits ``(N, K, H, W)`` (float32) in eval mode."""
        self.model.eval()
        with self._autocast():
            out = self.model(self._to_device(x))
        return (out["out"] if isinstance(out, dict) else out).float()


def sliding_window_logits(predict, x: Tensor, window: int, num_classes: int) -> Tensor:
    """Logits of ``x`` ``(N, 3, H, W)`` from ``window``-sized crops at stride ``ceil(2/3 window)``.

    Frames smaller than the window are zero-padded (the normalised mean) and the padding cut off;
    overlapping windows' logits are averaged.
    """
    n, _, h, w = x.shape
    ph, pw = max(window - h, 0), max(window - w, 0)
    xp = F.pad(x, (0, pw, 0, ph))
    hh, ww = xp.shape[2:]
    stride = math.ceil(window * 2 / 3)
    logits = torch.zeros(n, num_classes, hh, ww)
    counts = torch.zeros(1, 1, hh, ww)
    rows = range(max(math.ceil((hh - window) / stride), 0) + 1)
    cols = range(max(math.ceil((ww - window) / stride), 0) + 1)
    for i in rows:
        for j in cols:
            y0, x0 = min(i * stride, hh - window), min(j * stride, ww - window)
            crop = xp[:, :, y0 : y0 + window, x0 : x0 + window]
            logits[:, :, y0 : y0 + window, x0 : x0 + window] += predict(crop).cpu()
            counts[:, :, y0 : y0 + window, x0 : x0 + window] += 1
    return (logits / counts)[:, :, :h, :w]


@torch.no_grad()
def evaluate_miou(
    trainer: Trainer,
    images: Tensor | Frames,
    labels: Tensor | None,
    num_classes: int = 19,
    batch_size: int = 16,
    window: int = 0,
    ignore_index: int = 255,
    absent: str = "zero",
) -> dict[str, object]:
    """mIoU (%) of ``trainer.predict`` on normalised ``images`` ``(N, 3, H, W)`` and ``labels``,
    or on a :class:`~sncn.data.segmentation.Frames` (``labels`` None; decoded and normalised
    per batch).

    Args:
        window: 0 for whole-image evaluation, else the sliding window's size
            (:func:`sliding_window_logits`).
        absent: how a class absent from labels and predictions enters ``"miou"``: ``"zero"``
            (counts 0 in a mean over all ``num_classes``: the released evaluation) or
            ``"skip"`` (mean over the classes present); see
            :func:`sncn.metrics.miou_from_confusion`.

    Returns:
        ``{"miou": float, "iou": [per-class IoU, None for an absent class], "pixel_acc":
        float}``.
    """
    if absent not in ABSENT:
        raise ValueError(f"absent must be one of {ABSENT}, got {absent!r}.")
    confusion = ConfusionMatrix(num_classes, ignore_index)
    for i in range(0, len(images), batch_size):
        if isinstance(images, Frames):
            x, y = images.take(range(i, min(i + batch_size, len(images))))
            x = normalize_images(x)
        else:
            x, y = images[i : i + batch_size], labels[i : i + batch_size]
        logits = (
            sliding_window_logits(trainer.predict, x, window, num_classes)
            if window
            else trainer.predict(x).cpu()
        )
        confusion.update(logits.argmax(1), y)
    matrix = confusion.matrix
    total = int(matrix.sum())
    iou = confusion.iou(absent="skip")  # NaN marks the absent classes
    return {
        "miou": confusion.miou(absent),
        "iou": [None if math.isnan(v) else float(v) for v in iou],
        "pixel_acc": 100.0 * float(matrix.diag().sum()) / total if total else float("nan"),
    }
