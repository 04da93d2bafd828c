"""Semi-supervised CIFAR: labelled subsets per class, FixMatch's weak and strong augmentation.

What :class:`sncn.train.fixmatch.FixMatchTrainer` is fed. Augmentation follows the PyTorch
FixMatch implementation the paper used (kekmodel/FixMatch-pytorch):

* weak: random horizontal flip and a random 32x32 crop of the image padded by 4 pixels with
  reflected borders (:func:`weak_augment`, batched on the device);
* strong: weak, then RandAugment with 2 operations drawn with replacement from FixMatch's pool of
  14, each applied with probability 0.5 at a random magnitude ``v`` in ``1..m-1`` (m = 10), then
  a 16x16 Cutout filled with grey (:func:`rand_augment`, torchvision's functional ops per image).

Images stay uint8 until :func:`sncn.data.vision.normalize` (the project's normalisation, also the
one CIFAR-10-C is evaluated with).

Reference:
    Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
    Confidence", NeurIPS 2020; Cubuk et al., "RandAugment", 2020; DeVries & Taylor, "Cutout",
    2017; the paper's §4.1 "Semi-supervised training on CIFAR".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from sncn.data.vision import normalize, random_crop_flip

__all__ = [
    "RAND_AUGMENT_OPS",
    "SemiSupervisedBatches",
    "rand_augment",
    "sample_labelled",
    "split_labelled",
    "strong_augment",
    "weak_augment",
]

GREY = 128  # fill of the geometric operations
CUTOUT_FILL = 127  # FixMatch's Cutout colour


def sample_labelled(labels: np.ndarray, num_labelled: int, seed: int) -> np.ndarray:
    """Indices of ``num_labelled`` items, the same number from every class, drawn with ``seed``.

    Args:
        labels: integer ``(N,)`` class labels of the training set.
        num_labelled: total labelled items; must be a multiple of the number of classes.
        seed: seed of the draw (the paper: 1); the same seed gives the same subset.

    Returns:
        Sorted int64 indices into ``labels``.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if num_labelled < len(classes) or num_labelled % len(classes):
        raise ValueError(
            f"num_labelled must be a positive multiple of the {len(classes)} classes (labels are "
            f"drawn per class), got {num_labelled}."
        )
    per_class = num_labelled // len(classes)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(
                f"class {c} has {len(members)} items, fewer than the {per_class} per class asked."
            )
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def split_labelled(
    labels: np.ndarray, num_labelled: int, seed: int, unlabelled: str = "all"
) -> tuple[np.ndarray, np.ndarray]:
    """The labelled indices (:func:`sample_labelled`) and the unlabelled ones.

    Args:
        labels: integer ``(N,)`` class labels.
        num_labelled: labelled items, a multiple of the number of classes.
        seed: seed of the draw.
        unlabelled: ``"all"`` (every training image is also unlabelled data: FixMatch and the
            implementation the paper used) or ``"rest"`` (only the images not labelled, as the
            paper's text words it).

    Returns:
        ``(labelled, unlabelled)`` sorted int64 indices.
    """
    if unlabelled not in ("all", "rest"):
        raise ValueError(f"unlabelled must be 'all' or 'rest', got {unlabelled!r}.")
    labelled = sample_labelled(labels, num_labelled, seed)
    everything = np.arange(len(labels), dtype=np.int64)
    if unlabelled == "all":
        return labelled, everything
    return labelled, np.setdiff1d(everything, labelled)


def weak_augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """FixMatch's weak augmentation: flip, then a crop of the reflect-padded (4 px) image.

    Args:
        images: uint8 (or float) ``(N, 3, H, W)``.
        generator: source of the randomness.

    Returns:
        Same shape, dtype and device.
    """
    return random_crop_flip(images, generator, padding=4, padding_mode="reflect")


def _level(v: int, max_v: float, bias: float = 0.0) -> float:
    return v * max_v / 10 + bias  # FixMatch's _float_parameter(v, max_v) + bias


def _signed(level: float, generator: torch.Generator) -> float:
    return -level if float(torch.rand((), generator=generator)) < 0.5 else level


def _affine(img: Tensor, **kwargs) -> Tensor:
    params = {"angle": 0.0, "translate": [0, 0], "scale": 1.0, "shear": [0.0, 0.0], **kwargs}
    return TF.affine(img, **params, fill=GREY)


def _shear(level: float) -> float:
    return math.degrees(math.atan(level))  # PIL's shear factor as torchvision's angle


#: FixMatch's RandAugment pool: name -> op(image uint8 (3, H, W), v in 1..m-1, generator).
RAND_AUGMENT_OPS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "AutoContrast": lambda img, v, g: TF.autocontrast(img),
    "Brightness": lambda img, v, g: TF.adjust_brightness(img, _level(v, 0.9, 0.05)),
    "Color": lambda img, v, g: TF.adjust_saturation(img, _level(v, 0.9, 0.05)),
    "Contrast": lambda img, v, g: TF.adjust_contrast(img, _level(v, 0.9, 0.05)),
    "Equalize": lambda img, v, g: TF.equalize(img),
    "Identity": lambda img, v, g: img,
    "Posterize": lambda img, v, g: TF.posterize(img, int(_level(v, 4)) + 4),
    "Rotate": lambda img, v, g: _affine(img, angle=_signed(_level(v, 30), g)),
    "Sharpness": lambda img, v, g: TF.adjust_sharpness(img, _level(v, 0.9, 0.05)),
    "ShearX": lambda img, v, g: _affine(img, shear=[_shear(_signed(_level(v, 0.3), g)), 0.0]),
    "ShearY": lambda img, v, g: _affine(img, shear=[0.0, _shear(_signed(_level(v, 0.3), g))]),
    "Solarize": lambda img, v, g: TF.solarize(img, 256 - int(_level(v, 256))),
    "TranslateX": lambda img, v, g: _affine(
        img, translate=[round(_signed(_level(v, 0.3), g) * img.shape[-1]), 0]
    ),
    "TranslateY": lambda img, v, g: _affine(
        img, translate=[0, round(_signed(_level(v, 0.3), g) * img.shape[-2])]
    ),
}


def _cutout(img: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Grey ``size x size`` square (clipped at the border) centred at a uniform position."""
    h, w = img.shape[-2:]
    cy = int(torch.randint(0, h, (), generator=generator))
    cx = int(torch.randint(0, w, (), generator=generator))
    y0, x0 = max(0, cy - size // 2), max(0, cx - size // 2)
    img = img.clone()
    img[:, y0 : min(h, y0 + size), x0 : min(w, x0 + size)] = CUTOUT_FILL
    return img


def rand_augment(
    images: Tensor,
    generator: torch.Generator,
    num_ops: int = 2,
    magnitude: int = 10,
    cutout: int = 16,
) -> Tensor:
    """FixMatch's RandAugment (``RandAugmentMC``) and Cutout, image by image.

    Per image: ``num_ops`` operations drawn with replacement from :data:`RAND_AUGMENT_OPS`, each
    applied with probability 0.5 at a magnitude drawn from ``1..magnitude-1``; then Cutout.

    Args:
        images: uint8 ``(N, 3, H, W)``.
        generator: CPU torch generator, the source of every draw.
        num_ops: operations per image (n = 2).
        magnitude: m (10).
        cutout: side of the Cutout square in pixels (16: half of 32); 0 disables it.

    Returns:
        uint8 ``(N, 3, H, W)`` on ``images``' device.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"rand_augment expects uint8 (N, 3, H, W) images, got {images.dtype} "
            f"{tuple(images.shape)}; augment before normalize()."
        )
    if magnitude < 2:
        raise ValueError(f"magnitude must be >= 2 (levels 1..magnitude-1), got {magnitude}.")
    names = list(RAND_AUGMENT_OPS)
    out = []
    for img in images.cpu():
        for i in torch.randint(0, len(names), (num_ops,), generator=generator).tolist():
            v = int(torch.randint(1, magnitude, (), generator=generator))
            if float(torch.rand((), generator=generator)) < 0.5:
                img = RAND_AUGMENT_OPS[names[i]](img, v, generator)
        out.append(_cutout(img, cutout, generator) if cutout > 0 else img)
    return torch.stack(out).to(images.device)


def strong_augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """FixMatch's strong augmentation: :func:`weak_augment`, then :func:`rand_augment`."""
    return rand_augment(weak_augment(images, generator), generator)


class SemiSupervisedBatches:
    """One epoch of FixMatch batches: ``steps`` of (labelled, weak unlabelled, strong unlabelled).

    Each batch is ``(x, y, u_weak, u_strong, u_labels)``: ``batch_size`` weakly augmented
    labelled images and their labels, and ``mu * batch_size`` unlabelled images in two views
    (normalised float32, on ``device``), plus the unlabelled images' true labels, which a trainer
    may log (pseudo-label accuracy) but never trains on. Both sets are walked in random orders
    drawn from ``generator``, reshuffled whenever they run out (the labelled set is small).

    Args:
        labelled: ``(images uint8 (N, H, W, 3), labels (N,))``.
        unlabelled: ``(images, labels)`` likewise.
        batch_size: labelled images per step (B = 64).
        mu: unlabelled images per labelled one (7).
        steps: batches in the epoch (FixMatch's ``eval_step``, 1,024).
        generator: CPU generator for order and augmentation.
        strong: ``"ra"`` (RandAugment + Cutout) or ``"wa"`` (a second, independent weak view:
            FixMatch with weak augmentation only).
        device: where batches go.
    """

    def __init__(
        self,
        labelled: tuple[np.ndarray, np.ndarray],
        unlabelled: tuple[np.ndarray, np.ndarray],
        batch_size: int,
        mu: int,
        steps: int,
        generator: torch.Generator,
        strong: str = "ra",
        device: str | torch.device = "cpu",
    ) -> None:
        if strong not in ("ra", "wa"):
            raise ValueError(
                f"strong must be 'ra' (RandAugment) or 'wa' (weak only), got {strong!r}."
            )
        if batch_size < 1 or mu < 1 or steps < 1:
            raise ValueError(
                f"batch_size, mu and steps must be >= 1, got {batch_size}, {mu}, {steps}."
            )
        self.sets = [self._tensors(*labelled), self._tensors(*unlabelled)]
        self.sizes = (batch_size, mu * batch_size)
        self.steps = steps
        self.generator = generator
        self.strong = strong
        self.device = torch.device(device)

    @staticmethod
    def _tensors(images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                f"expected uint8 (N, H, W, 3) images and (N,) labels, got {images.dtype} "
                f"{images.shape} and {np.shape(labels)}."
            )
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        return x, torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def _order(self, n: int, total: int) -> Tensor:
        """``total`` indices: random permutations of ``range(n)`` one after the other."""
        rounds = -(-total // n)
        return torch.cat([torch.randperm(n, generator=self.generator) for _ in range(rounds)])

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        (lx, ly), (ux, uy) = self.sets
        b, ub = self.sizes
        l_order = self._order(len(ly), self.steps * b)
        u_order = self._order(len(uy), self.steps * ub)
        g = self.generator
        for step in range(self.steps):
            li = l_order[step * b : (step + 1) * b]
            ui = u_order[step * ub : (step + 1) * ub]
            x = normalize(weak_augment(lx[li], g))
            u = ux[ui]
            u_weak = normalize(weak_augment(u, g))
            u_strong = normalize(
                strong_augment(u, g) if self.strong == "ra" else weak_augment(u, g)
            )
            yield tuple(t.to(self.device) for t in (x, ly[li], u_weak, u_strong, uy[ui]))
