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
    ALL_OPERATIONS,
    ENHANCEMENTS,
    NO_OP,
    OPERATIONS,
    SIGNED,
    AugMixDraw,
    AugMixViews,
    ImageAugMixViews,
    apply_op,
    apply_op_batch,
    apply_ops_batch,
    augmix,
    augmix_loader,
    augmix_views_batch,
    batch_strengths,
    mix,
    mix_batch,
    op_strength,
    sample_augmix,
    sample_augmix_batch,
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


# --- (g) implementation="device": batched AugMix on the training device ------------------------


def device_test_batch() -> torch.Tensor:
    """48 uint8 images: noise, smooth ramps, low-contrast, two-level and constant ones."""
    x, _ = images(48)
    ramp = np.linspace(0, 1, 32)
    x[:12] = (ramp[:, None, None] * ramp[None, :, None] * 200 + 20).astype(np.uint8)
    x[12:20] = x[12:20] // 4 + 100  # levels 100-163
    x[20:24] = np.where(x[20:24] > 127, 200, 30).astype(np.uint8)
    x[24] = 77  # one level only
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def signed_strengths(name: str, n: int) -> list:
    """Strengths at levels spread over [0.1, 3), alternately signed for signed operations."""
    levels = np.linspace(0.1, 2.999, n)
    values = [op_strength(name, float(level), 32) for level in levels]
    if name in SIGNED:
        values = [-v if k % 2 else v for k, v in enumerate(values)]
    return values


@pytest.mark.parametrize("name", ALL_OPERATIONS)
def test_device_operations_are_pils_pixel_for_pixel(name):
    # Every operation on a batch, each image at its own strength, gives the pixels of the PIL
    # operation the reference applies (apply_op on a PIL image): measured exact for all 13,
    # geometric ones included (PIL's bilinear map, fill and truncation reproduced).
    x = device_test_batch()
    values = signed_strengths(name, len(x))
    strengths = torch.tensor([0.0 if v is None else float(v) for v in values], dtype=torch.float64)
    out = apply_op_batch(x, name, strengths)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    pils = [apply_op(F.to_pil_image(im), name, v) for im, v in zip(x, values, strict=True)]
    expected = torch.stack([F.pil_to_tensor(im) for im in pils])
    assert torch.equal(out, expected)


def test_device_steps_past_a_chains_depth_and_per_image_ops_in_one_batch():
    x = device_test_batch()[: len(ALL_OPERATIONS) + 1]
    ops = torch.tensor([*range(len(ALL_OPERATIONS)), NO_OP])
    levels = torch.full((len(ops),), 2.5, dtype=torch.float64)
    strengths = batch_strengths(ops, levels, (32, 32))
    out = apply_ops_batch(x, ops, strengths)
    for k, name in enumerate(ALL_OPERATIONS):
        single = apply_op_batch(x[k : k + 1], name, strengths[k : k + 1])
        assert torch.equal(out[k], single[0]), name
    assert torch.equal(out[-1], x[-1])  # NO_OP leaves the image


def test_device_strengths_are_op_strength():
    levels = torch.linspace(0.1, 2.999, 200, dtype=torch.float64)
    for k, name in enumerate(ALL_OPERATIONS):
        ops = torch.full((len(levels),), k)
        got = batch_strengths(ops, levels, (32, 24)).tolist()
        size = 32 if name == "translate_y" else 24
        want = [op_strength(name, float(level), size) or 0.0 for level in levels]
        assert got == want, name


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_device_draws_follow_dirichlet_beta_and_the_chain_distribution(alpha):
    n = 40_000
    gen = torch.Generator().manual_seed(0)
    draw = sample_augmix_batch(n, (32, 32), alpha=alpha, generator=gen)
    w, m = draw.weights.double(), draw.m.double()
    assert draw.weights.dtype == draw.m.dtype == torch.float32
    torch.testing.assert_close(w.sum(1), torch.ones(n, dtype=torch.float64))
    # Dirichlet([a] * 3): mean 1/3, variance (1/3)(2/3)/(3a + 1); Beta(a, a): 1/2, 1/(4(2a + 1))
    se = 4 / math.sqrt(n)
    assert abs(w.mean() - 1 / 3) < se and abs(w.var(0).mean() - 2 / 9 / (3 * alpha + 1)) < se
    assert abs(m.mean() - 0.5) < se and abs(m.var() - 1 / (4 * (2 * alpha + 1))) < se
    depths = (draw.ops != NO_OP).sum(-1).flatten()  # steps taken: uniform in {1, 2, 3}
    assert set(depths.unique().tolist()) == {1, 2, 3}
    assert (depths.bincount()[1:].double() / len(depths) - 1 / 3).abs().max() < se
    ops = draw.ops[draw.ops != NO_OP]
    assert ops.max() == len(OPERATIONS) - 1  # no enhancement without all_ops
    assert (ops.bincount().double() / len(ops) - 1 / 9).abs().max() < se
    rotations = draw.strengths[draw.ops == OPERATIONS.index("rotate")]
    assert set(rotations.abs().unique().tolist()) == set(range(9))  # int(U(0.1, 3) * 3)
    turned = rotations[rotations != 0]  # a sign each, - with probability 1/2
    assert abs((turned < 0).double().mean() - 0.5) < 2 * se
    fixed = sample_augmix_batch(100, (32, 32), chain_depth=2, all_ops=True,
                                generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert fixed.ops.shape == (100, 3, 2) and (fixed.ops != NO_OP).all()
    assert fixed.ops.max() == len(ALL_OPERATIONS) - 1


def test_device_mixing_is_the_reference_mix_of_the_same_chains():
    # One batched draw, turned into the reference's AugMixDraw per image and mixed by `mix` on
    # PIL images: the same normalised float views.
    x = device_test_batch()[:16]
    draw = sample_augmix_batch(16, (32, 32), all_ops=True,
                               generator=torch.Generator().manual_seed(2))  # fmt: skip
    views = mix_batch(x, draw, all_ops=True)
    for b in range(16):
        chains = tuple(
            tuple((ALL_OPERATIONS[op], _step_strength(ALL_OPERATIONS[op], s))
                  for op, s in zip(draw.ops[b, i].tolist(), draw.strengths[b, i].tolist(),
                                   strict=True) if op != NO_OP)
            for i in range(3)
        )  # fmt: skip
        reference = mix(F.to_pil_image(x[b]), AugMixDraw(draw.weights[b], draw.m[b], chains),
                        preprocess)  # fmt: skip
        torch.testing.assert_close(views[b], reference, rtol=0, atol=1e-6)


def _step_strength(name: str, strength: float) -> float | int | None:
    """A batched strength in the type op_strength gives it (None, int or float)."""
    if name in ("autocontrast", "equalize"):
        return None
    if name in ("posterize", "rotate", "solarize", "translate_x", "translate_y"):
        return int(strength)
    return strength


def test_device_views_are_finite_normalised_and_seeded():
    x = device_test_batch()
    clean, a1, a2 = augmix_views_batch(x, torch.Generator().manual_seed(0), padding=0)
    for view in (clean, a1, a2):
        assert view.shape == x.shape and view.dtype == torch.float32
        assert view.isfinite().all() and view.min() >= -1 and view.max() <= 1
    torch.testing.assert_close(clean, normalize(x))  # no crop/flip: the clean view is the image
    assert not torch.equal(a1, clean) and not torch.equal(a1, a2)
    again = augmix_views_batch(x, torch.Generator().manual_seed(0), padding=0)
    assert all(torch.equal(u, v) for u, v in zip((clean, a1, a2), again, strict=True))
    other = augmix_views_batch(x, torch.Generator().manual_seed(1), padding=0)
    assert not torch.equal(other[1], a1)
    cropped = augmix_views_batch(x, torch.Generator().manual_seed(0))  # pad-4 crop and flip
    assert not torch.equal(cropped[0], clean) and cropped[0].shape == x.shape


def test_device_is_not_a_per_image_implementation():
    x, y = images()
    with pytest.raises(ValueError, match="whole batches"):
        AugMixViews(x, y, implementation="device")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_views_on_cuda_match_the_cpu():
    # The same draw (made on the CPU) mixed on CUDA and on the CPU: the same chains (uint8,
    # exact) and views within float rounding; a CUDA generator gives finite views there.
    x = device_test_batch()
    draw = sample_augmix_batch(48, (32, 32), all_ops=True,
                               generator=torch.Generator().manual_seed(3))  # fmt: skip
    for name in ALL_OPERATIONS:
        strengths = torch.tensor([float(v or 0) for v in signed_strengths(name, 48)],
                                 dtype=torch.float64)  # fmt: skip
        cpu = apply_op_batch(x, name, strengths)
        assert torch.equal(apply_op_batch(x.cuda(), name, strengths).cpu(), cpu), name
    torch.testing.assert_close(mix_batch(x.cuda(), draw, all_ops=True).cpu(),
                               mix_batch(x, draw, all_ops=True), rtol=0, atol=1e-6)  # fmt: skip
    gen = torch.Generator(device="cuda").manual_seed(0)
    views = augmix_views_batch(x.cuda(), gen)
    assert all(v.is_cuda and v.isfinite().all() for v in views)


def test_cifar_run_trains_with_device_views(tmp_path, monkeypatch):
    import json

    from helpers import fake_cifar

    from sncn.experiments import cifar_c

    fake_cifar(monkeypatch, tmp_path / "c")
    budget = dict(
        epochs=1,
        train_subset=20,
        test_subset=10,
        batch_size=10,
        root=tmp_path,
        model_kwargs={"depth": 10, "widen_factor": 1},
        device="cpu",
        progress=False,
    )
    batches = cifar_c.augmix_batches(*cifar_c.load_cifar("cifar10", "train"), 10, "cpu")
    (clean, a1, a2), labels = next(iter(batches(0, torch.Generator().manual_seed(0))))
    assert clean.shape == a1.shape == a2.shape == (10, 3, 8, 8) and labels.shape == (10,)
    metrics = cifar_c.run("cifar10", "wrn", "augmix", tmp_path / "out",
                          overrides={"augmix_implementation": "device"}, **budget)  # fmt: skip
    (run,) = (tmp_path / "out" / "runs").iterdir()
    assert json.loads((run / "params.json").read_text())["augmix_implementation"] == "device"
    assert metrics["steps"] == 2 and math.isfinite(metrics["history"][-1]["loss"])
