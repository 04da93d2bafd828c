"""Helpers shared by several test modules (plain functions and data, not fixtures)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def gen(seed: int = 0) -> torch.Generator:
    """A seeded CPU generator."""
    return torch.Generator().manual_seed(seed)


def random_state(shapes: dict, seed: int = 0) -> dict[str, Tensor]:
    """A state dict of ``shapes``: float64 values that keep activations of order one through a
    deep network (He-scaled weights, BatchNorm weights near 1, small biases and means)."""
    g, state = gen(seed), {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
        elif key.endswith(("running_mean", "bias")):
            state[key] = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        elif len(shape) == 1:  # norm weights
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        else:
            fan_in = math.prod(shape[1:])
            w = torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in / 2)
            state[key] = w
    return state


#: ImageNet settings (``sncn.experiments.imagenet_c.SETTING`` overrides) for seconds-long runs.
TINY_IMAGENET = {
    "epochs": 1,
    "batch_size": 8,
    "image_size": 32,
    "layers": [1, 1, 1, 1],
    "width": 4,
    "workers": 0,
    "amp": False,
    "channels_last": False,
    "eval_batch_size": 16,
}


def tiny_imagenet_folder(root: Path, per_class: int = 16, side: int = 37) -> Path:
    """An ImageNet-format folder of random images: 2 classes, ``per_class`` train, 4 val."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 4)):
        for c in ("a", "b"):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                image[..., 0] //= 2 if c == "a" else 1  # a little signal
                Image.fromarray(image).save(folder / f"{i}.png")
    return root


def bn_eval(sd: dict[str, Tensor], x: Tensor, prefix: str, eps: float = 1e-5) -> Tensor:
    """BatchNorm ``prefix`` of state dict ``sd`` in eval mode, functionally (for references)."""
    return torch.nn.functional.batch_norm(
        x,
        sd[f"{prefix}.running_mean"],
        sd[f"{prefix}.running_var"],
        sd[f"{prefix}.weight"],
        sd[f"{prefix}.bias"],
        training=False,
        eps=eps,
    )


def fake_cifar(monkeypatch, c_folder: Path) -> list[str]:
    """20 random 8 x 8 'CIFAR' images per split, and a CIFAR-C folder of 10 per severity, for
    :func:`sncn.experiments.cifar_c.run`; returns the devices the CIFAR-C was asked for on."""
    from sncn.experiments import cifar_c

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(20) % 10
    monkeypatch.setattr(cifar_c, "load_cifar", lambda *a, **k: (images, labels))
    c_folder.mkdir(parents=True, exist_ok=True)
    for name in cifar_c.CORRUPTIONS:
        np.save(c_folder / f"{name}.npy", np.concatenate([images[:10]] * 5))
    np.save(c_folder / "labels.npy", np.concatenate([labels[:10]] * 5))

    devices = []

    def corrupted_test_set(dataset, n_test, root=None, seed=0, device="cpu"):
        devices.append(str(device))
        return c_folder, cifar_c.corrupted_test_data(dataset, n_test, root, seed)["cifar_c"]

    monkeypatch.setattr(cifar_c, "corrupted_test_set", corrupted_test_set)
    return devices
