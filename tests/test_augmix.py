"""AugMix views: the reference's level sampling, operation strengths and float mixing, the
torchvision option, shapes, normalisation, randomness, and the loader feeding AugMixTrainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from torchvision import transforms
from torchvision.transforms import functional as F
from torchvision.transforms.functional import InterpolationMode

from sncn.data.augmix import (
    ENHANCEMENTS,
    OPERATIONS,
    AugMixDraw,
    AugMixViews,
    ImageAugMixViews,
    apply_op,
    augmix,
    augmix_loader,
    mix,
    op_strength,
    sample_augmix,
    sample_level,
)
from sncn.data.vision import normalize


def images(n: int = 6, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 3


def preprocess(image) -> torch.Tensor:
    if isinstance(image, Image.Image):
        image = F.pil_to_tensor(image)
    return normalize(image)


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


# --- (a) levels: U(0.1, severity), continuous ------------------------------------------------


@pytest.mark.parametrize("severity", [3, 1])
def test_levels_are_uniform_between_0_1_and_severity(severity):
    g = torch.Generator().manual_seed(0)
    n = 20_000
    levels = np.sort([sample_level(severity, g) for _ in range(n)])
    assert levels.min() >= 0.1 and levels.max() < severity
    cdf = (levels - 0.1) / (severity - 0.1)
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.95 / math.sqrt(n)  # Kolmogorov-Smirnov at the 0.1% level
    assert len(np.unique(levels)) == n  # continuous, not a grid


def test_sampled_rotations_follow_the_reference_levels():
    """|degrees| = int(3 * U(0.1, 3)): 0..8, 0 with probability (1/3 - 0.1) / 2.9, the others
    1/3 / 2.9 each; signs half and half. torchvision's grid gives only 0, 3 and 6 (severity 3)."""
    g = torch.Generator().manual_seed(1)
    steps = []
    for _ in range(3000):
        for chain in sample_augmix((32, 32), generator=g).chains:
            steps.extend(chain)
    names = [name for name, _ in steps]
    counts = np.array([names.count(op) for op in OPERATIONS])
    assert np.all(np.abs(counts / len(steps) - 1 / 9) < 5 * math.sqrt(1 / 9 * 8 / 9 / len(steps)))
    degrees = np.array([v for name, v in steps if name == "rotate"])
    n = len(degrees)
    freq = np.bincount(np.abs(degrees), minlength=9) / n
    assert len(freq) == 9  # never 9 degrees: the level stays below 3
    expected = np.array([(1 / 3 - 0.1) / 2.9] + [1 / 3 / 2.9] * 8)
    assert np.all(np.abs(freq - expected) < 5 * np.sqrt(expected * (1 - expected) / n))
    nonzero = degrees[degrees != 0]
    assert abs(np.mean(nonzero < 0) - 0.5) < 5 * math.sqrt(0.25 / len(nonzero))


# --- (b) each operation's strength range and the op applied at it ----------------------------


@pytest.mark.parametrize(
    "name, size, severity, weakest, strongest",
    [
        ("rotate", 32, 3, 0, 9),  # 30 * 3 / 10 degrees
        ("rotate", 224, 1, 0, 3),
        ("shear_x", 32, 3, 0.003, 0.09),  # 0.3 * level / 10
        ("shear_y", 224, 1, 0.003, 0.03),
        ("translate_x", 32, 3, 0, 3),  # int(32 / 3 * 3 / 10)
        ("translate_y", 32, 3, 0, 3),
        ("translate_x", 224, 1, 0, 7),  # int(224 / 3 / 10)
        ("translate_y", 224, 3, 0, 22),
        ("posterize", 32, 3, 4, 3),  # bits kept: 4 - int(level * 4 / 10)
        ("posterize", 224, 1, 4, 4),
        ("solarize", 32, 3, 254, 180),  # threshold: 256 - int(level * 256 / 10)
        ("solarize", 224, 1, 254, 231),
        ("color", 32, 3, 0.118, 0.64),  # 1.8 * level / 10 + 0.1
        ("sharpness", 32, 3, 0.118, 0.64),
    ],
)
def test_strengths_at_the_level_bounds(name, size, severity, weakest, strongest):
    assert op_strength(name, 0.1, size) == pytest.approx(weakest)
    assert op_strength(name, severity, size) == pytest.approx(strongest)
    levels = np.linspace(0.1, severity, 101)
    values = [abs(op_strength(name, level, size)) for level in levels]
    assert min(values) == pytest.approx(min(weakest, strongest))
    assert max(values) == pytest.approx(max(weakest, strongest))


def reference_ops(size: int) -> dict:
    """The PIL calls of google-research/augmix ``augmentations.py``, given the strength."""
    bilinear = Image.BILINEAR

    def affine(data):
        return lambda im, v: im.transform((size, size), Image.AFFINE, data(v), resample=bilinear)

    return {
        "autocontrast": lambda im, v: ImageOps.autocontrast(im),
        "equalize": lambda im, v: ImageOps.equalize(im),
        "posterize": lambda im, v: ImageOps.posterize(im, v),
        "solarize": lambda im, v: ImageOps.solarize(im, v),
        "rotate": lambda im, v: im.rotate(v, resample=bilinear),
        "shear_x": affine(lambda v: (1, v, 0, 0, 1, 0)),
        "shear_y": affine(lambda v: (1, 0, 0, v, 1, 0)),
        "translate_x": affine(lambda v: (1, 0, v, 0, 1, 0)),
        "translate_y": affine(lambda v: (1, 0, 0, 0, 1, v)),
        "color": lambda im, v: ImageEnhance.Color(im).enhance(v),
        "contrast": lambda im, v: ImageEnhance.Contrast(im).enhance(v),
        "brightness": lambda im, v: ImageEnhance.Brightness(im).enhance(v),
        "sharpness": lambda im, v: ImageEnhance.Sharpness(im).enhance(v),
    }


@pytest.mark.parametrize("size, severity", [(32, 3), (224, 1)])
@pytest.mark.parametrize("name", OPERATIONS + ENHANCEMENTS)
def test_ops_on_pil_images_are_the_reference_ops(name, size, severity):
    x, _ = images(1, size)
    pil = Image.fromarray(x[0])
    reference = reference_ops(size)[name]
    for level in (0.1, severity):
        strength = op_strength(name, level, size)
        for sign in (1, -1) if strength else (1,):
            value = None if strength is None else sign * strength
            if name in ("posterize", "solarize") or name in ENHANCEMENTS:
                value = strength  # unsigned operations
            ours = np.asarray(apply_op(pil, name, value), dtype=int)
            theirs = np.asarray(reference(pil, value), dtype=int)
            diff = np.abs(ours - theirs)
            # shears go through torchvision's angle: tan(atan(v)) may round one pixel by 1
            assert diff.max() <= (1 if name.startswith("shear") else 0)
            assert diff.mean() < 1e-3


def test_strongest_ops_are_torchvision_functional_ops():
    """At severity 3 on CIFAR: the uint8-tensor ops with the strongest strengths."""
    x, _ = images(1)
    t = torch.from_numpy(x[0]).permute(2, 0, 1).contiguous()
    bilinear = InterpolationMode.BILINEAR
    expected = {
        "rotate": F.rotate(t, 9.0, interpolation=bilinear),
        "shear_x": F.affine(
            t, 0.0, [0, 0], 1.0, [math.degrees(math.atan(0.09)), 0.0], bilinear, center=[0, 0]
        ),
        "shear_y": F.affine(
            t, 0.0, [0, 0], 1.0, [0.0, math.degrees(math.atan(0.09))], bilinear, center=[0, 0]
        ),
        "translate_x": F.affine(t, 0.0, [-3, 0], 1.0, [0.0, 0.0], bilinear),
        "translate_y": F.affine(t, 0.0, [0, -3], 1.0, [0.0, 0.0], bilinear),
        "posterize": F.posterize(t, 3),
        "solarize": F.solarize(t, 180),
    }
    for name, want in expected.items():
        assert torch.equal(apply_op(t, name, op_strength(name, 3, 32)), want), name
    # integer translations move the content by exactly that many pixels
    assert torch.equal(expected["translate_x"][..., :-3], t[..., 3:])
    assert torch.equal(expected["translate_y"][:, :-3], t[:, 3:])


# --- (c) mixing ------------------------------------------------------------------------------


def test_mix_is_the_weighted_float_formula():
    x, _ = images(1)
    pil = Image.fromarray(x[0])
    chains = ((("rotate", -9),), (("posterize", 3), ("solarize", 180)), (("translate_x", 2),))
    draw = AugMixDraw(torch.tensor([0.2, 0.3, 0.5]), torch.tensor(0.25), chains)
    bilinear = InterpolationMode.BILINEAR
    augmented = [
        F.rotate(pil, -9.0, interpolation=bilinear),
        F.solarize(F.posterize(pil, 3), 180),
        F.affine(pil, 0.0, [-2, 0], 1.0, [0.0, 0.0], bilinear),
    ]
    expected = 0.75 * preprocess(pil) + 0.25 * sum(
        w * preprocess(a) for w, a in zip([0.2, 0.3, 0.5], augmented, strict=True)
    )
    out = mix(pil, draw, preprocess)
    torch.testing.assert_close(out, expected)
    # mixed in float: values off the uint8 grid (torchvision's AugMix rounds to it)
    pixels = (out * 0.5 + 0.5) * 255
    assert (pixels - pixels.round()).abs().max() > 0.1


def test_view_is_not_rounded_to_uint8():
    x, y = images()
    torch.manual_seed(0)
    for implementation, off_grid in (("reference", True), ("torchvision", False)):
        (_, a1, _), _ = AugMixViews(x, y, padding=0, implementation=implementation)[0]
        pixels = (a1 * 0.5 + 0.5) * 255
        assert bool((pixels - pixels.round()).abs().max() > 1e-3) == off_grid


# --- (d) width, depth, weights ---------------------------------------------------------------


def test_width_3_random_depth_1_to_3_and_weights():
    g = torch.Generator().manual_seed(2)
    draws = [sample_augmix((32, 32), generator=g) for _ in range(500)]
    assert all(len(d.chains) == 3 and d.weights.shape == (3,) for d in draws)
    depths = [len(chain) for d in draws for chain in d.chains]
    counts = np.bincount(depths, minlength=4)
    assert counts[0] == 0 and len(counts) == 4 and np.all(np.abs(counts[1:] / 1500 - 1 / 3) < 0.05)
    weights = torch.stack([d.weights for d in draws])
    torch.testing.assert_close(weights.sum(1), torch.ones(500))
    # Dirichlet(1, 1, 1): each weight has mean 1/3; Beta(1, 1) is uniform: mean 1/2, var 1/12
    assert torch.allclose(weights.mean(0), torch.full((3,), 1 / 3), atol=0.04)
    m = torch.stack([d.m for d in draws])
    assert m.dtype == torch.float32 and 0 < m.min() and m.max() < 1
    assert abs(m.mean() - 0.5) < 0.05 and abs(m.var() - 1 / 12) < 0.015
    fixed = sample_augmix((32, 32), chain_depth=2, mixture_width=4, generator=g)
    assert [len(chain) for chain in fixed.chains] == [2, 2, 2, 2]


def test_seeded_by_a_generator_or_the_global_one():
    x, _ = images(1)
    pil = Image.fromarray(x[0])
    a = augmix(pil, preprocess, generator=torch.Generator().manual_seed(5))
    b = augmix(pil, preprocess, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    torch.manual_seed(5)
    assert torch.equal(augmix(pil, preprocess), a)


def test_views_are_the_reference_augmix_of_the_pil_image():
    x, y = images()
    torch.manual_seed(7)
    (clean, a1, a2), _ = AugMixViews(x, y, padding=0)[2]
    pil = Image.fromarray(x[2])
    torch.manual_seed(7)
    assert torch.equal(a1, augmix(pil, preprocess, severity=3))
    assert torch.equal(a2, augmix(pil, preprocess, severity=3))


# --- (e) the torchvision option --------------------------------------------------------------


def test_torchvision_implementation_is_torchvisions_augmix():
    x, y = images()
    data = AugMixViews(x, y, padding=0, implementation="torchvision")
    library = data.augmix.library
    assert isinstance(library, transforms.AugMix)
    assert (library.severity, library.mixture_width, library.chain_depth) == (3, 3, -1)
    assert library.alpha == 1.0 and library.all_ops is False
    torch.manual_seed(4)
    (_, a1, _), _ = data[0]
    torch.manual_seed(4)
    t = torch.from_numpy(x[0]).permute(2, 0, 1)
    assert torch.equal(a1, normalize(transforms.AugMix(3, 3, -1, 1.0, False)(t)))
    with pytest.raises(ValueError, match="implementation"):
        AugMixViews(x, y, implementation="timm")


# --- (f) ImageNet: severity 1 ----------------------------------------------------------------


def test_image_views_default_to_the_reference_at_severity_1():
    x, _ = images(2, 64)
    dataset = [(Image.fromarray(im), k) for k, im in enumerate(x)]
    data = ImageAugMixViews(dataset, lambda im: im, preprocess)
    assert data.augmix.implementation == "reference"
    assert data.augmix.settings == dict(
        severity=1, mixture_width=3, chain_depth=-1, alpha=1.0, all_ops=False
    )
    torch.manual_seed(8)
    (clean, a1, a2), label = data[1]
    assert label == 1 and clean.shape == a1.shape == (3, 64, 64)
    torch.testing.assert_close(clean, preprocess(dataset[1][0]))
    torch.manual_seed(8)
    assert torch.equal(a1, augmix(dataset[1][0], preprocess, severity=1))
    legacy = ImageAugMixViews(dataset, lambda im: im, preprocess, implementation="torchvision")
    assert legacy.augmix.library.severity == 1


def test_experiments_default_to_the_reference():
    from sncn.experiments import imagenet_c
    from sncn.hparams import cifar_setting

    assert cifar_setting("cifar10", "wrn", "augmix")["augmix_implementation"] == "reference"
    assert cifar_setting("cifar100", "allconv", "sncn_augmix")["augmix_implementation"] == (
        "reference"
    )
    assert "augmix_implementation" not in cifar_setting("cifar10", "wrn", "sncn")
    assert imagenet_c.SETTING["augmix_implementation"] == "reference"


def test_imagenet_augmix_run_takes_the_implementation_from_the_setting(tmp_path):
    import json

    from helpers import TINY_IMAGENET, tiny_imagenet_folder

    from sncn.experiments import imagenet_c

    data = tiny_imagenet_folder(tmp_path / "data", per_class=4)
    names = {}
    for implementation in ("reference", "torchvision"):
        overrides = {**TINY_IMAGENET, "augmix_implementation": implementation}
        metrics = imagenet_c.run(
            "augmix", tmp_path / "results", data, overrides=overrides, evaluation="none",
            progress=False,
        )  # fmt: skip
        run = tmp_path / "results" / "runs" / metrics["run"]
        assert json.loads((run / "params.json").read_text())["augmix_implementation"] == (
            implementation
        )
        names[implementation] = metrics["run"]
    assert names["reference"] != names["torchvision"]
