"""AugMix views for the JSD loss: ``((clean, augmix_1, augmix_2), label)`` per image.

Two implementations of AugMix (Hendrycks et al., ICLR 2020) make the augmented views:

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

from sncn.data.vision import CIFAR_MEAN, CIFAR_STD, ArrayDataset, normalize

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
#: The implementations :class:`AugMixViews` and :class:`ImageAugMixViews` offer.
IMPLEMENTATIONS = ("reference", "torchvision")

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
        if implementation not in IMPLEMENTATIONS:
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
