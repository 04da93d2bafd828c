"""AugMix views for the JSD loss: ``((clean, augmix_1, augmix_2), label)`` per image.

Three implementations of AugMix (Hendrycks et al., ICLR 2020) make the augmented views:

* ``"reference"`` (default): the sampling and mixing of the AugMix code that the paper's released
  code uses (:func:`augmix`). Each view mixes ``mixture_width`` (3) chains of 1-3 operations drawn
  from nine (``autocontrast, equalize, posterize, rotate, solarize, shear_x, shear_y, translate_x,
  translate_y``; ``all_ops`` adds ``color, contrast, brightness, sharpness``). Every operation
  draws its own level ``U(0.1, severity)`` and turns it into a strength by
  :func:`op_strength` (up to ``severity / 10`` of the operation's maximum, e.g. 9 degrees of
  rotation at severity 3; integer strengths are truncated, so rotations are 0-8 whole degrees);
  rotations, shears and translations get a random sign. The chains are
  normalised by ``preprocess`` and mixed in float32: ``(1 - m) * preprocess(x) + m * sum_i w_i *
  preprocess(chain_i(x))`` with ``w ~ Dirichlet(alpha)`` and ``m ~ Beta(alpha, alpha)``. The
  operations are torchvision's functional ops (bilinear for the geometric ones); on PIL images,
  which both view datasets use, they are PIL's own.
* ``"torchvision"``: torchvision's ``transforms.AugMix`` on the uint8 image, then ``preprocess``.
  Its levels are a grid (at severity ``s``, ``k / 9`` of the maximum for ``k < s``) and it
  rounds the mixture back to uint8.
* ``"device"`` (CIFAR, opt-in): the reference's sampling and float mixing on whole uint8 batches
  on the training device (:func:`augmix_views_batch`), every draw from a passed generator; the
  operations are batched re-implementations of PIL's (:func:`apply_ops_batch`), equal to them
  pixel for pixel on the tests' images.

Settings: severity 3 on CIFAR (:class:`AugMixViews`), 1 on ImageNet (:class:`ImageAugMixViews`);
width 3, random depth 1-3, ``alpha = 1``, the nine operations.

Reference:
    Hendrycks et al., "AugMix: A Simple Data Processing Method to Improve Robustness and
    Uncertainty", ICLR 2020; google-research/augmix ``augmentations.py`` and ``cifar.py``
    (``aug``); the paper's released ``utils.py`` (``aug_func``, ``AugMixDataset``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms import functional as F
from torchvision.transforms.functional import InterpolationMode

from sncn.data.vision import CIFAR_MEAN, CIFAR_STD, ArrayDataset, normalize, random_crop_flip

#: The operations AugMix uses by default: none of them overlaps with the test corruptions.
OPERATIONS: tuple[str, ...] = (
    "autocontrast",
    "equalize",
    "posterize",
    "rotate",
    "solarize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
#: ``all_ops=True`` adds these four, which overlap with the corruptions of CIFAR-C / ImageNet-C.
ENHANCEMENTS: tuple[str, ...] = ("color", "contrast", "brightness", "sharpness")
#: Operations whose strength gets a random sign.
SIGNED: frozenset[str] = frozenset({"rotate", "shear_x", "shear_y", "translate_x", "translate_y"})
#: Levels are fractions of this: level 10 is an operation's maximum strength.
PARAMETER_MAX = 10
#: The AugMix implementations: ``"reference"`` and ``"torchvision"`` per image
#: (:class:`AugMixViews`, :class:`ImageAugMixViews`), ``"device"`` on whole batches on the
#: training device (:func:`augmix_views_batch`, :func:`augmix_batches`).
IMPLEMENTATIONS = ("reference", "torchvision", "device")
#: The implementations that work per image, in a Dataset.
PER_IMAGE_IMPLEMENTATIONS = ("reference", "torchvision")

Image_ = Image.Image | Tensor  # a PIL image or a uint8 (C, H, W) tensor
Step = tuple[str, float | int | None]  # (operation, signed strength); None: no strength


def sample_level(severity: float, generator: torch.Generator | None = None) -> float:
    """An operation's level, uniform in ``[0.1, severity)``.

    Args:
        severity: the upper end (AugMix: 3 on CIFAR, 1 on ImageNet).
        generator: torch generator (default torch's global one).

    Reference:
        google-research/augmix ``augmentations.py``: ``sample_level``.
    """
    u = float(torch.rand((), dtype=torch.float64, generator=generator))
    return 0.1 + (severity - 0.1) * u


def _int_parameter(level: float, maxval: float) -> int:
    return int(level * maxval / PARAMETER_MAX)  # truncated towards zero


def _float_parameter(level: float, maxval: float) -> float:
    return float(level) * maxval / PARAMETER_MAX


def op_strength(name: str, level: float, image_size: int = 32) -> float | int | None:
    """The strength of operation ``name`` at ``level`` (before the random sign).

    ======================== ====================================================
    operation                strength at level ``l`` (``int`` truncates)
    ======================== ====================================================
    autocontrast, equalize   None (no parameter)
    posterize                bits kept: ``4 - int(l * 4 / 10)``
    rotate                   degrees: ``int(l * 30 / 10)``
    solarize                 threshold: ``256 - int(l * 256 / 10)``
    shear_x, shear_y         shear coefficient: ``l * 0.3 / 10``
    translate_x, translate_y pixels: ``int(l * (image_size / 3) / 10)``
    color, contrast,         enhancement factor: ``l * 1.8 / 10 + 0.1``
    brightness, sharpness
    ======================== ====================================================

    Args:
        name: one of :data:`OPERATIONS` or :data:`ENHANCEMENTS`.
        level: in ``[0, 10]``; AugMix draws it with :func:`sample_level`.
        image_size: the image side the translation is measured on (width for ``translate_x``,
            height for ``translate_y``).

    Reference:
        google-research/augmix ``augmentations.py`` (``int_parameter``, ``float_parameter`` and
        the operations).
    """
    if name in ("autocontrast", "equalize"):
        return None
    if name == "posterize":
        return 4 - _int_parameter(level, 4)
    if name == "rotate":
        return _int_parameter(level, 30)
    if name == "solarize":
        return 256 - _int_parameter(level, 256)
    if name in ("shear_x", "shear_y"):
        return _float_parameter(level, 0.3)
    if name in ("translate_x", "translate_y"):
        return _int_parameter(level, image_size / 3)
    if name in ENHANCEMENTS:
        return _float_parameter(level, 1.8) + 0.1
    raise ValueError(f"unknown operation {name!r}; known: {OPERATIONS + ENHANCEMENTS}.")


def apply_op(image: Image_, name: str, strength: float | int | None) -> Image_:
    """Operation ``name`` with signed ``strength`` (:func:`op_strength`) on ``image``.

    The operations are torchvision's functional ops, on PIL images (where they call PIL) or on
    uint8 ``(C, H, W)`` tensors; geometric ones keep the image size, interpolate bilinearly and
    fill with black:

    * ``rotate``: counter-clockwise by ``strength`` degrees about the image centre.
    * ``shear_x`` / ``shear_y``: output pixel ``(x, y)`` (from the top-left corner) takes the input
      at ``(x + strength * y, y)`` / ``(x, y + strength * x)``.
    * ``translate_x`` / ``translate_y``: output pixel ``(x, y)`` takes the input at
      ``(x + strength, y)`` / ``(x, y + strength)``, i.e. the content moves by ``-strength`` px.
    * ``posterize`` keeps ``strength`` bits; ``solarize`` inverts values ``>= strength``;
      ``autocontrast``, ``equalize``; the enhancements scale saturation, contrast, brightness or
      sharpness by the factor ``strength``.

    On tensors, torchvision's rotations and shears resample slightly differently from PIL's
    (within 1 grey level inside the image, different on the border pixels), ``color`` and
    ``contrast`` round differently (within 1); the other operations give the same pixels.

    Reference:
        google-research/augmix ``augmentations.py``: the same PIL operations and parameters.
    """
    bilinear = InterpolationMode.BILINEAR
    if name == "autocontrast":
        return F.autocontrast(image)
    if name == "equalize":
        return F.equalize(image)
    if name == "posterize":
        return F.posterize(image, int(strength))
    if name == "solarize":
        return F.solarize(image, strength)
    if name == "rotate":
        return F.rotate(image, float(strength), interpolation=bilinear)
    if name in ("shear_x", "shear_y"):
        degrees = math.degrees(math.atan(strength))
        shear = [degrees, 0.0] if name == "shear_x" else [0.0, degrees]
        return F.affine(image, 0.0, [0, 0], 1.0, shear, interpolation=bilinear, center=[0, 0])
    if name in ("translate_x", "translate_y"):
        shift = [-strength, 0] if name == "translate_x" else [0, -strength]
        return F.affine(image, 0.0, shift, 1.0, [0.0, 0.0], interpolation=bilinear)
    enhance = {
        "color": F.adjust_saturation,
        "contrast": F.adjust_contrast,
        "brightness": F.adjust_brightness,
        "sharpness": F.adjust_sharpness,
    }
    if name in enhance:
        return enhance[name](image, strength)
    raise ValueError(f"unknown operation {name!r}; known: {OPERATIONS + ENHANCEMENTS}.")


@dataclass(frozen=True)
class AugMixDraw:
    """One draw of AugMix's randomness for one view.

    Attributes:
        weights: chain weights ``w``, float32 ``(mixture_width,)``, summing to 1.
        m: weight of the mixed chains against the clean image, a float32 scalar tensor.
        chains: per chain, its steps ``(operation, signed strength)`` in order.
    """

    weights: Tensor
    m: Tensor
    chains: tuple[tuple[Step, ...], ...]


def _gamma(concentration: Sequence[float], generator: torch.Generator | None) -> Tensor:
    return torch._standard_gamma(torch.tensor(concentration, dtype=torch.float64), generator)


def sample_augmix(
    image_size: tuple[int, int],
    *,
    severity: float = 3,
    mixture_width: int = 3,
    chain_depth: int = -1,
    alpha: float = 1.0,
    all_ops: bool = False,
    generator: torch.Generator | None = None,
) -> AugMixDraw:
    """Draw the weights and chains of one AugMix view.

    In order: ``w ~ Dirichlet([alpha] * mixture_width)``, ``m ~ Beta(alpha, alpha)``; then per
    chain its depth (``chain_depth``, or uniform in {1, 2, 3} when ``chain_depth <= 0``) and per
    step a uniformly chosen operation, its level ``U(0.1, severity)`` (:func:`sample_level`) and,
    for :data:`SIGNED` operations, a sign (+ or - with probability 1/2).

    Args:
        image_size: ``(height, width)`` of the image (translations are a third of it at most).
        severity: the levels' upper end.
        mixture_width: number of chains.
        chain_depth: operations per chain; ``<= 0`` draws 1-3 per chain.
        alpha: Dirichlet and Beta concentration.
        all_ops: also draw from :data:`ENHANCEMENTS`.
        generator: torch generator (default torch's global one).

    Reference:
        google-research/augmix ``cifar.py``: ``aug``; the paper's ``utils.py``: ``aug_func``.
    """
    height, width = image_size
    ops = OPERATIONS + ENHANCEMENTS if all_ops else OPERATIONS
    gammas = _gamma([alpha] * mixture_width, generator)
    weights = (gammas / gammas.sum()).float()  # Dirichlet
    g = _gamma([alpha, alpha], generator)
    m = (g[0] / g.sum()).float()  # Beta(alpha, alpha)
    chains = []
    for _ in range(mixture_width):
        if chain_depth > 0:
            depth = chain_depth
        else:
            depth = int(torch.randint(1, 4, (), generator=generator))
        steps: list[Step] = []
        for _ in range(depth):
            name = ops[int(torch.randint(len(ops), (), generator=generator))]
            strength = None
            if name not in ("autocontrast", "equalize"):
                size = height if name == "translate_y" else width
                strength = op_strength(name, sample_level(severity, generator), size)
                if name in SIGNED and float(torch.rand((), generator=generator)) > 0.5:
                    strength = -strength
            steps.append((name, strength))
        chains.append(tuple(steps))
    return AugMixDraw(weights, m, tuple(chains))


def mix(image: Image_, draw: AugMixDraw, preprocess: Callable[[Image_], Tensor]) -> Tensor:
    """The AugMix view of ``image`` for ``draw``, mixed in float after ``preprocess``.

    ``(1 - m) * preprocess(image) + m * sum_i w_i * preprocess(chain_i(image))``, in float32.
    As ``sum_i w_i = 1``, this is ``preprocess`` (affine) of the float mixture of the images.

    Args:
        image: PIL image or uint8 ``(C, H, W)`` tensor.
        draw: from :func:`sample_augmix`.
        preprocess: image -> normalised float tensor.

    Reference:
        Hendrycks et al., AugMix, Algorithm 1; google-research/augmix ``cifar.py``: ``aug``.
    """
    clean = preprocess(image)
    mixture = torch.zeros_like(clean)
    for w, chain in zip(draw.weights, draw.chains, strict=True):
        augmented = image
        for name, strength in chain:
            augmented = apply_op(augmented, name, strength)
        mixture += w * preprocess(augmented)
    return (1 - draw.m) * clean + draw.m * mixture


def augmix(
    image: Image_,
    preprocess: Callable[[Image_], Tensor],
    *,
    severity: float = 3,
    mixture_width: int = 3,
    chain_depth: int = -1,
    alpha: float = 1.0,
    all_ops: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One AugMix view of ``image``: :func:`sample_augmix`, then :func:`mix`.

    Args:
        image: PIL image (the ops are then PIL's) or uint8 ``(C, H, W)`` tensor.
        preprocess: image -> normalised float tensor (e.g. ``ToTensor`` + ``Normalize``).
        severity, mixture_width, chain_depth, alpha, all_ops, generator: see
            :func:`sample_augmix`.

    Returns:
        The normalised mixed view (the shape of ``preprocess(image)``).

    Reference:
        google-research/augmix ``cifar.py``: ``aug``; the paper's ``utils.py``: ``aug_func``.
    """
    _, height, width = F.get_dimensions(image)
    draw = sample_augmix(
        (height, width),
        severity=severity,
        mixture_width=mixture_width,
        chain_depth=chain_depth,
        alpha=alpha,
        all_ops=all_ops,
        generator=generator,
    )
    return mix(image, draw, preprocess)


class AugMixTransform:
    """image -> one normalised AugMix view, by ``implementation``.

    ``"reference"``: :func:`augmix` (the chains are ``preprocess``-ed, then mixed in float32).
    ``"torchvision"``: ``preprocess`` of torchvision's ``transforms.AugMix`` output (a uint8 image
    or PIL image, mixed and rounded by torchvision).

    Args:
        preprocess: image -> normalised float tensor.
        severity, mixture_width, chain_depth, alpha, all_ops: AugMix settings.
        implementation: one of :data:`IMPLEMENTATIONS`.

    Randomness comes from torch's global generator.
    """

    def __init__(
        self,
        preprocess: Callable[[Image_], Tensor],
        *,
        severity: int = 3,
        mixture_width: int = 3,
        chain_depth: int = -1,
        alpha: float = 1.0,
        all_ops: bool = False,
        implementation: str = "reference",
    ) -> None:
        if implementation == "device":
            raise ValueError(
                'implementation="device" works on whole batches: use sncn.data.augmix.'
                "augmix_batches (or augmix_views_batch), not a per-image Dataset."
            )
        if implementation not in PER_IMAGE_IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}."
            )
        self.preprocess = preprocess
        self.implementation = implementation
        self.settings = dict(
            severity=severity,
            mixture_width=mixture_width,
            chain_depth=chain_depth,
            alpha=alpha,
            all_ops=all_ops,
        )
        self.library = (
            transforms.AugMix(severity, mixture_width, chain_depth, alpha, all_ops)
            if implementation == "torchvision"
            else None
        )

    def __call__(self, image: Image_) -> Tensor:
        if self.library is not None:
            return self.preprocess(self.library(image))
        return augmix(image, self.preprocess, **self.settings)


def _normalize_image(image: Image_, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """PIL image or uint8 tensor -> :func:`sncn.data.vision.normalize`-d float tensor."""
    if isinstance(image, Image.Image):
        image = F.pil_to_tensor(image)
    return normalize(image, mean, std)


class AugMixViews(Dataset):
    """Three views of each training image for :class:`sncn.train.AugMixTrainer`.

    Each item is first randomly cropped (zero padding 4) and flipped, as every CIFAR training
    image; the clean view is then normalised, and two independent AugMix views are made from it
    by ``implementation``: ``"reference"`` runs :func:`augmix` on the PIL image and mixes the
    normalised chains in float; ``"torchvision"`` runs torchvision's ``AugMix`` on the uint8
    tensor and normalises its (uint8) result.

    Args:
        images: uint8 ``(N, H, W, 3)``.
        labels: integer ``(N,)``.
        severity, mixture_width, chain_depth, alpha, all_ops: AugMix settings (the CIFAR ones:
            3, 3, random depth, 1, the nine operations).
        padding: random-crop padding (0 disables crop and flip).
        mean, std: normalisation (default the paper's 0.5, 0.5).
        implementation: ``"reference"`` (default) or ``"torchvision"``.

    Randomness comes from torch's global generator (in DataLoader workers, the per-worker seed
    torch derives from it), so a seeded epoch gives the same views.

    Reference:
        The paper's released ``cifar.py`` (``AugMixDataset`` with severity 3) and ``utils.py``.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        severity: int = 3,
        mixture_width: int = 3,
        chain_depth: int = -1,
        alpha: float = 1.0,
        all_ops: bool = False,
        padding: int = 4,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
        implementation: str = "reference",
    ) -> None:
        self.base = ArrayDataset(images, labels)
        size = images.shape[1:3]
        self.geometry = (
            transforms.Compose(
                [transforms.RandomCrop(size, padding=padding), transforms.RandomHorizontalFlip()]
            )
            if padding
            else None
        )
        self.preprocess = functools.partial(_normalize_image, mean=mean, std=std)
        self.augmix = AugMixTransform(
            self.preprocess,
            severity=severity,
            mixture_width=mixture_width,
            chain_depth=chain_depth,
            alpha=alpha,
            all_ops=all_ops,
            implementation=implementation,
        )

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[tuple[Tensor, Tensor, Tensor], int]:
        image, label = self.base[index]  # (3, H, W) uint8
        if self.geometry is not None:
            image = self.geometry(image)
        if self.augmix.implementation == "reference":
            image = F.to_pil_image(image)  # the operations are then PIL's
        return (self.preprocess(image), self.augmix(image), self.augmix(image)), label


def augmix_loader(
    dataset: AugMixViews, batch_size: int, generator: torch.Generator, workers: int = 0
) -> torch.utils.data.DataLoader:
    """A shuffling DataLoader over ``dataset`` (full batches only), ordered by ``generator``."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        generator=generator,
        persistent_workers=False,
    )


class ImageAugMixViews(Dataset):
    """AugMix views of an image dataset (ImageNet layout): ``((clean, aug1, aug2), label)``.

    Each item of ``dataset`` (a PIL image and a label, e.g. ``torchvision.datasets.ImageFolder``
    without a transform) is first geometrically augmented (``geometry``, e.g.
    ``RandomResizedCrop(224)`` + flip); the clean view is ``preprocess(image)`` and each AugMix
    view is made by ``implementation`` (see :class:`AugMixViews`): ``"reference"`` mixes the
    ``preprocess``-ed chains in float (:func:`augmix`; translations up to a third of the crop's
    side times ``severity / 10``), ``"torchvision"`` preprocesses torchvision's ``AugMix`` image.

    Args:
        dataset: items ``(PIL image, label)``.
        geometry: PIL -> PIL augmentation applied once per item, before the views.
        preprocess: PIL -> normalised tensor.
        severity, mixture_width, chain_depth, alpha, all_ops: AugMix settings (the ImageNet
            ones: 1, 3, random depth, 1, the nine operations).
        implementation: ``"reference"`` (default) or ``"torchvision"``.

    Reference:
        The paper's released ``imagenet.py`` (``AugMixDataset`` with severity 1, image size 224).
    """

    def __init__(
        self,
        dataset: Dataset,
        geometry,
        preprocess,
        *,
        severity: int = 1,
        mixture_width: int = 3,
        chain_depth: int = -1,
        alpha: float = 1.0,
        all_ops: bool = False,
        implementation: str = "reference",
    ) -> None:
        self.dataset = dataset
        self.geometry = geometry
        self.preprocess = preprocess
        self.augmix = AugMixTransform(
            preprocess,
            severity=severity,
            mixture_width=mixture_width,
            chain_depth=chain_depth,
            alpha=alpha,
            all_ops=all_ops,
            implementation=implementation,
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[tuple[Tensor, Tensor, Tensor], int]:
        image, label = self.dataset[index]
        image = self.geometry(image)
        return (self.preprocess(image), self.augmix(image), self.augmix(image)), label


# ----------------------------------------------------------------------------------------------
# implementation="device": AugMix on whole uint8 batches on the training device

#: Every operation in the order of the batched draws' indices (the first nine without ``all_ops``).
ALL_OPERATIONS: tuple[str, ...] = OPERATIONS + ENHANCEMENTS
#: Operations made by one affine resampling (:func:`affine_batch`).
GEOMETRIC: tuple[str, ...] = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
#: Operation index of a step past a chain's depth: the image is left as it is.
NO_OP = -1


def histograms(images: Tensor) -> Tensor:
    """Per image and channel, the count of each grey level.

    Args:
        images: uint8 ``(N, C, H, W)``.

    Returns:
        int64 ``(N, C, 256)``.
    """
    flat = images.flatten(2).long()  # (N, C, H*W)
    counts = torch.zeros(*flat.shape[:2], 256, dtype=torch.long, device=images.device)
    return counts.scatter_add_(2, flat, torch.ones_like(flat))


def _apply_lut(images: Tensor, lut: Tensor) -> Tensor:
    """``lut[n, c, images[n, c]]``: uint8 ``(N, C, H, W)`` through ``(N, C, 256)`` tables."""
    n, c = images.shape[:2]
    out = torch.gather(lut.expand(n, c, 256), 2, images.flatten(2).long())
    return out.view_as(images).to(torch.uint8)


def _levels(device: torch.device, dtype: torch.dtype = torch.long) -> Tensor:
    return torch.arange(256, device=device, dtype=dtype)


def autocontrast_lut(hist: Tensor) -> Tensor:
    """PIL's ``ImageOps.autocontrast`` (cutoff 0) tables: ``int(v * 255 / (hi - lo) - lo * 255 /
    (hi - lo))`` clipped to ``[0, 255]``, with ``lo``/``hi`` a channel's lowest/highest level
    present; the identity where ``hi <= lo``.

    Args:
        hist: ``(N, C, 256)`` counts (:func:`histograms`).

    Returns:
        int64 ``(N, C, 256)`` tables.

    Reference:
        Pillow ``ImageOps.autocontrast``.
    """
    levels = _levels(hist.device, torch.float64)
    present = hist > 0
    lo = torch.where(present, levels, 256.0).amin(-1, keepdim=True)  # (N, C, 1)
    hi = torch.where(present, levels, -1.0).amax(-1, keepdim=True)
    scale = torch.full_like(lo, 255.0) / (hi - lo).clamp(min=1)  # tensor / tensor: IEEE division
    table = (levels * scale + (-lo * scale)).trunc().clamp(0, 255)  # int() truncates
    return torch.where(hi > lo, table, levels).long()


def equalize_lut(hist: Tensor) -> Tensor:
    """PIL's ``ImageOps.equalize`` tables: with ``step = (total - count of the highest level
    present) // 255``, level ``v`` goes to ``(step // 2 + sum of counts below v) // step``
    (clipped to 255); the identity where one level only is present or ``step == 0``.

    Args:
        hist: ``(N, C, 256)`` counts (:func:`histograms`).

    Returns:
        int64 ``(N, C, 256)`` tables.

    Reference:
        Pillow ``ImageOps.equalize``.
    """
    levels = _levels(hist.device)
    present = hist > 0
    last = torch.where(present, levels, 0).amax(-1, keepdim=True)  # (N, C, 1)
    step = (hist.sum(-1, keepdim=True) - hist.gather(-1, last)) // 255
    below = hist.cumsum(-1) - hist  # counts strictly below each level
    table = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)
    identity = (present.sum(-1, keepdim=True) <= 1) | (step == 0)
    return torch.where(identity, levels, table)


def posterize_lut(bits: Tensor) -> Tensor:
    """Keep the ``bits`` high bits: ``v & ~(2 ** (8 - bits) - 1)``; ``bits`` int ``(N,)``.

    Returns:
        int64 ``(N, 1, 256)`` tables.
    """
    levels = _levels(bits.device)
    mask = 255 - ((1 << (8 - bits)) - 1)  # (N,)
    return (levels & mask[:, None])[:, None]


def solarize_lut(threshold: Tensor) -> Tensor:
    """Invert the levels at or above ``threshold``: ``v if v < t else 255 - v``.

    Returns:
        int64 ``(N, 1, 256)`` tables.
    """
    levels = _levels(threshold.device)
    return torch.where(levels < threshold[:, None], levels, 255 - levels)[:, None]


def _blend(degenerate: Tensor, images: Tensor, factor: Tensor) -> Tensor:
    """PIL's ``Image.blend(degenerate, image, factor)`` in float32, truncated and clipped."""
    d, x = degenerate.float(), images.float()
    f = factor.float().view(-1, *([1] * (images.dim() - 1)))
    return (d + f * (x - d)).clamp(0, 255).trunc().to(torch.uint8)


def _grey(images: Tensor) -> Tensor:
    """PIL's RGB -> L: ``(19595 R + 38470 G + 7471 B + 2**15) >> 16``, ``(N, 1, H, W)`` int64."""
    r, g, b = images.long().unbind(1)
    return ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16)[:, None]


def _sharpness_degenerate(images: Tensor) -> Tensor:
    """PIL's ``ImageFilter.SMOOTH`` (3x3 kernel 1, centre 5, over 13, rounded; borders kept)."""
    c = images.shape[1]
    kernel = torch.ones(3, 3, device=images.device)
    kernel[1, 1] = 5
    kernel = (kernel / 13).expand(c, 1, 3, 3)
    smooth = torch.nn.functional.conv2d(images.float(), kernel, groups=c) + 0.5
    out = images.clone()
    out[:, :, 1:-1, 1:-1] = smooth.clamp(0, 255).trunc().to(torch.uint8)
    return out


def affine_matrices(name: str, strength: Tensor, height: int, width: int) -> Tensor:
    """The inverse maps PIL resamples with for the geometric operations of :func:`apply_op`.

    Output pixel ``(x, y)`` samples the input at ``(a X + b Y + c, d X + e Y + f)`` with
    ``(X, Y) = (x + 0.5, y + 0.5)`` (pixel centres):

    * ``rotate`` by ``s`` degrees counter-clockwise about ``(W / 2, H / 2)``: PIL's
      ``Image.rotate`` (``cos``/``sin`` of ``-s`` rounded to 15 decimals).
    * ``shear_x``: ``(1, t, 0, 0, 1, 0)``; ``shear_y``: ``(1, 0, 0, t, 1, 0)``, with ``t`` the
      tangent of torchvision's angle form ``atan(s)`` (``F.affine`` with ``center=(0, 0)``).
    * ``translate_x``: ``(1, 0, s, 0, 1, 0)``; ``translate_y``: ``(1, 0, 0, 0, 1, s)``.

    Args:
        name: one of :data:`GEOMETRIC`.
        strength: signed strengths, float64 ``(N,)``.
        height, width: image size.

    Returns:
        float64 ``(N, 6)``: ``(a, b, c, d, e, f)`` per image.

    Reference:
        Pillow ``Image.rotate``; torchvision ``_get_inverse_affine_matrix``.
    """
    s = strength.double()
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    if name == "rotate":
        angle = torch.deg2rad(-s)
        cos, sin = torch.round(angle.cos(), decimals=15), torch.round(angle.sin(), decimals=15)
        cx, cy = width / 2, height / 2
        c = cos * -cx + sin * -cy + cx
        f = -sin * -cx + cos * -cy + cy
        return torch.stack([cos, sin, c, -sin, cos, f], 1)
    if name in ("shear_x", "shear_y"):
        angle = torch.deg2rad(torch.rad2deg(torch.atan(s)))  # torchvision's degrees, back
        t = angle.tan() if name == "shear_x" else angle.sin() / angle.cos()
        if name == "shear_x":
            return torch.stack([one, t, zero, zero, one, zero], 1)
        return torch.stack([one, zero, zero, t, one, zero], 1)
    if name == "translate_x":
        return torch.stack([one, zero, s, zero, one, zero], 1)
    if name == "translate_y":
        return torch.stack([one, zero, zero, zero, one, s], 1)
    raise ValueError(f"{name!r} is not one of {GEOMETRIC}.")


def affine_batch(images: Tensor, matrices: Tensor) -> Tensor:
    """PIL's bilinear ``Image.transform(AFFINE)`` of each image, in float64.

    Output pixel ``(x, y)`` reads the input at ``(u, v) = (a X + b Y + c, d X + e Y + f)``,
    ``(X, Y) = (x + 0.5, y + 0.5)``; it is 0 (PIL's fill) unless ``0 <= u < W`` and
    ``0 <= v < H``; otherwise bilinear between the pixels around ``(u - 0.5, v - 0.5)``, the
    neighbours clamped to the image, and truncated to uint8.

    Args:
        images: uint8 ``(N, C, H, W)``.
        matrices: ``(N, 6)`` (:func:`affine_matrices`).

    Returns:
        uint8 ``(N, C, H, W)``.

    Reference:
        Pillow ``Geometry.c``: ``affine_transform``, ``bilinear_filter32RGB``.
    """
    n, c, h, w = images.shape
    device = images.device
    m = matrices.to(device=device, dtype=torch.float64)[:, :, None, None]  # (N, 6, 1, 1)
    ys = torch.arange(h, device=device, dtype=torch.float64)[:, None] + 0.5  # (H, 1)
    xs = torch.arange(w, device=device, dtype=torch.float64)[None, :] + 0.5  # (1, W)
    u = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]  # (N, H, W)
    v = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    u, v = u - 0.5, v - 0.5
    x0, y0 = u.floor(), v.floor()
    dx, dy = (u - x0)[:, None], (v - y0)[:, None]  # (N, 1, H, W)
    x0, y0 = x0.long(), y0.long()
    flat = images.flatten(2).double()  # (N, C, H*W)

    def pixel(yi: Tensor, xi: Tensor) -> Tensor:  # clamped neighbours, (N, C, H, W)
        index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).flatten(1)
        return flat.gather(2, index[:, None].expand(n, c, -1)).view(n, c, h, w)

    top = pixel(y0, x0) + (pixel(y0, x0 + 1) - pixel(y0, x0)) * dx
    bottom = pixel(y0 + 1, x0) + (pixel(y0 + 1, x0 + 1) - pixel(y0 + 1, x0)) * dx
    value = (top + (bottom - top) * dy).trunc().clamp(0, 255)
    return torch.where(inside[:, None], value, 0.0).to(torch.uint8)


def apply_ops_batch(
    images: Tensor, ops: Tensor, strengths: Tensor, *, enhancements: bool = True
) -> Tensor:
    """Operation ``ALL_OPERATIONS[ops[n]]`` with strength ``strengths[n]`` on image ``n``.

    Every operation is computed on the whole batch (fixed shapes) and kept where chosen: one
    table lookup for the per-level operations (autocontrast, equalize, posterize, solarize,
    brightness, contrast), one affine resampling for the geometric ones
    (:func:`affine_batch`), and the colour and sharpness blends when ``all_ops`` draws them.

    Args:
        images: uint8 ``(N, 3, H, W)``.
        ops: int64 ``(N,)``, indices into :data:`ALL_OPERATIONS`; :data:`NO_OP` leaves the image.
        strengths: float64 ``(N,)``, signed strengths as :func:`op_strength` gives them (any
            value for autocontrast, equalize and :data:`NO_OP`).
        enhancements: compute :data:`ENHANCEMENTS` too (``False`` when ``ops`` has none of them:
            AugMix without ``all_ops`` skips their work).

    Returns:
        uint8 ``(N, 3, H, W)``.

    Reference:
        The Pillow operations that :func:`apply_op` calls on PIL images.
    """
    n, c, h, w = images.shape
    device = images.device
    ops = ops.to(device)
    s = strengths.to(device=device, dtype=torch.float64)
    index = {name: k for k, name in enumerate(ALL_OPERATIONS)}
    is_op = {name: ops == k for name, k in index.items()}  # (N,) each

    def select(name: str) -> Tensor:  # (N, 1, 1), against (N, C, 256) tables
        return is_op[name][:, None, None]

    # per-level operations: one table per image and channel, one gather
    table = _levels(device).expand(n, c, 256)
    hist = histograms(images)
    table = torch.where(select("autocontrast"), autocontrast_lut(hist), table)
    table = torch.where(select("equalize"), equalize_lut(hist), table)
    table = torch.where(select("posterize"), posterize_lut(s.long().clamp(0, 8)), table)
    table = torch.where(select("solarize"), solarize_lut(s.long()), table)
    if enhancements:
        levels = _levels(device)[None, None].expand(n, 1, 256)
        brightness = _blend(torch.zeros_like(levels), levels, s)
        table = torch.where(select("brightness"), brightness, table)
        grey_hist = histograms(_grey(images).to(torch.uint8))[:, 0]  # (N, 256)
        mean = (grey_hist * _levels(device)).sum(-1).double() / (h * w)
        degenerate = (mean + 0.5).trunc().long()[:, None, None].expand(n, 1, 256)
        table = torch.where(select("contrast"), _blend(degenerate, levels, s), table)
    out = _apply_lut(images, table)

    # geometric operations: one resampling with each image's own map
    geometric = torch.zeros(n, dtype=torch.bool, device=device)
    identity = torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=torch.float64, device=device)
    matrices = identity.expand(n, 6)
    for name in GEOMETRIC:
        matrices = torch.where(is_op[name][:, None], affine_matrices(name, s, h, w), matrices)
        geometric = geometric | is_op[name]
    out = torch.where(geometric[:, None, None, None], affine_batch(images, matrices), out)

    if not enhancements:
        return out
    # per-pixel blends
    color = _blend(_grey(images).expand(n, c, h, w), images, s)
    out = torch.where(is_op["color"][:, None, None, None], color, out)
    sharp = _blend(_sharpness_degenerate(images), images, s)
    return torch.where(is_op["sharpness"][:, None, None, None], sharp, out)


def apply_op_batch(images: Tensor, name: str, strength: Tensor) -> Tensor:
    """Operation ``name`` on every image of a batch, image ``n`` at ``strength[n]``.

    The batched counterpart of :func:`apply_op` (see :func:`apply_ops_batch`).

    Args:
        images: uint8 ``(N, 3, H, W)``.
        name: one of :data:`ALL_OPERATIONS`.
        strength: ``(N,)`` signed strengths (ignored for autocontrast and equalize).

    Returns:
        uint8 ``(N, 3, H, W)``.
    """
    ops = torch.full((images.shape[0],), ALL_OPERATIONS.index(name), device=images.device)
    return apply_ops_batch(images, ops, strength, enhancements=name in ENHANCEMENTS)


@dataclass(frozen=True)
class AugMixBatchDraw:
    """AugMix's randomness for one view of each image of a batch (:func:`sample_augmix_batch`).

    Attributes:
        weights: chain weights ``w``, float32 ``(N, mixture_width)``, each row summing to 1.
        m: weight of the mixed chains against the clean image, float32 ``(N,)``.
        ops: int64 ``(N, mixture_width, depth)``: indices into :data:`ALL_OPERATIONS`,
            :data:`NO_OP` past a chain's depth.
        strengths: float64 ``(N, mixture_width, depth)``: signed strengths (:func:`op_strength`).
    """

    weights: Tensor
    m: Tensor
    ops: Tensor
    strengths: Tensor


def _divide(numerator: Tensor, denominator: float) -> Tensor:
    """``numerator / denominator`` as Python divides (an IEEE division, not a reciprocal)."""
    return numerator / torch.full_like(numerator, denominator)


def batch_strengths(ops: Tensor, levels: Tensor, image_size: tuple[int, int]) -> Tensor:
    """:func:`op_strength` of ``ALL_OPERATIONS[ops]`` at ``levels``, elementwise (unsigned).

    Args:
        ops: int64 indices into :data:`ALL_OPERATIONS` (or :data:`NO_OP`).
        levels: float64, the same shape.
        image_size: ``(height, width)``.

    Returns:
        float64, the shape of ``levels`` (0 for autocontrast, equalize and :data:`NO_OP`).
    """
    height, width = image_size

    def parameter(maxval: float, integer: bool) -> Tensor:
        value = _divide(levels * maxval, PARAMETER_MAX)  # level * maxval / 10, as Python
        return value.trunc() if integer else value

    table = {
        "posterize": 4 - parameter(4, True),
        "rotate": parameter(30, True),
        "solarize": 256 - parameter(256, True),
        "shear_x": parameter(0.3, False),
        "shear_y": parameter(0.3, False),
        "translate_x": parameter(width / 3, True),
        "translate_y": parameter(height / 3, True),
        **{name: parameter(1.8, False) + 0.1 for name in ENHANCEMENTS},
    }
    out = torch.zeros_like(levels)
    for name, value in table.items():
        out = torch.where(ops == ALL_OPERATIONS.index(name), value, out)
    return out


def sample_augmix_batch(
    n: int,
    image_size: tuple[int, int],
    *,
    severity: float = 3,
    mixture_width: int = 3,
    chain_depth: int = -1,
    alpha: float = 1.0,
    all_ops: bool = False,
    generator: torch.Generator,
) -> AugMixBatchDraw:
    """Draw the weights and chains of one AugMix view for each of ``n`` images, all at once.

    Per image the distribution of :func:`sample_augmix`: ``w ~ Dirichlet([alpha] *
    mixture_width)``, ``m ~ Beta(alpha, alpha)`` (both from Gamma draws); per chain a depth
    (``chain_depth``, or uniform in {1, 2, 3}); per step a uniform operation, a level
    ``U(0.1, severity)`` turned into a strength as :func:`op_strength`, and for :data:`SIGNED`
    operations a sign (- with probability 1/2). The draws are fixed-shape tensors made on
    ``generator``'s device (not the same numbers as :func:`sample_augmix`).

    Args:
        n: number of images.
        image_size: ``(height, width)``.
        severity, mixture_width, chain_depth, alpha, all_ops: see :func:`sample_augmix`.
        generator: the source of every draw, on any device.

    Returns:
        An :class:`AugMixBatchDraw` on ``generator``'s device.

    Reference:
        google-research/augmix ``cifar.py``: ``aug``; the paper's ``utils.py``: ``aug_func``.
    """
    device = generator.device
    depth = chain_depth if chain_depth > 0 else 3
    shape = (n, mixture_width, depth)
    concentration = torch.full((n, mixture_width + 2), alpha, dtype=torch.float64, device=device)
    gammas = torch._standard_gamma(concentration, generator)
    chains, pair = gammas[:, :mixture_width], gammas[:, mixture_width:]
    weights = (chains / chains.sum(1, keepdim=True)).float()  # Dirichlet
    m = (pair[:, 0] / pair.sum(1)).float()  # Beta(alpha, alpha)
    if chain_depth > 0:
        depths = torch.full((n, mixture_width), depth, device=device)
    else:
        depths = torch.randint(1, 4, (n, mixture_width), generator=generator, device=device)
    n_ops = len(ALL_OPERATIONS if all_ops else OPERATIONS)
    ops = torch.randint(n_ops, shape, generator=generator, device=device)
    u = torch.rand(shape, dtype=torch.float64, generator=generator, device=device)
    levels = 0.1 + (severity - 0.1) * u  # sample_level
    flip = torch.rand(shape, generator=generator, device=device) > 0.5
    strengths = batch_strengths(ops, levels, image_size)
    signed = torch.zeros_like(flip)
    for name in SIGNED:
        signed = signed | (ops == ALL_OPERATIONS.index(name))
    strengths = torch.where(signed & flip, -strengths, strengths)
    steps = torch.arange(depth, device=device)
    ops = torch.where(steps < depths[..., None], ops, NO_OP)
    return AugMixBatchDraw(weights, m, ops, strengths)


def mix_batch(
    images: Tensor,
    draw: AugMixBatchDraw,
    *,
    all_ops: bool = False,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
) -> Tensor:
    """The AugMix view of each image for ``draw``, mixed in float32 after normalisation.

    ``(1 - m) * normalize(x) + m * sum_i w_i * normalize(chain_i(x))`` per image, as
    :func:`mix`; every chain of every image runs at once as one batch of
    ``mixture_width * N`` images through :func:`apply_ops_batch`, one step at a time.

    Args:
        images: uint8 ``(N, 3, H, W)``.
        draw: from :func:`sample_augmix_batch` (moved to ``images``' device).
        all_ops: whether ``draw`` may hold :data:`ENHANCEMENTS`.
        mean, std: normalisation (:func:`sncn.data.vision.normalize`).

    Returns:
        float32 ``(N, 3, H, W)``.

    Reference:
        Hendrycks et al., AugMix, Algorithm 1; google-research/augmix ``cifar.py``: ``aug``.
    """
    n = images.shape[0]
    device = images.device
    width = draw.weights.shape[1]
    ops = draw.ops.to(device).transpose(0, 1).reshape(width * n, -1)  # row i * N + b
    strengths = draw.strengths.to(device).transpose(0, 1).reshape(width * n, -1)
    x = images.repeat(width, 1, 1, 1)  # (width * N, 3, H, W): chain i of image b at i * N + b
    for step in range(ops.shape[1]):
        x = apply_ops_batch(x, ops[:, step], strengths[:, step], enhancements=all_ops)
    chains = normalize(x, mean, std).view(width, *images.shape)
    clean = normalize(images, mean, std)
    weights = draw.weights.to(device)[:, :, None, None, None]  # (N, width, 1, 1, 1)
    mixture = torch.zeros_like(clean)
    for i in range(width):
        mixture += weights[:, i] * chains[i]
    m = draw.m.to(device)[:, None, None, None]
    return (1 - m) * clean + m * mixture


def augmix_views_batch(
    images: Tensor,
    generator: torch.Generator,
    *,
    padding: int = 4,
    severity: float = 3,
    mixture_width: int = 3,
    chain_depth: int = -1,
    alpha: float = 1.0,
    all_ops: bool = False,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
) -> tuple[Tensor, Tensor, Tensor]:
    """:class:`AugMixViews` for a whole uint8 batch on its device (``implementation="device"``).

    The batch is randomly cropped (zero padding ``padding``) and flipped
    (:func:`sncn.data.vision.random_crop_flip`); the clean view is then normalised and two
    independent AugMix views are made from it (:func:`sample_augmix_batch`, :func:`mix_batch`:
    both views' chains in one pass). No per-image Python work, no host-device copy when
    ``generator`` is on the batch's device.

    Args:
        images: uint8 ``(N, 3, H, W)``.
        generator: the source of all randomness, on the CPU or on ``images``' device.
        padding: random-crop padding (0 disables crop and flip).
        severity, mixture_width, chain_depth, alpha, all_ops: AugMix settings (the CIFAR ones:
            3, 3, random depth, 1, the nine operations).
        mean, std: normalisation (default the paper's 0.5, 0.5).

    Returns:
        ``(clean, aug1, aug2)``, float32 ``(N, 3, H, W)`` each.

    Reference:
        The paper's released ``cifar.py`` (``AugMixDataset`` with severity 3) and ``utils.py``.
    """
    if padding:
        images = random_crop_flip(images, generator, padding=padding)
    n, _, h, w = images.shape
    draw = sample_augmix_batch(
        2 * n, (h, w), severity=severity, mixture_width=mixture_width, chain_depth=chain_depth,
        alpha=alpha, all_ops=all_ops, generator=generator,
    )  # fmt: skip
    views = mix_batch(images.repeat(2, 1, 1, 1), draw, all_ops=all_ops, mean=mean, std=std)
    aug1, aug2 = views.split(n)
    return normalize(images, mean, std), aug1, aug2
