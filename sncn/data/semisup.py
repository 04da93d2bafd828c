"""Semi-supervised CIFAR: labelled subsets per class, FixMatch's weak and strong augmentation.

What :class:`sncn.train.fixmatch.FixMatchTrainer` is fed. Augmentation and normalisation follow
the PyTorch FixMatch implementation the paper used (kekmodel/FixMatch-pytorch,
``dataset/cifar.py`` and ``dataset/randaugment.py``):

* weak: random horizontal flip and a random 32x32 crop of the image padded by 4 pixels with
  reflected borders (:func:`weak_augment`, batched on the device);
* strong: weak, then RandAugment with 2 operations drawn with replacement from FixMatch's pool of
  14, each applied with probability 0.5 at a random magnitude ``v`` in ``1..m-1`` (m = 10), then
  Cutout (:func:`rand_augment`). The operations are PIL's, image by image on the CPU: geometric
  ones sample with nearest neighbour, fill with black, shear about the top-left corner and
  translate by a whole number of pixels (truncated towards 0); Cutout paints a grey (127) square
  of ``16 + 1`` pixels a side, clipped at the border (:func:`cutout`).

Images stay uint8 until :func:`sncn.data.vision.normalize`, here with FixMatch-pytorch's CIFAR-10
mean and std (:class:`SemiSupervisedBatches`).

Reference:
    Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
    Confidence", NeurIPS 2020; Cubuk et al., "RandAugment", 2020; DeVries & Taylor, "Cutout",
    2017; the paper's §4.1 "Semi-supervised training on CIFAR".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torch import Tensor

from sncn.data.vision import normalize, random_crop_flip
from sncn.hparams import FIXMATCH

__all__ = [
    "RAND_AUGMENT_OPS",
    "SemiSupervisedBatches",
    "cutout",
    "rand_augment",
    "sample_labelled",
    "split_labelled",
    "strong_augment",
    "weak_augment",
]

GEOMETRY_FILL = (0, 0, 0)  # where rotations, shears and translations leave the image: black
CUTOUT_FILL = (127, 127, 127)  # FixMatch's Cutout colour


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


def _float_level(v: int, max_v: float, bias: float = 0.0) -> float:
    """``v * max_v / 10 + bias``: magnitude ``v`` of 10 scaled to the op's range, as a float."""
    return v * max_v / 10 + bias


def _int_level(v: int, max_v: int, bias: int = 0) -> int:
    """``int(v * max_v / 10) + bias``: the same, truncated to an integer."""
    return int(v * max_v / 10) + bias


def _signed(level: float, generator: torch.Generator) -> float:
    """``-level`` with probability 0.5, else ``level``."""
    return -level if float(torch.rand((), generator=generator)) < 0.5 else level


def _affine(img: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    """PIL affine map: output pixel ``(x, y)`` samples the input at ``(a x + b y + c, d x + e y +
    f)`` for ``coeffs = (a, b, c, d, e, f)`` (origin: the top-left corner), nearest neighbour."""
    return img.transform(
        img.size, Image.Transform.AFFINE, coeffs, Image.Resampling.NEAREST, fillcolor=GEOMETRY_FILL
    )


def _shear_x(img: Image.Image, v: int, g: torch.Generator) -> Image.Image:
    return _affine(img, (1, _signed(_float_level(v, 0.3), g), 0, 0, 1, 0))


def _shear_y(img: Image.Image, v: int, g: torch.Generator) -> Image.Image:
    return _affine(img, (1, 0, 0, _signed(_float_level(v, 0.3), g), 1, 0))


def _translate_x(img: Image.Image, v: int, g: torch.Generator) -> Image.Image:
    shift = int(_signed(_float_level(v, 0.3), g) * img.width)  # pixels, truncated towards 0
    return _affine(img, (1, 0, shift, 0, 1, 0))


def _translate_y(img: Image.Image, v: int, g: torch.Generator) -> Image.Image:
    shift = int(_signed(_float_level(v, 0.3), g) * img.height)
    return _affine(img, (1, 0, 0, 0, 1, shift))


def _rotate(img: Image.Image, v: int, g: torch.Generator) -> Image.Image:
    angle = _signed(_int_level(v, 30), g)  # whole degrees, counter-clockwise about the centre
    return img.rotate(angle, Image.Resampling.NEAREST, fillcolor=GEOMETRY_FILL)


def _enhance(enhancer: type) -> Callable[[Image.Image, int, torch.Generator], Image.Image]:
    """An ``ImageEnhance`` op with factor ``0.05 + 0.9 v / 10`` (1: the image unchanged)."""
    return lambda img, v, g: enhancer(img).enhance(_float_level(v, 0.9, 0.05))


#: FixMatch's RandAugment pool: name -> op(PIL RGB image, v in 1..m-1, generator) -> PIL image.
#: Ops with a direction draw its sign from the generator.
RAND_AUGMENT_OPS: dict[str, Callable[[Image.Image, int, torch.Generator], Image.Image]] = {
    "AutoContrast": lambda img, v, g: ImageOps.autocontrast(img),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Equalize": lambda img, v, g: ImageOps.equalize(img),
    "Identity": lambda img, v, g: img,
    "Posterize": lambda img, v, g: ImageOps.posterize(img, _int_level(v, 4, 4)),  # 4..7 bits
    "Rotate": _rotate,
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "Solarize": lambda img, v, g: ImageOps.solarize(img, 256 - _int_level(v, 256)),
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
}


def cutout(img: Image.Image, size: int, generator: torch.Generator) -> Image.Image:
    """FixMatch's Cutout (``CutoutAbs``): a grey square around a uniformly drawn point.

    The point ``(x, y)`` is uniform over the image (continuous); the square's top-left corner is
    ``(int(max(0, x - size / 2)), int(max(0, y - size / 2)))`` and its bottom-right corner that
    plus ``size``, clipped to the image side, both corners included: ``size + 1`` pixels a side
    unless it meets the right or bottom border.

    Args:
        img: PIL RGB image (not modified).
        size: the ``v`` of ``CutoutAbs`` (FixMatch: 16).
        generator: source of the point.

    Returns:
        A new PIL image.
    """
    w, h = img.size
    x = float(torch.rand((), generator=generator)) * w
    y = float(torch.rand((), generator=generator)) * h
    x0, y0 = int(max(0.0, x - size / 2)), int(max(0.0, y - size / 2))
    x1, y1 = int(min(w, x0 + size)), int(min(h, y0 + size))
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), fill=CUTOUT_FILL)
    return img


def rand_augment(
    images: Tensor,
    generator: torch.Generator,
    num_ops: int = 2,
    magnitude: int = 10,
    cutout_size: int = 16,
) -> Tensor:
    """FixMatch's RandAugment (``RandAugmentMC``) and Cutout, image by image with PIL.

    Per image: ``num_ops`` operations drawn with replacement from :data:`RAND_AUGMENT_OPS`; for
    each in turn a magnitude from ``1..magnitude-1``, then a coin: with probability 0.5 the op
    is applied. Then :func:`cutout`.

    Args:
        images: uint8 ``(N, 3, H, W)``.
        generator: CPU torch generator, the source of every draw.
        num_ops: operations per image (n = 2).
        magnitude: m (10).
        cutout_size: the Cutout's ``size`` (16, FixMatch's ``int(32 * 0.5)``); 0 disables it.

    Returns:
        uint8 ``(N, 3, H, W)`` on ``images``' device.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"rand_augment expects uint8 (N, 3, H, W) images, got {images.dtype} "
            f"{tuple(images.shape)}; augment before normalize()."
        )
    if magnitude < 2:
        raise ValueError(f"magnitude must be >= 2 (levels 1..magnitude-1), got {magnitude}.")
    ops = list(RAND_AUGMENT_OPS.values())
    out = []
    for array in images.permute(0, 2, 3, 1).cpu().numpy():  # (N, H, W, 3)
        img = Image.fromarray(np.ascontiguousarray(array))
        for i in torch.randint(0, len(ops), (num_ops,), generator=generator).tolist():
            v = int(torch.randint(1, magnitude, (), generator=generator))
            if float(torch.rand((), generator=generator)) < 0.5:
                img = ops[i](img, v, generator)
        if cutout_size > 0:
            img = cutout(img, cutout_size, generator)
        out.append(torch.from_numpy(np.array(img)))
    return torch.stack(out).permute(0, 3, 1, 2).contiguous().to(images.device)


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
        mean, std: per-channel normalisation (default :data:`sncn.hparams.FIXMATCH`'s, the
            CIFAR-10 statistics of FixMatch-pytorch; the project's supervised models use 0.5).
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
        mean: Sequence[float] = FIXMATCH["mean"],
        std: Sequence[float] = FIXMATCH["std"],
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
        self.mean, self.std = tuple(mean), tuple(std)

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

    def _normalize(self, images: Tensor) -> Tensor:
        return normalize(images, self.mean, self.std)

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
            x = self._normalize(weak_augment(lx[li], g))
            u = ux[ui]
            u_weak = self._normalize(weak_augment(u, g))
            u_strong = self._normalize(
                strong_augment(u, g) if self.strong == "ra" else weak_augment(u, g)
            )
            yield tuple(t.to(self.device) for t in (x, ly[li], u_weak, u_strong, uy[ui]))
