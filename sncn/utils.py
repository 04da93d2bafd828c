"""Small helpers shared across sncn: seeding and devices."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) in one place.

    Args:
        seed: the run's seed.

    Returns:
        A fresh CPU ``torch.Generator`` seeded with ``seed``, for code that takes an explicit
        generator (the CrossNorm switch, samplers).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds third-party code using the legacy API
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | None = None) -> torch.device:
    """``device`` as a ``torch.device``; None means CUDA when available, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
