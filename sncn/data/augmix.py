"""AugMix views for the JSD loss: ``((clean, augmix_1, augmix_2), label)`` per image.

Reference: Hendrycks et al., "AugMix: A Simple Data Processing Method to Improve Robustness and
Uncertainty", ICLR 2020. The mixing itself is torchvision's ``AugMix`` transform, with the
settings of the AugMix CIFAR script and the paper's released code: severity 3, width 3, random
depth 1-3, and only the operations that do not overlap with the test corruptions
(``all_ops=False``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms

from sncn.data.vision import CIFAR_MEAN, CIFAR_STD, ArrayDataset, normalize


class AugMixViews(Dataset):
    """Three views of each training image for :class:`sncn.train.AugMixTrainer`.

    Each item is first randomly cropped (zero padding 4) and flipped, as every CIFAR training
    image; then the clean view and two independent AugMix views are normalised.

    Args:
        images: uint8 ``(N, H, W, 3)``.
        labels: integer ``(N,)``.
        severity, mixture_width, chain_depth, alpha, all_ops: torchvision ``AugMix`` settings.
        padding: random-crop padding (0 disables crop and flip).
        mean, std: normalisation (default the paper's 0.5, 0.5).

    Randomness comes from torch's global generator (in DataLoader workers, the per-worker seed
    torch derives from it), so a seeded epoch gives the same views.
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
        self.augmix = transforms.AugMix(severity, mixture_width, chain_depth, alpha, all_ops)
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[tuple[Tensor, Tensor, Tensor], int]:
        image, label = self.base[index]  # (3, H, W) uint8
        if self.geometry is not None:
            image = self.geometry(image)
        views = (image, self.augmix(image), self.augmix(image))
        return tuple(normalize(v, self.mean, self.std) for v in views), label


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
    ``RandomResizedCrop(224)`` + flip); the clean view and two AugMix views are then turned into
    normalised tensors by ``preprocess``. Settings of the paper's released ``imagenet.py`` (its
    ``AugMixDataset``): severity 1, width 3, random depth, ``all_ops=False``.

    Args:
        dataset: items ``(PIL image, label)``.
        geometry: PIL -> PIL augmentation applied once per item, before the views.
        preprocess: PIL -> normalised tensor.
        severity, mixture_width, chain_depth, alpha, all_ops: torchvision ``AugMix`` settings.
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
    ) -> None:
        self.dataset = dataset
        self.geometry = geometry
        self.preprocess = preprocess
        self.augmix = transforms.AugMix(severity, mixture_width, chain_depth, alpha, all_ops)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[tuple[Tensor, Tensor, Tensor], int]:
        image, label = self.dataset[index]
        image = self.geometry(image)
        views = (image, self.augmix(image), self.augmix(image))
        return tuple(self.preprocess(v) for v in views), label
