"""AugMix views: shapes, normalisation, randomness, and the loader feeding AugMixTrainer."""

from __future__ import annotations

import numpy as np
import torch

from sncn.data.augmix import AugMixViews, augmix_loader


def images(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 3


def test_views_are_normalised_and_differ():
    x, y = images()
    data = AugMixViews(x, y, padding=0)
    torch.manual_seed(0)
    (clean, a1, a2), label = data[1]
    assert label == 1
    assert clean.shape == a1.shape == a2.shape == (3, 32, 32) and clean.dtype == torch.float32
    expected = (torch.from_numpy(x[1]).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(clean, expected)  # no crop/flip: the clean view is the image
    assert not torch.equal(a1, clean) and not torch.equal(a1, a2)
    assert clean.min() >= -1 and clean.max() <= 1


def test_seeded_and_batched():
    x, y = images(8)
    data = AugMixViews(x, y)
    torch.manual_seed(3)
    first = data[0][0][1]
    torch.manual_seed(3)
    assert torch.equal(first, data[0][0][1])
    loader = augmix_loader(data, 4, torch.Generator().manual_seed(0))
    (clean, a1, a2), labels = next(iter(loader))
    assert clean.shape == (4, 3, 32, 32) and labels.shape == (4,)
    assert len(loader) == 2
