"""Tests for sncn.corruptions: each corruption's defining property, the tables, make_c, errors."""

from __future__ import annotations

import hashlib
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import gen
from PIL import Image

import sncn.corruptions as C
import sncn.data as data_package
from sncn import cli
from sncn.corruptions import CORRUPTIONS, TABLES, corrupt
from sncn.data import vision

RANDOM = sorted(C.RANDOM_CORRUPTIONS)


def _frost_available() -> bool:
    try:
        C.find_frost_dir()
    except FileNotFoundError:
        return False
    return True


FROST = pytest.mark.skipif(not _frost_available(), reason="frost photographs not found")


def _names(names=CORRUPTIONS):
    """Parametrize over names, skipping frost where its photographs are missing."""
    return [pytest.param(n, marks=FROST) if n == "frost" else n for n in names]


def smooth_images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    """uint8 ``(n, 3, size, size)`` images with some structure (upsampled noise)."""
    low = torch.randint(0, 256, (n, 3, 8, 8), generator=gen(seed)).float()
    up = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    return up.round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return smooth_images()


# --------------------------------------------------------------------------------------------
# Names and tables
# --------------------------------------------------------------------------------------------


def test_corruptions_in_paper_order():
    assert CORRUPTIONS == (
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "defocus_blur",
        "glass_blur",
        "motion_blur",
        "zoom_blur",
        "snow",
        "frost",
        "fog",
        "brightness",
        "contrast",
        "elastic_transform",
        "pixelate",
        "jpeg_compression",
    )
    assert sum(C.GROUPS.values(), ()) == CORRUPTIONS


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_tables_have_five_severities_for_every_corruption(table):
    assert set(TABLES[table]) == set(CORRUPTIONS)
    assert all(len(TABLES[table][n]) == 5 for n in CORRUPTIONS)


def test_table_numbers_match_the_reference_generators():
    cifar, imnet = TABLES["cifar"], TABLES["imagenet"]
    assert cifar["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert imnet["gaussian_noise"] == (0.08, 0.12, 0.18, 0.26, 0.38)
    assert cifar["shot_noise"] == (500, 250, 100, 75, 50)
    assert imnet["shot_noise"] == (60, 25, 12, 5, 3)
    assert cifar["impulse_noise"] == (0.01, 0.02, 0.03, 0.05, 0.07)
    assert imnet["impulse_noise"] == (0.03, 0.06, 0.09, 0.17, 0.27)
    assert cifar["defocus_blur"][4] == (1.5, 0.1)
    assert imnet["defocus_blur"][0] == (3, 0.1)
    assert cifar["glass_blur"][3] == (0.25, 1, 2)
    assert imnet["glass_blur"][4] == (1.5, 4, 2)
    assert cifar["motion_blur"][4] == (9, 2.5)
    assert imnet["motion_blur"][4] == (20, 15)
    # np.arange(1, 1.06, 0.01) overshoots to include 1.06
    assert cifar["zoom_blur"][0].factors == (1.0, 1.01, 1.02, 1.03, 1.04, 1.05, 1.06)
    assert [len(z.factors) for z in cifar["zoom_blur"]] == [7, 12, 16, 21, 26]
    assert [len(z.factors) for z in imnet["zoom_blur"]] == [12, 16, 11, 13, 11]
    assert cifar["snow"][2] == (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9)
    assert imnet["snow"][4] == (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)
    assert cifar["frost"][4] == (0.75, 0.45, 0.2)
    assert imnet["frost"][0] == (1, 0.4, 1.0)
    assert cifar["fog"][4] == (1.5, 1.75, 32)
    assert imnet["fog"][0] == (1.5, 2, 256)
    assert cifar["brightness"] == (0.05, 0.1, 0.15, 0.2, 0.3)
    assert imnet["brightness"] == (0.1, 0.2, 0.3, 0.4, 0.5)
    assert cifar["contrast"] == (0.75, 0.5, 0.4, 0.3, 0.15)
    assert imnet["contrast"] == (0.4, 0.3, 0.2, 0.1, 0.05)
    assert np.allclose(cifar["elastic_transform"][1], (1.6, 6.4, 2.24))
    assert np.allclose(imnet["elastic_transform"][0], (488, 170.8, 24.4))
    assert cifar["pixelate"] == (0.95, 0.9, 0.85, 0.75, 0.65)
    assert imnet["pixelate"] == (0.6, 0.5, 0.4, 0.3, 0.25)
    assert cifar["jpeg_compression"] == (80, 65, 58, 50, 40)
    assert imnet["jpeg_compression"] == (25, 18, 15, 10, 7)


def test_zoom_factors_are_the_unrounded_np_arange_values():
    cifar_stops = (1.06, 1.11, 1.16, 1.21, 1.26)
    imnet_ranges = [(1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)]
    for z, stop in zip(TABLES["cifar"]["zoom_blur"], cifar_stops, strict=True):
        assert z.factors == tuple(np.arange(1, stop, 0.01).tolist())
    for z, (stop, step) in zip(TABLES["imagenet"]["zoom_blur"], imnet_ranges, strict=True):
        assert z.factors == tuple(np.arange(1, stop, step).tolist())
    assert TABLES["cifar"]["zoom_blur"][4].factors[-1] == 1.2500000000000002  # not 1.25
    assert TABLES["imagenet"]["zoom_blur"][4].factors[-1] == 1.3000000000000003


def test_default_table_follows_image_size():
    assert C.default_table(32, 32) == "cifar"
    assert C.default_table(224, 224) == "imagenet"
    x = torch.rand(1, 3, 96, 96, dtype=torch.float64)
    y = corrupt(x, "contrast", 1)  # imagenet: factor 0.4
    mean = x.mean((2, 3), keepdim=True)
    torch.testing.assert_close(y - mean, 0.4 * (x - mean))


# --------------------------------------------------------------------------------------------
# The front door: shapes, dtypes, determinism, errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", _names())
def test_shape_dtype_and_range(name, images):
    for x in (images, images[0]):
        y = corrupt(x, name, 3, generator=gen())
        assert y.shape == x.shape and y.dtype == torch.uint8
        f = corrupt(x.float() / 255, name, 3, generator=gen())
        assert f.shape == x.shape and f.dtype == torch.float32
        assert f.min() >= 0 and f.max() <= 1
    h = corrupt(images.to(torch.float64) / 255, name, 1, generator=gen())
    assert h.dtype == torch.float64


@pytest.mark.parametrize("name", _names())
def test_uint8_and_float_inputs_agree(name, images):
    a = corrupt(images, name, 4, generator=gen(1)).float()
    b = corrupt(images.float() / 255, name, 4, generator=gen(1)) * 255
    # uint8 output is the float result rounded; pixelate rounds between passes as Pillow does
    assert (a - b).abs().max() <= (1.0 if name == "pixelate" else 0.5 + 1e-3)


@pytest.mark.parametrize("name", _names(RANDOM))
def test_seeded_determinism(name, images):
    a = corrupt(images, name, 5, generator=gen(7))
    b = corrupt(images, name, 5, generator=gen(7))
    c = corrupt(images, name, 5, generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", _names(sorted(set(CORRUPTIONS) - C.RANDOM_CORRUPTIONS)))
def test_deterministic_corruptions_ignore_the_generator(name, images):
    assert torch.equal(
        corrupt(images, name, 2, generator=gen(1)), corrupt(images, name, 2, generator=gen(2))
    )


MONOTONE = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "motion_blur",
    "zoom_blur",
    "brightness",
    "contrast",
    "jpeg_compression",
]


@pytest.mark.parametrize("table,size", [("cifar", 32), ("imagenet", 64)])
@pytest.mark.parametrize("name", MONOTONE)
def test_change_grows_with_severity(name, table, size):
    x = smooth_images(8, size)
    change = [
        (corrupt(x, name, s, table=table, generator=gen(1)).float() - x.float()).abs().mean()
        for s in C.SEVERITIES
    ]
    assert all(change[i] <= change[i + 1] + 0.05 for i in range(4)), change
    assert change[4] > change[0]


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(2, 4, 32, 32),
        torch.zeros(32, 32),
        torch.zeros(1, 1, 3, 32, 32),
        torch.zeros(2, 32, 32, 3),
    ],
)
def test_bad_shape_raises(bad):
    with pytest.raises(ValueError, match=r"\(3, H, W\) or \(N, 3, H, W\)"):
        corrupt(bad, "contrast", 1)


def test_bad_inputs_raise_with_what_was_expected():
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="expected a torch.Tensor"):
        corrupt(np.zeros((1, 3, 32, 32)), "contrast", 1)
    with pytest.raises(ValueError, match="at least 8 x 8 px"):
        corrupt(torch.zeros(3, 4, 32), "contrast", 1)
    with pytest.raises(ValueError, match="uint8 or floating-point"):
        corrupt(x.to(torch.int32), "contrast", 1)
    with pytest.raises(ValueError, match="gaussian_noise, shot_noise.*jpeg_compression"):
        corrupt(x, "rain", 1)
    for severity in (0, 6, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"severity must be an integer in 1\.\.5"):
            corrupt(x, "contrast", severity)
    with pytest.raises(ValueError, match="cifar, imagenet"):
        corrupt(x, "contrast", 1, table="tiny")
    corrupt(x, "contrast", np.int64(5))  # numpy integers are fine


# --------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_gaussian_noise_has_the_table_std(table):
    x = torch.full((16, 3, 32, 32), 0.5, dtype=torch.float64)
    for s, std in enumerate(TABLES[table]["gaussian_noise"], 1):
        d = (corrupt(x, "gaussian_noise", s, table=table, generator=gen(s)) - x).abs()
        # |N(0, std)| < std with probability 0.6827 (clipping at 0 and 1 is farther away)
        assert abs((d < std).double().mean().item() - 0.6827) < 0.01
        assert abs((d < std / 2).double().mean().item() - 0.3829) < 0.01


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_shot_noise_is_poisson_with_the_table_rate(table):
    m = 0.2
    x = torch.full((16, 3, 32, 32), m, dtype=torch.float64)
    for s, rate in enumerate(TABLES[table]["shot_noise"], 1):
        y = corrupt(x, "shot_noise", s, table=table, generator=gen(s))
        counts = y * rate
        torch.testing.assert_close(counts, counts.round())  # y = k / rate
        assert abs(y.mean().item() - m) < 0.01 * m + 0.002
        assert abs(y.var().item() / (m / rate) - 1) < 0.05  # variance = mean / rate


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_impulse_noise_hits_the_table_fraction(table):
    x = torch.full((16, 3, 32, 32), 0.5)
    for s, amount in enumerate(TABLES[table]["impulse_noise"], 1):
        y = corrupt(x, "impulse_noise", s, table=table, generator=gen(s))
        hit = y != 0.5
        assert set(y[hit].unique().tolist()) <= {0.0, 1.0}
        assert abs(hit.float().mean().item() - amount) < 0.1 * amount + 0.002
        assert abs((y[hit] == 1).float().mean().item() - 0.5) < 0.05  # salt vs pepper
    # channels are hit independently, as scikit-image does it
    y = corrupt(x, "impulse_noise", 5, table="imagenet", generator=gen())
    per_pixel = (y != 0.5).sum(1)
    assert (per_pixel == 1).any() and (per_pixel == 3).any()


# --------------------------------------------------------------------------------------------
# Blur
# --------------------------------------------------------------------------------------------


def test_disk_kernel_matches_opencv_numbers():
    k = C.disk_kernel(0.5, 0.6)  # one-pixel disk, cv2.GaussianBlur 3x3 sigma 0.6 (float32)
    assert k.shape == (3, 3)
    expected = [[0.0276818089, 0.1110148951, 0.0276818089]]
    expected += [[0.1110148951, 0.4452132285, 0.1110148951], expected[0]]
    torch.testing.assert_close(k, torch.tensor(expected, dtype=torch.float64), atol=1e-7, rtol=0)
    k = C.disk_kernel(4, 0.5)
    row = [0.0017106022, 0.0148133468, 0.0199451521] + [0.0204081628] * 5
    row += [0.0199451521, 0.0148133468, 0.0017106022]
    c = k.shape[0] // 2
    torch.testing.assert_close(
        k[c, c - 5 : c + 6], torch.tensor(row, dtype=torch.float64), atol=1e-7, rtol=0
    )
    for table in ("cifar", "imagenet"):
        for p in TABLES[table]["defocus_blur"]:
            k = C.disk_kernel(*p)
            torch.testing.assert_close(k, k.T)
            if p.radius < 8:
                assert math.isclose(k.sum().item(), 1, abs_tol=1e-6)
    # radius 8 and 10: the disk touches its grid and the reflect-101 anti-aliasing folds mass
    # back in, so the reference's kernels sum to more than one (as cv2 computes them)
    assert math.isclose(C.disk_kernel(8, 0.5).sum().item(), 1.0129754, abs_tol=1e-6)
    assert math.isclose(C.disk_kernel(10, 0.5).sum().item(), 1.0107858, abs_tol=1e-6)


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_defocus_impulse_response_is_the_disk_kernel(table):
    x = torch.zeros(1, 3, 48, 48, dtype=torch.float64)
    x[..., 24, 24] = 1
    for s, p in enumerate(TABLES[table]["defocus_blur"], 1):
        y = corrupt(x, "defocus_blur", s, table=table)
        k = C.disk_kernel(*p)
        r = k.shape[0] // 2
        torch.testing.assert_close(y[0, 1, 24 - r : 25 + r, 24 - r : 25 + r], k)
        assert math.isclose(y[0, 1].sum().item(), k.sum().item(), abs_tol=1e-9)


def test_gaussian_blur_matches_scipy_kernel_and_nearest_border():
    # sigma 0.4, truncate 4 -> radius int(2.1) = 2: taps exp(-t^2 / 0.32) for t in -2..2
    t = torch.arange(-2, 3, dtype=torch.float64)
    taps = torch.exp(-(t**2) / (2 * 0.4**2))
    taps /= taps.sum()
    torch.testing.assert_close(C.gaussian_kernel1d(0.4), taps)
    assert C.gaussian_kernel1d(0.05).numel() == 1  # radius int(0.7) = 0: identity
    x = torch.rand(1, 6, 7, dtype=torch.float64, generator=gen())
    xp = F.pad(x[None], (2, 2, 2, 2), mode="replicate")[0]  # scikit-image's default "nearest"
    rows = sum(taps[i] * xp[:, i : i + 6, 2:9] for i in range(5))
    rows = F.pad(rows[None], (2, 2, 0, 0), mode="replicate")[0]
    expected = sum(taps[i] * rows[:, :, i : i + 7] for i in range(5))
    torch.testing.assert_close(C.gaussian_blur(x, 0.4), expected)


def _reference_glass_loop(x, d, iterations, offsets):
    """The reference's nested loop and its tuple swap, literally, on an (H, W, 3) array."""
    x = x.copy()
    h, w = x.shape[:2]
    for i in range(iterations):
        k = 0
        for hh in range(h - d, d, -1):
            for ww in range(w - d, d, -1):
                dx, dy = offsets[i, k].tolist()
                k += 1
                h_prime, w_prime = hh + dy, ww + dx
                # swap
                x[hh, ww], x[h_prime, w_prime] = x[h_prime, w_prime], x[hh, ww]
    return x


def _exchange_loop(h, w, d, iterations, offsets):
    """The same loop on a 2-D array of positions, where the tuple swap exchanges scalars."""
    img = np.arange(h * w).reshape(h, w)
    for it in range(iterations):
        k = 0
        for r in range(h - d, d, -1):
            for c in range(w - d, d, -1):
                dx, dy = offsets[it, k].tolist()
                k += 1
                img[r, c], img[r + dy, c + dx] = img[r + dy, c + dx], img[r, c]
    return img.reshape(-1)


def _glass_cases():
    # (h, w, max_delta, iterations): every (max_delta, iterations) of both tables, at the table's
    # size and at small non-square sizes, where the borders are a larger share
    cases = [(32, 32, d, its) for _, d, its in TABLES["cifar"]["glass_blur"]]
    cases += [(17, 13, d, its) for _, d, its in TABLES["cifar"]["glass_blur"]]
    cases += [(23, 29, d, its) for _, d, its in TABLES["imagenet"]["glass_blur"]]
    return sorted(set(cases)) + [(224, 224, 4, 2)]


@pytest.mark.parametrize("h,w,d,iterations", _glass_cases())
def test_glass_shuffle_equals_the_reference_loop_on_hwc_images(h, w, d, iterations):
    p = (h - 2 * d) * (w - 2 * d)
    offsets = torch.randint(-d, d, (2, iterations, p, 2), generator=gen(h + d))
    src = C.glass_shuffle(h, w, d, iterations, 2, offsets=offsets)
    x = np.random.default_rng(h).random((2, h, w, 3))  # float64, as the reference's arrays
    for b in range(2):
        expected = _reference_glass_loop(x[b], d, iterations, offsets[b].numpy())
        np.testing.assert_array_equal(
            x[b].reshape(h * w, 3)[src[b].numpy()], expected.reshape(-1, 3)
        )


def test_glass_tuple_swap_copies_on_hwc_arrays():
    # the statement the reference runs: on (H, W, 3) both sides are views, so it is a copy
    x = np.arange(12.0).reshape(2, 2, 3)
    x[0, 0], x[1, 1] = x[1, 1], x[0, 0]
    np.testing.assert_array_equal(x[0, 0], x[1, 1])
    np.testing.assert_array_equal(x[1, 1], [9.0, 10.0, 11.0])
    src = C.glass_shuffle(
        4, 4, 1, 1, 1, offsets=torch.tensor([[[[0, 0], [0, 0], [-1, 0], [0, -1]]]])
    )
    # visits (3, 3), (3, 2), (2, 3), (2, 2) with (dx, dy) as given: (2, 3) takes the value of
    # (2, 2), then (2, 2) takes that of (1, 2); the old (2, 3) is lost, the (1, 2) doubled
    assert src[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 6, 10, 12, 13, 14, 15]
    exchanged = C.glass_shuffle(
        4, 4, 1, 1, 1, offsets=torch.tensor([[[[0, 0], [0, 0], [-1, 0], [0, -1]]]]), swap="exchange"
    )
    assert exchanged[0].tolist() == [0, 1, 2, 3, 4, 5, 11, 7, 8, 9, 6, 10, 12, 13, 14, 15]


@pytest.mark.parametrize("h,w,d,iterations", [(12, 12, 1, 2), (13, 11, 2, 3), (16, 15, 3, 1)])
def test_glass_exchange_equals_the_sequential_swaps_of_scalars(h, w, d, iterations):
    p = (h - 2 * d) * (w - 2 * d)
    offsets = torch.randint(-d, d, (3, iterations, p, 2), generator=gen(h))
    perm = C.glass_shuffle(h, w, d, iterations, 3, offsets=offsets, swap="exchange")
    for b in range(3):
        np.testing.assert_array_equal(
            perm[b].numpy(), _exchange_loop(h, w, d, iterations, offsets[b])
        )
        assert torch.equal(perm[b].sort().values, torch.arange(h * w))


def test_glass_shuffle_draws_the_offsets_in_visit_order():
    d, its = 2, 3
    drawn = torch.randint(-d, d, (2, its, 16 * 15, 2), generator=gen(7))
    for swap in ("copy", "exchange"):
        a = C.glass_shuffle(20, 19, d, its, 2, generator=gen(7), swap=swap)
        assert torch.equal(a, C.glass_shuffle(20, 19, d, its, 2, offsets=drawn, swap=swap))


@pytest.mark.parametrize("swap", ["copy", "exchange"])
def test_glass_blur_is_blur_shuffle_blur(swap):
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=gen())
    sigma, d, its = TABLES["cifar"]["glass_blur"][4]
    y = C.glass_blur(x, sigma, d, its, generator=gen(3), swap=swap)
    src = C.glass_shuffle(32, 32, d, its, 2, generator=gen(3), swap=swap)
    b = C.gaussian_blur(x, sigma).reshape(2, 3, -1)
    expected = C.gaussian_blur(b.gather(2, src[:, None].expand(2, 3, -1)).reshape(x.shape), sigma)
    torch.testing.assert_close(y, expected.clamp(0, 1))
    if swap == "copy":  # the default: what corrupt() does; pixels are duplicated and lost
        torch.testing.assert_close(corrupt(x, "glass_blur", 5, table="cifar", generator=gen(3)), y)
    for row in src:
        assert (row.unique().numel() == 32 * 32) == (swap == "exchange")


def test_glass_shuffle_rejects_unknown_swap():
    with pytest.raises(ValueError, match="swap"):
        C.glass_shuffle(8, 8, 1, 1, 1, swap="rotate")


def test_motion_taps_follow_imagemagick():
    w, dx, dy = C.motion_taps(6, 1.5, torch.tensor([0.0, 90.0, 45.0, -30.0]))
    assert w.numel() == 13  # 2 * ceil(6) + 1
    i = torch.arange(13, dtype=torch.float64)
    torch.testing.assert_close(w, torch.exp(-(i**2) / 4.5) / torch.exp(-(i**2) / 4.5).sum())
    assert torch.equal(dx[0], torch.arange(13)) and torch.equal(dy[0], torch.zeros(13).long())
    assert torch.equal(dx[1], torch.zeros(13).long()) and torch.equal(dy[1], torch.arange(13))
    diag = torch.ceil(i * math.sqrt(0.5) - 0.5).long()
    assert torch.equal(dx[2], diag) and torch.equal(dy[2], diag)
    assert (dy[3] <= 0).all() and (dx[3] >= 0).all()
    assert C.motion_taps(6.5, 1, torch.zeros(1))[0].numel() == 15


@pytest.mark.parametrize("angle", [0.0, 30.0, -45.0])
def test_motion_blur_impulse_response_is_the_taps(angle):
    x = torch.zeros(1, 3, 64, 64, dtype=torch.float64)
    x[..., 32, 32] = 1
    radius, sigma = TABLES["imagenet"]["motion_blur"][1]
    y = C.motion_blur(x, radius, sigma, angle=torch.tensor([angle]))
    w, dx, dy = C.motion_taps(radius, sigma, torch.tensor([angle]))
    expected = torch.zeros(64, 64, dtype=torch.float64)
    # out(p) = sum_i w_i x(p + off_i): the impulse at q shows up at q - off_i
    expected.index_put_((32 - dy[0], 32 - dx[0]), w, accumulate=True)
    torch.testing.assert_close(y[0, 0], expected)


def test_motion_blur_repeats_edge_pixels():
    x = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    x[..., :, -1] = 1  # right column white: reads beyond it repeat it
    y = C.motion_blur(x, 6, 100.0, angle=torch.tensor([0.0]))  # nearly flat weights
    w, _, _ = C.motion_taps(6, 100.0, torch.zeros(1))
    # column W - 13 + t reads W - 13 + t + i (clamped): taps i >= 12 - t see the white column
    torch.testing.assert_close(y[0, 0, 0, -13:], w.flip(0).cumsum(0))


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_motion_blur_keeps_mass_and_kernel_length(table):
    x = torch.zeros(4, 3, 96, 96, dtype=torch.float64)
    x[..., 48, 48] = 1
    for s, (radius, _) in enumerate(TABLES[table]["motion_blur"], 1):
        y = corrupt(x, "motion_blur", s, table=table, generator=gen(s))[:, 0]
        torch.testing.assert_close(y.sum((1, 2)), torch.ones(4, dtype=torch.float64))
        k = 2 * math.ceil(radius) + 1
        assert ((y > 0).sum((1, 2)) <= k).all()
        rows, cols = torch.nonzero(y[0] > 1e-12, as_tuple=True)
        # angle in [-45, 45]: the streak runs left of the impulse, within K - 1 pixels
        assert (cols <= 48).all() and (48 - cols).max() <= k - 1
        assert (rows - 48).abs().max() <= (48 - cols).max()


def test_clipped_zoom_coordinates_follow_scipy_zoom():
    # n = 4, zoom 2: centre 2 px from row 1, zoomed to 4 with corners aligned
    torch.testing.assert_close(
        C.clipped_zoom_coords(4, 2.0), torch.tensor([1, 4 / 3, 5 / 3, 2], dtype=torch.float64)
    )
    # n = 32, zoom 1.06: ch = ceil(30.19) = 31, zs = round(32.86) = 33, trim 0, top 0
    torch.testing.assert_close(
        C.clipped_zoom_coords(32, 1.06), torch.arange(32, dtype=torch.float64) * 30 / 32
    )
    # CIFAR's last factor 1.2500000000000002: ch = ceil(25.6) = 26 from row 3, zoomed to
    # round(32.50000000000001) = 33 px (1.25 would give round(32.5) = 32), trim 0
    last = TABLES["cifar"]["zoom_blur"][4].factors[-1]
    torch.testing.assert_close(
        C.clipped_zoom_coords(32, last), 3 + torch.arange(32, dtype=torch.float64) * 25 / 32
    )
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=gen())
    torch.testing.assert_close(C.clipped_zoom(x, 1.0), x)


def test_zoom_blur_is_the_mean_of_the_table_zooms():
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=gen())
    for s, z in enumerate(TABLES["cifar"]["zoom_blur"], 1):
        expected = (x + sum(C.clipped_zoom(x, f) for f in z.factors)) / (len(z.factors) + 1)
        y = corrupt(x, "zoom_blur", s, table="cifar")
        torch.testing.assert_close(y, expected.clamp(0, 1), atol=1e-6, rtol=0)
        # the large-image path (grid_sample) gives the same
        sampled = C.zoom_blur(x.float(), z.factors, dense_max=0).double()
        torch.testing.assert_close(sampled, expected.clamp(0, 1), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------
# Weather
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_snow_only_brightens(table, images):
    x = images.float() / 255
    for s in C.SEVERITIES:
        y = corrupt(x, "snow", s, table=table, generator=gen(s))
        assert (y >= x - 1e-6).all()
        assert y.mean() > x.mean()


@FROST
@pytest.mark.parametrize("table,size", [("cifar", 32), ("imagenet", 224)])
def test_frost_adds_a_crop_of_a_frost_photograph(table, size):
    image_w, frost_w, rescale = TABLES[table]["frost"][4]
    overlays = C._frost_overlays(str(C.find_frost_dir()), rescale)
    x = torch.zeros(3, 3, size, size, dtype=torch.float64)  # black: output = frost_w * overlay
    y = corrupt(x, "frost", 5, table=table, generator=gen()).permute(0, 2, 3, 1).numpy()
    for out in y * 255 / frost_w:
        found = False
        for ov in overlays:
            ov = ov.astype(np.float64)
            rows = np.lib.stride_tricks.sliding_window_view(ov[:, :, 0], size, axis=1)
            close = np.abs(rows[: ov.shape[0] - size + 1] - out[0, :, 0]).max(-1) < 1e-6
            for r, c in np.argwhere(close):
                found |= np.allclose(ov[r : r + size, c : c + size], out, atol=1e-6, rtol=0)
        assert found
    # image weight: a white image under frost keeps image_w of its value (at least)
    white = torch.full((2, 3, size, size), 1.0)
    assert (corrupt(white, "frost", 5, table=table, generator=gen()) >= image_w - 1e-6).all()


def test_frost_photographs_ship_with_the_package(tmp_path, monkeypatch):
    """With an empty data root and no imagecorruptions, frost uses sncn's own copy (the
    reference's bytes, by checksum)."""
    monkeypatch.setenv("SNCN_DATA", str(tmp_path))
    monkeypatch.setattr(C.importlib.util, "find_spec", lambda name: None)
    assert C.find_frost_dir() == C.PACKAGED_FROST
    for name in C.FROST_FILES:
        digest = hashlib.sha256((C.PACKAGED_FROST / name).read_bytes()).hexdigest()
        assert digest == C.FROST_SHA256[name], name
    assert corrupt(torch.zeros(1, 3, 32, 32), "frost", 1, generator=gen()).shape == (1, 3, 32, 32)


def test_frost_without_photographs_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SNCN_DATA", str(tmp_path))
    monkeypatch.setattr(C.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(C, "PACKAGED_FROST", tmp_path / "not-installed")
    with pytest.raises(FileNotFoundError, match="frost1.png.*pip install imagecorruptions"):
        corrupt(torch.zeros(1, 3, 32, 32), "frost", 1)


def test_plasma_fractal_is_normalised_and_seeded():
    p = C.plasma_fractal(4, 32, 2.0, generator=gen(1))
    assert p.shape == (4, 32, 32)
    torch.testing.assert_close(p.amin((1, 2)), torch.zeros(4))
    torch.testing.assert_close(p.amax((1, 2)), torch.ones(4))
    assert torch.equal(p, C.plasma_fractal(4, 32, 2.0, generator=gen(1)))
    # rougher (smaller decay) maps change more between neighbours
    smooth = C.plasma_fractal(64, 32, 3.0, generator=gen(2)).diff(dim=-1).abs().mean()
    rough = C.plasma_fractal(64, 32, 1.4, generator=gen(2)).diff(dim=-1).abs().mean()
    assert rough > 1.5 * smooth
    with pytest.raises(ValueError, match="power of two"):
        C.plasma_fractal(1, 24, 2.0)


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_fog_adds_fractal_and_keeps_the_maximum(table, images):
    x = images.double() / 255
    for s, (strength, _, _) in enumerate(TABLES[table]["fog"], 1):
        y = corrupt(x, "fog", s, table=table, generator=gen(s))
        max_val = x.amax((1, 2, 3), keepdim=True)
        assert (y <= max_val + 1e-9).all()
        # undo the rescale: what was added is strength * fractal, the same on every channel
        added = y * (max_val + strength) / max_val - x
        torch.testing.assert_close(added[:, 0], added[:, 2])
        frac = added[:, 0] / strength
        assert frac.min() >= -1e-9 and frac.max() <= 1 + 1e-9


# --------------------------------------------------------------------------------------------
# Digital
# --------------------------------------------------------------------------------------------


def _hsv(x):
    v = x.amax(1)
    s = torch.where(v > 0, (v - x.amin(1)) / v.clamp_min(1e-12), torch.zeros_like(v))
    return s, v


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_brightness_adds_the_table_amount_to_hsv_value(table):
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64, generator=gen())
    x[0, :, 0, 0] = 0  # black pixel becomes grey
    for s, shift in enumerate(TABLES[table]["brightness"], 1):
        y = corrupt(x, "brightness", s, table=table)
        s_in, v_in = _hsv(x)
        s_out, v_out = _hsv(y)
        torch.testing.assert_close(v_out, (v_in + shift).clamp(max=1))
        keep = v_in > 0
        torch.testing.assert_close(s_out[keep], s_in[keep])
        torch.testing.assert_close(y[0, :, 0, 0], torch.full((3,), shift, dtype=torch.float64))


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_contrast_scales_around_the_channel_mean(table):
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64, generator=gen())
    mean = x.mean((2, 3), keepdim=True)
    for s, factor in enumerate(TABLES[table]["contrast"], 1):
        y = corrupt(x, "contrast", s, table=table)
        torch.testing.assert_close(y - mean, factor * (x - mean))


def test_elastic_with_zero_parameters_is_the_identity():
    x = torch.rand(2, 3, 20, 24, dtype=torch.float64, generator=gen())
    y = C.elastic_transform(x, 0.0, 0.0, 0.0, generator=gen())
    torch.testing.assert_close(y, x)


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_elastic_moves_pixels_but_keeps_flat_images(table, images):
    flat = torch.full((2, 3, 32, 32), 0.3, dtype=torch.float64)
    x = images.double() / 255
    for s in C.SEVERITIES:
        torch.testing.assert_close(
            corrupt(flat, "elastic_transform", s, table=table, generator=gen(s)), flat
        )
        assert not torch.equal(corrupt(x, "elastic_transform", s, table=table, generator=gen(s)), x)


def _pil_pixelate(x: np.ndarray, factor: float) -> np.ndarray:
    size = x.shape[0]
    small = Image.fromarray(x).resize((int(size * factor),) * 2, Image.BOX)
    return np.asarray(small.resize((size, size), Image.BOX))


def test_pixelate_equals_pillow_on_non_square_images():
    # rows and columns get different runs; 0.5 and 0.25 take the integral-factor path
    x = torch.randint(0, 256, (3, 3, 40, 56), dtype=torch.uint8, generator=gen(1))
    for factor in (0.95, 0.6, 0.5, 0.3, 0.25):
        y = C.pixelate(x, factor).permute(0, 2, 3, 1).numpy()
        for a, b in zip(x.permute(0, 2, 3, 1).numpy(), y, strict=True):
            small = Image.fromarray(a).resize((int(56 * factor), int(40 * factor)), Image.BOX)
            np.testing.assert_array_equal(b, np.asarray(small.resize((56, 40), Image.BOX)))


@pytest.mark.parametrize("table,size,n", [("cifar", 32, 8), ("imagenet", 224, 1)])
def test_pixelate_equals_pillow_box_down_and_up(table, size, n):
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen())
    for s, factor in enumerate(TABLES[table]["pixelate"], 1):
        y = corrupt(x, "pixelate", s, table=table).permute(0, 2, 3, 1).numpy()
        for a, b in zip(x.permute(0, 2, 3, 1).numpy(), y, strict=True):
            np.testing.assert_array_equal(b, _pil_pixelate(a, factor))
    for n_in, n_out in [(32, 30), (30, 32), (224, 56)]:
        torch.testing.assert_close(
            C.box_resize_matrix(n_in, n_out).sum(1), torch.ones(n_out, dtype=torch.float64)
        )


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_jpeg_equals_pillow_encoding_at_the_table_quality(table, images):
    for s, quality in enumerate(TABLES[table]["jpeg_compression"], 1):
        y = corrupt(images, "jpeg_compression", s, table=table).permute(0, 2, 3, 1).numpy()
        for a, b in zip(images.permute(0, 2, 3, 1).numpy(), y, strict=True):
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="JPEG", quality=quality)
            np.testing.assert_array_equal(b, np.asarray(Image.open(buf).convert("RGB")))


# --------------------------------------------------------------------------------------------
# make_c and the command line
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def tiny_set():
    images = smooth_images(6, 32, seed=3).permute(0, 2, 3, 1).contiguous().numpy()
    labels = np.arange(6) % 3
    return images, labels


def test_make_c_writes_the_cifar_c_layout(tmp_path, tiny_set):
    images, labels = tiny_set
    names = ["gaussian_noise", "contrast", "jpeg_compression"]
    out = C.make_c(images, labels, tmp_path / "c", corruptions=names, seed=5, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(f"{n}.npy" for n in names), "labels.npy"]
    )
    lab = np.load(out / "labels.npy")
    assert lab.dtype == np.int64
    np.testing.assert_array_equal(lab, np.tile(labels, 5))
    for name in names:
        arr = np.load(out / f"{name}.npy")
        assert arr.dtype == np.uint8 and arr.shape == (30, 32, 32, 3)
    # severity s occupies rows (s - 1) N .. s N
    contrast = np.load(out / "contrast.npy")
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    for s in C.SEVERITIES:
        expected = corrupt(x, "contrast", s, table="cifar").permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(contrast[(s - 1) * 6 : s * 6], expected)
    # same seed, same files; another seed, other noise
    again = C.make_c(images, labels, tmp_path / "d", corruptions=names[:1], seed=5, progress=False)
    other = C.make_c(images, labels, tmp_path / "e", corruptions=names[:1], seed=6, progress=False)
    first = np.load(out / "gaussian_noise.npy")
    np.testing.assert_array_equal(np.load(again / "gaussian_noise.npy"), first)
    assert not np.array_equal(np.load(other / "gaussian_noise.npy"), first)


def test_make_c_subset_of_severities_in_given_order(tmp_path, tiny_set):
    images, labels = tiny_set
    out = C.make_c(
        images, labels, tmp_path, corruptions=["brightness"], severities=[4, 2], progress=False
    )
    arr = np.load(out / "brightness.npy")
    assert arr.shape == (12, 32, 32, 3)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    expected = corrupt(x, "brightness", 4, table="cifar").permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(arr[:6], expected)


def test_make_c_leaves_no_partial_file_and_resumes(tmp_path, tiny_set, monkeypatch):
    images, labels = tiny_set
    names = ["contrast", "brightness"]
    real = C.corrupt
    calls = []

    def failing(x, name, severity, **kwargs):
        calls.append((name, severity))
        if name == "brightness" and severity == 3:
            raise KeyboardInterrupt
        return real(x, name, severity, **kwargs)

    monkeypatch.setattr(C, "corrupt", failing)
    with pytest.raises(KeyboardInterrupt):
        C.make_c(images, labels, tmp_path, corruptions=names, batch_size=4, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contrast.npy", "labels.npy"]
    done = (tmp_path / "contrast.npy").stat().st_mtime_ns

    calls.clear()
    monkeypatch.setattr(C, "corrupt", real)
    C.make_c(images, labels, tmp_path, corruptions=names, batch_size=4, progress=False)
    assert (tmp_path / "contrast.npy").stat().st_mtime_ns == done  # complete: skipped
    assert np.load(tmp_path / "brightness.npy").shape == (30, 32, 32, 3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_make_c_cells_give_each_corruption_and_severity_its_own_images(tmp_path, tiny_set):
    images, labels = tiny_set  # labels 0 1 2 0 1 2
    names, severities = ["contrast", "brightness"], [1, 2]
    cells = {("contrast", 1): np.array([0, 1]), ("contrast", 2): np.array([3, 4]),
             ("brightness", 1): np.array([3, 1]), ("brightness", 2): np.array([0, 4])}  # fmt: skip
    out = C.make_c(images, labels, tmp_path / "c", corruptions=names, severities=severities,
                   cells=cells, progress=False)  # fmt: skip
    np.testing.assert_array_equal(np.load(out / "labels.npy"), [0, 1, 0, 1])
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    for name in names:
        arr = np.load(out / f"{name}.npy")
        assert arr.shape == (4, 32, 32, 3)
        for k, s in enumerate(severities):
            expected = corrupt(x[cells[name, s]], name, s, table="cifar")
            np.testing.assert_array_equal(arr[2 * k : 2 * k + 2],
                                          expected.permute(0, 2, 3, 1).numpy())  # fmt: skip
    with pytest.raises(ValueError, match="other labels than the first cell"):
        bad = {**cells, ("brightness", 2): np.array([1, 0])}
        C.make_c(images, labels, tmp_path / "d", corruptions=names, severities=severities,
                 cells=bad, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="no indices for brightness at severity 2"):
        C.make_c(images, labels, tmp_path / "d", corruptions=names, severities=severities,
                 cells={k: v for k, v in cells.items() if k != ("brightness", 2)},
                 progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="indices into the 6 images"):
        C.make_c(images, labels, tmp_path / "d", corruptions=["contrast"], severities=[1],
                 cells={("contrast", 1): np.array([6])}, progress=False)  # fmt: skip


def test_make_c_rejects_bad_arrays(tmp_path, tiny_set):
    images, labels = tiny_set
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        C.make_c(images.transpose(0, 3, 1, 2), labels, tmp_path, progress=False)
    with pytest.raises(ValueError, match="labels of shape"):
        C.make_c(images, labels[:3], tmp_path, progress=False)


def test_cli_make_c(tmp_path, tiny_set, monkeypatch):
    images, labels = tiny_set
    seen = {}

    def load_cifar(name, split, root=None):
        seen.update(name=name, split=split)
        return images, labels

    monkeypatch.setattr(vision, "load_cifar", load_cifar)
    argv = ["make-c", "--source", "cifar10", "--out", str(tmp_path), "--limit", "3"]
    argv += ["--severities", "1", "5", "--corruptions", "pixelate", "fog"]
    assert cli.main(argv) == 0
    assert seen == {"name": "cifar10", "split": "test"}
    assert np.load(tmp_path / "pixelate.npy").shape == (6, 32, 32, 3)
    assert np.load(tmp_path / "fog.npy").shape == (6, 32, 32, 3)
    kept = np.load(tmp_path / "labels.npy")
    assert sorted(kept[:3]) == [0, 1, 2]  # one image of each of the 3 classes
    np.testing.assert_array_equal(kept, np.tile(kept[:3], 2))


def test_cli_limit_is_a_seeded_class_balanced_subset(tmp_path, monkeypatch):
    """Sorted by class (as image folders load), the first N would all be class 0."""
    labels = np.repeat(np.arange(4), 25)  # 100 images, sorted by class
    images = np.zeros((100, 8, 8, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(100)  # pixel (0, 0) names the image
    monkeypatch.setattr(vision, "load_cifar", lambda name, split, root=None: (images, labels))
    picked = []

    def record(images, labels, out_dir, **kwargs):
        picked.append((images[:, 0, 0, 0].copy(), labels.copy()))
        return Path(out_dir)

    monkeypatch.setattr(C, "make_c", record)
    for seed in (0, 0, 1):
        argv = ["make-c", "--source", "cifar10", "--out", str(tmp_path), "--limit", "10"]
        assert cli.main([*argv, "--seed", str(seed)]) == 0
    for ids, got in picked:
        assert np.bincount(got).tolist() == [3, 3, 2, 2]
        np.testing.assert_array_equal(labels[ids], got)
    np.testing.assert_array_equal(picked[0][0], picked[1][0])  # same seed, same subset
    assert not np.array_equal(picked[0][0], picked[2][0])
    # the class-balanced draw of cifar_c.subset for the same n and seed
    from sncn.experiments.cifar_c import subset

    np.testing.assert_array_equal(picked[0][0], subset(images, labels, 10, 0)[0][:, 0, 0, 0])


def test_cli_help_documents_limit_and_image_folders(capsys):
    with pytest.raises(SystemExit):
        cli.main(["make-c", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "class-balanced random subset of N images, drawn with --seed" in text
    assert "an image folder <folder>/<class>/*.png|jpg|jpeg" in text


def test_cli_make_c_from_an_image_folder(tmp_path, capsys):
    folder = tmp_path / "photos"
    rng = np.random.default_rng(0)
    sizes = {"cat": [(40, 30), (30, 50)], "dog": [(64, 48)], "emu": [(33, 33), (50, 40)]}
    for cls, shapes in sizes.items():
        (folder / cls).mkdir(parents=True)
        for i, (w, h) in enumerate(shapes):
            array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / cls / f"{i}.png")
    out = tmp_path / "c"
    argv = ["make-c", "--source", str(folder), "--out", str(out), "--size", "24"]
    argv += ["--severities", "2", "--corruptions", "brightness"]
    assert cli.main(argv) == 0
    assert np.load(out / "labels.npy").tolist() == [0, 0, 1, 2, 2]
    assert np.load(out / "brightness.npy").shape == (5, 24, 24, 3)
    assert (out / "classes.txt").read_text().split() == ["cat", "dog", "emu"]
    # images of several sizes need --size; the message says so and names a file
    # (one line on stderr, exit status 1: no traceback)
    assert cli.main(["make-c", "--source", str(folder), "--out", str(tmp_path / "d")]) == 1
    error = capsys.readouterr().err  # a progress bar may stand before it (without TQDM_DISABLE)
    error = error[error.index("sncn make-c: error: ") :]
    assert error.count("\n") == 1
    assert re.search(r"expected 40x30 like the other images \(pass a size", error)
    assert cli.main(["make-c", "--source", str(tmp_path / "none"), "--out", str(out)]) == 2


def test_make_c_into_a_read_only_folder_names_it_and_the_setting(tmp_path, tiny_set, monkeypatch):
    images, labels = tiny_set
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)

    def refuse(*args, **kwargs):  # root ignores permissions: fail as a read-only file system does
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(data_package.tempfile, "TemporaryFile", refuse)
    with pytest.raises(PermissionError, match=r"cannot write corrupted images into .*locked.*"
                       r"SNCN_CACHE"):  # fmt: skip
        C.make_c(images, labels, locked / "c", corruptions=["contrast"], progress=False)
    locked.chmod(0o755)


# --------------------------------------------------------------------------------------------
# GPU
# --------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", _names())
def test_gpu_matches_cpu_with_a_cpu_generator(name, images):
    cpu = corrupt(images, name, 5, generator=gen(4))
    cuda = corrupt(images.cuda(), name, 5, generator=gen(4))
    assert cuda.device.type == "cuda" and cuda.dtype == torch.uint8
    assert (cuda.cpu().float() - cpu.float()).abs().max() <= 1
