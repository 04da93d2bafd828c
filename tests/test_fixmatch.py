"""FixMatch: pseudo-labels and mask, the loss, EMA, schedule, label sampling, augmentation, CN
separation of labelled and unlabelled images, resume, and an end-to-end run on a toy data root."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import bn_eval, gen, random_state
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torch import nn

from sncn.data.semisup import (
    RAND_AUGMENT_OPS,
    SemiSupervisedBatches,
    cutout,
    rand_augment,
    sample_labelled,
    split_labelled,
    weak_augment,
)
from sncn.data.vision import cifar_cache_path, load_cifar, normalize, random_crop_flip
from sncn.experiments import cifar_c, semisupervised
from sncn.hparams import FIXMATCH
from sncn.layers import CrossNorm, crossnorm, crossnorm_groups, grouped_partner
from sncn.train import fit
from sncn.train.fixmatch import (
    FixMatchTrainer,
    ModelEMA,
    cn_groups,
    fixmatch_schedule,
    fixmatch_sgd,
    pseudo_labels,
)

# ---------------------------------------------------------------------------------------------
# Pseudo-labels, the loss


def test_pseudo_labels_and_confidence_mask():
    p = torch.tensor([[0.96, 0.02, 0.02], [0.5, 0.3, 0.2], [0.01, 0.01, 0.98], [0.2, 0.75, 0.05]])
    targets, mask = pseudo_labels(p.log(), threshold=0.95)
    assert targets.tolist() == [0, 0, 2, 1]
    assert mask.tolist() == [1.0, 0.0, 1.0, 0.0]
    # a lower threshold admits the 0.75 prediction; a temperature < 1 sharpens the 0.5 one
    assert pseudo_labels(p.log(), threshold=0.7)[1].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert pseudo_labels(p.log(), threshold=0.95, temperature=0.1)[1][1] == 1.0
    with pytest.raises(ValueError, match="must be"):
        pseudo_labels(torch.zeros(3))


class Lookup(nn.Module):
    """Logits looked up by the index written in each image's first pixel (a crafted model)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0, 0, 0].long()]


def images_with_index(index: list[int]) -> torch.Tensor:
    x = torch.zeros(len(index), 3, 4, 4)
    x[:, 0, 0, 0] = torch.tensor(index, dtype=torch.float)
    return x


def test_fixmatch_loss_on_a_crafted_batch():
    table = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 9.0], [1.0, 1.2, 0.0], [0.0, 0.0, 0.0],
                          [0.0, 2.0, 0.0], [3.0, 0.0, 1.0]])  # fmt: skip
    model = Lookup(table)
    trainer = FixMatchTrainer(model, torch.optim.SGD(model.parameters(), 0.1), threshold=0.95,
                              lambda_u=2.0)  # fmt: skip
    x, y = images_with_index([0, 3]), torch.tensor([0, 1])
    u_weak, u_strong = images_with_index([1, 2]), images_with_index([4, 5])
    u_labels = torch.tensor([2, 0])
    loss, logs = trainer.loss((x, y, u_weak, u_strong, u_labels))
    # weak row 1 is confident (class 2), row 2 is not: only strong row 4 counts, against class 2
    expected_x = F.cross_entropy(table[[0, 3]], y)
    expected_u = F.cross_entropy(table[[4]], torch.tensor([2])) / 2  # mean over both
    assert logs["mask"] == 0.5 and logs["pseudo_acc"] == 1.0
    assert float(loss.detach()) == pytest.approx(float(expected_x + 2.0 * expected_u), rel=1e-6)
    assert logs["loss_x"] == pytest.approx(float(expected_x))
    with pytest.raises(ValueError, match="expects batches"):
        trainer.loss((x, y))


# ---------------------------------------------------------------------------------------------
# EMA, optimiser, schedule


def test_ema_update_averages_parameters_and_copies_buffers():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 3))  # changes the BatchNorm running statistics
    ema.update(model)
    for e, b, p in zip(ema.module.parameters(), before, model.parameters(), strict=True):
        assert torch.allclose(e, 0.9 * b + 0.1 * p)
    for e, b in zip(ema.module.buffers(), model.buffers(), strict=True):
        assert torch.equal(e, b)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, 1.0)


def test_ema_is_the_reference_not_torch_averaged_model():
    """Why ModelEMA is not torch's AveragedModel: the reference (FixMatch-pytorch) averages from
    the first update on and copies buffers; AveragedModel copies the first weights, and averages
    buffers with use_buffers=True."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ours = ModelEMA(model, decay=0.9)
    theirs = {flag: AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9),
                                  use_buffers=flag) for flag in (False, True)}  # fmt: skip
    initial = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 3) + 3)
    ours.update(model)
    for averaged in theirs.values():
        averaged.update_parameters(model)
    expected = [0.9 * b + 0.1 * p for b, p in zip(initial, model.parameters(), strict=True)]
    assert all(
        torch.allclose(e, x) for e, x in zip(ours.module.parameters(), expected, strict=True)
    )
    for averaged in theirs.values():  # a copy of the weights, not the average
        weights = list(averaged.module.parameters())
        assert all(torch.equal(e, p) for e, p in zip(weights, model.parameters(), strict=True))
    model.train()(torch.randn(8, 3) - 3)  # new running statistics, then a second update
    ours.update(model)
    for averaged in theirs.values():
        averaged.update_parameters(model)
    mean = model[1].running_mean
    assert torch.equal(ours.module[1].running_mean, mean)
    assert torch.equal(theirs[False].module[1].running_mean, mean)
    assert not torch.allclose(theirs[True].module[1].running_mean, mean)  # averaged


def test_trainer_predicts_with_the_ema_and_checkpoints_it():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    trainer = FixMatchTrainer(model, torch.optim.SGD(model.parameters(), 0.5), ema_decay=0.5)
    x = torch.randn(4, 3, 4, 4)
    batch = (x, torch.tensor([0, 1, 2, 0]), torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4))
    trainer.update(batch)
    assert torch.allclose(trainer.predict(x), trainer.ema.module(x))
    assert not torch.allclose(trainer.predict(x), model(x))
    state = trainer.state_dict()
    other = FixMatchTrainer(
        nn.Sequential(nn.Flatten(), nn.Linear(48, 3)), torch.optim.SGD(model.parameters(), 0.5)
    )
    other.load_state_dict(state)
    assert torch.allclose(other.predict(x), trainer.predict(x))


def test_schedule_is_cosine_of_seven_sixteenths():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.03)
    sched = fixmatch_schedule(opt, 100)
    lrs = []
    for _ in range(101):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.03)
    assert lrs[50] == pytest.approx(0.03 * math.cos(7 * math.pi * 50 / 1600))
    assert lrs[100] == pytest.approx(0.03 * math.cos(7 * math.pi / 16))
    warm = fixmatch_schedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 10, 5)
    assert warm.get_last_lr()[0] == 0.0
    with pytest.raises(ValueError):
        fixmatch_schedule(opt, 10, warmup=10)


def test_sgd_has_no_weight_decay_on_biases_and_batchnorm():
    model = semisupervised.build_model("ra", semisupervised.resolve_setting(), depth=10)
    opt = fixmatch_sgd(model, weight_decay=5e-4)
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("bias" not in names[id(p)] and "bn" not in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {"fc.bias", "bn1.weight"}
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9


# ---------------------------------------------------------------------------------------------
# Labelled subsets and augmentation


def test_labels_are_sampled_per_class_with_a_fixed_seed():
    labels = np.repeat(np.arange(10), 100)
    np.random.default_rng(0).shuffle(labels)
    chosen = sample_labelled(labels, 250, seed=1)
    assert len(chosen) == 250 == len(set(chosen.tolist()))
    assert np.bincount(labels[chosen], minlength=10).tolist() == [25] * 10
    assert np.array_equal(sample_labelled(labels, 250, seed=1), chosen)
    assert not np.array_equal(sample_labelled(labels, 250, seed=2), chosen)
    labelled, rest = split_labelled(labels, 40, seed=1, unlabelled="rest")
    assert len(np.intersect1d(labelled, rest)) == 0 and len(labelled) + len(rest) == 1000
    assert len(split_labelled(labels, 40, seed=1)[1]) == 1000  # "all": FixMatch's default
    with pytest.raises(ValueError, match="multiple of the 10 classes"):
        sample_labelled(labels, 255, seed=1)
    with pytest.raises(ValueError, match="fewer than"):
        sample_labelled(labels, 2000, seed=1)


def test_reflect_padding_crop_takes_every_pixel_from_the_image():
    images = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)  # no zeros anywhere
    zero = random_crop_flip(images, torch.Generator().manual_seed(0), padding=4)
    reflect = weak_augment(images, torch.Generator().manual_seed(0))
    assert (zero == 0).any() and not (reflect == 0).any()
    # a row-constant image stays row-constant in each column under reflection of the columns
    ramp = torch.arange(8, dtype=torch.uint8).view(1, 1, 1, 8).expand(1, 3, 8, 8).contiguous()
    out = random_crop_flip(ramp, torch.Generator().manual_seed(3), padding_mode="reflect")
    assert (out == out[:, :, :1]).all()
    with pytest.raises(ValueError, match="padding_mode"):
        random_crop_flip(ramp, torch.Generator(), padding_mode="edge")


def test_rand_augment_is_seeded_and_keeps_uint8():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=gen(5))
    a = rand_augment(images, gen(0))
    b = rand_augment(images, gen(0))
    assert a.dtype == torch.uint8 and a.shape == images.shape and torch.equal(a, b)
    # a 17x17 cutout, 9x9 at the least where it meets the right and bottom borders
    assert ((a == 127).all(1).flatten(1).sum(1) >= 81).all()
    with pytest.raises(ValueError, match="uint8"):
        rand_augment(images.float(), gen())
    with pytest.raises(ValueError, match="magnitude"):
        rand_augment(images, gen(), magnitude=1)


# FixMatch-pytorch (kekmodel/FixMatch-pytorch, dataset/randaugment.py), written out from its
# definitions: levels v * max_v / 10 (+ bias), int(...) for the integer ones; a direction
# negated with probability 0.5; PIL ops, the geometric ones without a fill colour.
def reference_op(name: str, img: Image.Image, v: int, negate: bool) -> Image.Image:
    def level(max_v, bias=0.0):
        return float(v) * max_v / 10 + bias

    def int_level(max_v, bias=0):
        return int(v * max_v / 10) + bias

    sign = -1 if negate else 1
    affine = Image.AFFINE
    return {
        "AutoContrast": lambda: ImageOps.autocontrast(img),
        "Brightness": lambda: ImageEnhance.Brightness(img).enhance(level(0.9, 0.05)),
        "Color": lambda: ImageEnhance.Color(img).enhance(level(0.9, 0.05)),
        "Contrast": lambda: ImageEnhance.Contrast(img).enhance(level(0.9, 0.05)),
        "Equalize": lambda: ImageOps.equalize(img),
        "Identity": lambda: img,
        "Posterize": lambda: ImageOps.posterize(img, int_level(4, 4)),
        "Rotate": lambda: img.rotate(sign * int_level(30)),
        "Sharpness": lambda: ImageEnhance.Sharpness(img).enhance(level(0.9, 0.05)),
        "ShearX": lambda: img.transform(img.size, affine, (1, sign * level(0.3), 0, 0, 1, 0)),
        "ShearY": lambda: img.transform(img.size, affine, (1, 0, 0, sign * level(0.3), 1, 0)),
        "Solarize": lambda: ImageOps.solarize(img, 256 - int_level(256)),
        "TranslateX": lambda: img.transform(
            img.size, affine, (1, 0, int(sign * level(0.3) * img.size[0]), 0, 1, 0)
        ),
        "TranslateY": lambda: img.transform(
            img.size, affine, (1, 0, 0, 0, 1, int(sign * level(0.3) * img.size[1]))
        ),
    }[name]()


def reference_cutout(img: Image.Image, size: int, x: float, y: float) -> Image.Image:
    """FixMatch-pytorch's CutoutAbs with the drawn point (x, y)."""
    w, h = img.size
    x0, y0 = int(max(0, x - size / 2.0)), int(max(0, y - size / 2.0))
    x1, y1 = int(min(w, x0 + size)), int(min(h, y0 + size))
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), (127, 127, 127))
    return img


def pil_images(n: int = 3, seed: int = 0) -> list[Image.Image]:
    """Textured RGB images (a gradient plus noise) that every op changes."""
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(32), np.arange(32))[..., None] * np.array([3, 2, 1])
    arrays = np.clip(ramp + rng.integers(0, 80, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


def test_rand_augment_pool_is_fixmatchs():
    assert list(RAND_AUGMENT_OPS) == [
        "AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Identity", "Posterize",
        "Rotate", "Sharpness", "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY",
    ]  # fmt: skip


@pytest.mark.parametrize("name", list(RAND_AUGMENT_OPS))
def test_rand_augment_ops_equal_fixmatch_pytorch(name):
    for img in pil_images():
        for v in range(1, 10):
            for seed in range(4):
                negate = float(torch.rand((), generator=gen(seed))) < 0.5  # the op's draw
                ours = RAND_AUGMENT_OPS[name](img, v, gen(seed))
                assert ours.mode == "RGB" and ours.size == (32, 32)
                expected = reference_op(name, img, v, negate)
                assert np.array_equal(pixels(ours), pixels(expected)), (name, v, seed)


def test_geometry_shears_about_the_top_left_corner_and_fills_black():
    img = pil_images(1)[0]
    x = pixels(img)
    for seed in range(6):
        for name, axis in (("ShearX", 0), ("ShearY", 1)):
            out = pixels(RAND_AUGMENT_OPS[name](img, 9, gen(seed)))
            first = out[0] if axis == 0 else out[:, 0]  # the row / column through the origin
            assert np.array_equal(first, x[0] if axis == 0 else x[:, 0])
            last = out[-1] if axis == 0 else out[:, -1]  # shifted by 0.27 * 31.5 -> 9 pixels
            assert (last == 0).all(-1).sum() == 9
        rotated = pixels(RAND_AUGMENT_OPS["Rotate"](img, 9, gen(seed)))  # 27 degrees
        assert (rotated[0, 0] == 0).all() and (rotated[-1, -1] == 0).all()


def test_translation_is_truncated_to_whole_pixels():
    img = pil_images(1)[0]
    x = pixels(img)
    # v = 1: 0.03 * 32 = 0.96 pixels, truncated to none
    for seed in range(4):
        assert np.array_equal(pixels(RAND_AUGMENT_OPS["TranslateX"](img, 1, gen(seed))), x)
    # v = 9: 0.27 * 32 = 8.64 -> 8 pixels, black behind
    for seed in range(4):
        negate = float(torch.rand((), generator=gen(seed))) < 0.5
        out = pixels(RAND_AUGMENT_OPS["TranslateY"](img, 9, gen(seed)))
        if negate:  # samples 8 rows above: the content moves down
            assert np.array_equal(out[8:], x[:-8]) and (out[:8] == 0).all()
        else:
            assert np.array_equal(out[:-8], x[8:]) and (out[-8:] == 0).all()


def test_cutout_is_cutout_abs():
    img = pil_images(1)[0]
    sides = set()
    for seed in range(60):
        g = gen(seed)
        x, y = float(torch.rand((), generator=g)) * 32, float(torch.rand((), generator=g)) * 32
        ours = pixels(cutout(img, 16, gen(seed)))
        assert np.array_equal(ours, pixels(reference_cutout(img, 16, x, y)))
        grey = (ours == 127).all(-1)
        sides.add(int(grey.any(0).sum()))
    assert max(sides) == 17 and min(sides) < 17  # 16 + 1 inside, clipped at the far border


def reference_rand_augment_mc(img: Image.Image, g: torch.Generator) -> Image.Image:
    """RandAugmentMC(n=2, m=10) with the draws taken from ``g`` in FixMatch-pytorch's order."""
    names = list(RAND_AUGMENT_OPS)
    for i in torch.randint(0, 14, (2,), generator=g).tolist():  # random.choices(pool, k=2)
        v = int(torch.randint(1, 10, (), generator=g))  # np.random.randint(1, 10)
        if float(torch.rand((), generator=g)) < 0.5:
            negate = False
            if names[i] in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"):
                negate = float(torch.rand((), generator=g)) < 0.5
            img = reference_op(names[i], img, v, negate)
    x, y = float(torch.rand((), generator=g)) * 32, float(torch.rand((), generator=g)) * 32
    return reference_cutout(img, int(32 * 0.5), x, y)


def test_rand_augment_draws_as_rand_augment_mc():
    imgs = pil_images(40, seed=1)
    batch = torch.from_numpy(np.stack([pixels(i) for i in imgs])).permute(0, 3, 1, 2)
    ours = rand_augment(batch, gen(3)).permute(0, 2, 3, 1).numpy()
    g = gen(3)
    expected = np.stack([pixels(reference_rand_augment_mc(i, g)) for i in imgs])
    assert np.array_equal(ours, expected)


def test_semi_supervised_batches():
    rng = np.random.default_rng(0)
    lab = (rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.arange(20) % 10)
    unl = (rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), np.arange(50) % 10)
    batches = list(SemiSupervisedBatches(lab, unl, 8, 3, 4, torch.Generator().manual_seed(0)))
    assert len(batches) == 4
    x, y, uw, us, uy = batches[0]
    assert x.shape == (8, 3, 32, 32) and uw.shape == us.shape == (24, 3, 32, 32)
    assert x.dtype == torch.float32 and y.shape == (8,) and uy.shape == (24,)
    again = list(SemiSupervisedBatches(lab, unl, 8, 3, 4, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches[3], again[3], strict=True))
    with pytest.raises(ValueError, match="strong"):
        SemiSupervisedBatches(lab, unl, 8, 3, 4, torch.Generator(), strong="autoaugment")


def test_fixmatch_normalises_with_the_reference_cifar10_statistics():
    # FixMatch-pytorch dataset/cifar.py: cifar10_mean, cifar10_std
    assert FIXMATCH["mean"] == (0.4914, 0.4822, 0.4465)
    assert FIXMATCH["std"] == (0.2471, 0.2435, 0.2616)
    rng = np.random.default_rng(0)
    lab = (rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.arange(20) % 10)
    unl = (rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), np.arange(50) % 10)
    ours = next(iter(SemiSupervisedBatches(lab, unl, 8, 3, 1, gen(0))))
    half = next(iter(SemiSupervisedBatches(lab, unl, 8, 3, 1, gen(0), mean=(0.5,) * 3,
                                           std=(0.5,) * 3)))  # fmt: skip
    mean = torch.tensor(FIXMATCH["mean"])[:, None, None]
    std = torch.tensor(FIXMATCH["std"])[:, None, None]
    for i in (0, 2, 3):  # x, u_weak, u_strong: the same images, normalised differently
        assert torch.allclose(ours[i] * std + mean, half[i] * 0.5 + 0.5, atol=1e-6)
        assert not torch.allclose(ours[i], half[i], atol=0.1)


# ---------------------------------------------------------------------------------------------
# FixMatch-pytorch's WRN (models/wideresnet.py)


def fixmatch_pytorch_wrn(sd: dict, x: torch.Tensor, depth: int) -> torch.Tensor:
    """FixMatch-pytorch's ``WideResNet.forward`` in eval mode, functionally, from a state dict in
    our naming: leaky ReLU 0.1 everywhere; a block whose widths differ BN-activates its input for
    both branches in stage 1 (``activate_before_residual=True``) and elsewhere computes that
    BN-activation, discards it and feeds the raw input to ``conv1`` and the shortcut."""

    def act(t):
        return F.leaky_relu(t, 0.1)

    out = F.conv2d(x, sd["conv1.weight"], padding=1)
    for stage in (1, 2, 3):
        for i in range((depth - 4) // 6):
            p = f"block{stage}.layer.{i}"
            equal = f"{p}.conv_shortcut.weight" not in sd
            stride = 2 if stage > 1 and i == 0 else 1
            if not equal and stage == 1:
                out = act(bn_eval(sd, out, f"{p}.bn1"))
            branch = act(bn_eval(sd, out, f"{p}.bn1")) if equal else out
            h = F.conv2d(branch, sd[f"{p}.conv1.weight"], stride=stride, padding=1)
            h = F.conv2d(act(bn_eval(sd, h, f"{p}.bn2")), sd[f"{p}.conv2.weight"], padding=1)
            if not equal:
                out = F.conv2d(out, sd[f"{p}.conv_shortcut.weight"], stride=stride)
            out = out + h
    out = act(bn_eval(sd, out, "bn1")).mean(dim=(2, 3))
    return F.linear(out, sd["fc.weight"], sd["fc.bias"])


@pytest.mark.parametrize("depth", [10, 16])
def test_fixmatch_wrn_is_fixmatch_pytorchs(depth):
    model = semisupervised.build_model("ra", semisupervised.resolve_setting(), depth=depth)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.001 for m in bns)
    assert "block2.layer.0.bn1.weight" not in model.state_dict()  # computed and discarded there
    model = model.double().eval()
    sd = random_state({k: tuple(v.shape) for k, v in model.state_dict().items()}, seed=depth)
    model.load_state_dict(sd)
    x = torch.randn(3, 3, 32, 32, generator=gen(1), dtype=torch.float64)
    assert torch.allclose(model(x), fixmatch_pytorch_wrn(sd, x, depth), atol=1e-9)
    # the supervised WRN (ReLU, every first block pre-activated) is another function
    plain = semisupervised.build_model("ra", semisupervised.resolve_setting(), depth=depth,
                                       leaky_slope=0.0, activate_before_residual="all")  # fmt: skip
    plain = plain.double().eval()
    shapes = {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    plain.load_state_dict({**random_state(shapes, seed=depth), **sd})
    assert not torch.allclose(plain(x), model(x), atol=1e-3)


def test_fixmatch_wrn_classifier_is_xavier_normal():
    torch.manual_seed(0)
    model = semisupervised.build_model("ra", semisupervised.resolve_setting(), depth=10)
    weight = model.fc.weight.detach()  # (10, 128): Xavier std sqrt(2 / 138) = 0.120
    assert float(weight.std()) == pytest.approx(math.sqrt(2 / 138), rel=0.1)  # PyTorch's: 0.051
    assert torch.equal(model.fc.bias, torch.zeros(10))
    with pytest.raises(ValueError, match="fc_init"):
        semisupervised.build_model("ra", semisupervised.resolve_setting(), fc_init="kaiming")
    with pytest.raises(ValueError, match="activate_before_residual"):
        semisupervised.build_model("ra", semisupervised.resolve_setting(),
                                   activate_before_residual=(4,))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# CrossNorm keeps labelled and unlabelled images apart


@pytest.mark.parametrize("pairing", ["permutation", "derangement"])
def test_grouped_partner_never_crosses_groups(pairing):
    groups = torch.tensor([0] * 5 + [1] * 8 + [-1] * 3 + [2])
    for seed in range(20):
        partner = grouped_partner(groups, torch.Generator().manual_seed(seed), pairing)
        assert torch.equal(groups[partner], groups)
        moved = groups >= 0
        moved[-1] = False  # alone in its group
        if pairing == "derangement":
            assert (partner[moved] != torch.nonzero(moved).flatten()).all()
        assert torch.equal(partner[~moved], torch.nonzero(~moved).flatten())
    with pytest.raises(ValueError, match="integer"):
        grouped_partner(torch.zeros(3))


@pytest.mark.parametrize("pairing", ["permutation", "derangement"])
def test_grouped_partner_is_uniform_within_each_group(pairing):
    # drawn for all groups at once (random keys, sorts): each group's pairing is distributed as
    # random_partner's, a uniform permutation (4! and 3! of them) or a uniform pairing (3 of a
    # group of four; a group of three: one of two 3-cycles)
    groups = torch.tensor([1, 0, 1, -1, 0, 1, 0, 0])
    members = {0: [1, 4, 6, 7], 1: [0, 2, 5]}
    outcomes = {0: 24, 1: 6} if pairing == "permutation" else {0: 3, 1: 2}
    g, n = torch.Generator().manual_seed(0), 3000
    counts = {k: Counter() for k in members}
    for _ in range(n):
        partner = grouped_partner(groups, g, pairing)
        assert partner[3] == 3 and torch.equal(groups[partner], groups)
        for k, items in members.items():
            counts[k][tuple(partner[items].tolist())] += 1
    for k, count in counts.items():
        assert len(count) == outcomes[k]
        p = 1 / outcomes[k]
        for c in count.values():  # 5 standard errors of a binomial frequency
            assert abs(c / n - p) <= 5 * math.sqrt(p * (1 - p) / n)


def two_regimes(n_l: int = 4, n_u: int = 6) -> torch.Tensor:
    """Labelled maps with means ~ +50, unlabelled ones with means ~ -50."""
    x = torch.randn(n_l + n_u, 3, 8, 8)
    x[:n_l] += 50
    x[n_l:] -= 50
    return x


@pytest.mark.parametrize("crop", ["neither", "both"])
def test_crossnorm_with_groups_pairs_within_each_part(crop):
    x = two_regimes()
    groups = cn_groups(4, 6, "all")
    out = crossnorm(x, crop=crop, generator=torch.Generator().manual_seed(0), groups=groups)
    means = out.mean(dim=(2, 3))
    assert (means[:4] > 40).all() and (means[4:] < -40).all()
    mixed = crossnorm(
        x, generator=torch.Generator().manual_seed(0), groups=cn_groups(4, 6, "mixed")
    )
    assert (mixed.mean(dim=(2, 3))[:4] < 0).any()  # one group: pairs can cross
    only_u = crossnorm(x, crop=crop, generator=torch.Generator().manual_seed(0),
                       groups=cn_groups(4, 6, "unlabelled"))  # fmt: skip
    assert torch.equal(only_u[:4], x[:4]) and not torch.allclose(only_u[4:], x[4:])
    with pytest.raises(ValueError, match="groups must have shape"):
        crossnorm(x, groups=torch.zeros(3, dtype=torch.long))


def test_crossnorm_layer_groups_are_set_from_outside_and_restored():
    layer = CrossNorm(3).train()
    layer.active = True
    model = nn.Sequential(layer)
    x = two_regimes()
    with crossnorm_groups(model, cn_groups(4, 6, "unlabelled")):
        assert layer.groups is not None
        out = model(x)
    assert layer.groups is None
    assert torch.equal(out[:4], x[:4])


class Recorder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return x


@pytest.mark.parametrize("cn_data", ["all", "unlabelled"])
def test_trainer_keeps_labelled_and_unlabelled_apart_under_crossnorm(cn_data):
    torch.manual_seed(0)
    recorder = Recorder()
    model = nn.Sequential(CrossNorm(3), recorder, nn.Flatten(), nn.Linear(192, 3))
    trainer = FixMatchTrainer(model, torch.optim.SGD(model.parameters(), 0.0), cn_prob=1.0,
                              cn_data=cn_data)  # fmt: skip
    x = two_regimes(4, 6)
    batch = (x[:4], torch.tensor([0, 1, 2, 0]), x[4:7], x[7:])
    for _ in range(5):
        logs = trainer.update(batch)
        assert logs["cn"] == 1.0
        means = recorder.seen.mean(dim=(2, 3))
        assert (means[:4] > 40).all() and (means[4:] < -40).all()
        if cn_data == "unlabelled":
            assert torch.equal(recorder.seen[:4], x[:4])
    assert model[0].groups is None and not model[0].active


# ---------------------------------------------------------------------------------------------
# Resume and an end-to-end run


def toy_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """10 classes told apart by colour, with noise: easy to learn from few labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    colours = np.random.default_rng(99).integers(20, 236, (10, 3))
    images = colours[labels][:, None, None, :] + rng.normal(0, 12, (n, 32, 32, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def make_fixmatch(seed: int = 0):
    torch.manual_seed(seed)
    model = semisupervised.build_model("wa_cn_all", semisupervised.resolve_setting(), depth=10,
                                       widen_factor=1)  # fmt: skip
    opt = fixmatch_sgd(model)
    trainer = FixMatchTrainer(model, opt, fixmatch_schedule(opt, 6), cn_prob=0.5, ema_decay=0.9)
    lab, unl = toy_images(20, 0), toy_images(40, 1)

    def batches(epoch, generator):
        return SemiSupervisedBatches(lab, unl, 4, 2, 2, generator, strong="ra")

    return trainer, batches


def test_fit_resumes_fixmatch_exactly(tmp_path):
    straight, batches = make_fixmatch()
    fit(straight, batches, 3, tmp_path / "a", progress=False)
    first, batches = make_fixmatch()
    fit(first, batches, 1, tmp_path / "b", progress=False)
    resumed, batches = make_fixmatch()
    history = fit(resumed, batches, 3, tmp_path / "b", progress=False)
    assert len(history) == 3 and resumed.step == 6
    for a, b in zip(straight.state_dict()["ema"].values(), resumed.state_dict()["ema"].values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.fixture
def toy_root(tmp_path):
    root = tmp_path / "data"
    (root / "generated").mkdir(parents=True)
    for split, n, seed in (("train", 300, 0), ("test", 40, 1)):
        images, labels = toy_images(n, seed)
        np.savez(cifar_cache_path("cifar10", split, root), images=images, labels=labels,
                 source=np.array("toy"))  # fmt: skip
    return root


def test_run_learns_over_chance_and_is_read_back(toy_root, tmp_path):
    # 30 steps: an EMA and BatchNorm statistics that move within them
    overrides = {"epochs": 2, "eval_step": 15, "batch_size": 10, "mu": 2, "ema_decay": 0.9,
                 "lr": 0.05, "bn_momentum": 0.1}  # fmt: skip
    kwargs = dict(overrides=overrides, model_kwargs={"depth": 10, "widen_factor": 1},
                  test_subset=20, device="cpu", root=toy_root, progress=False)  # fmt: skip
    runs = semisupervised.run_grid(["ra", "ra_cn_unlabelled"], [20], [0], tmp_path / "res",
                                   **kwargs)  # fmt: skip
    for _, _, (metrics,) in runs:
        assert metrics["clean_error"] < 50.0  # chance: 90%
        assert metrics["cifar_c"] == "generated" and len(metrics["errors"]) == 15
        assert metrics["steps"] == 30 and len(metrics["history"]) == 2
        assert 0.0 <= metrics["history"][-1]["mask"] <= 1.0
    again = semisupervised.run("ra", 20, tmp_path / "res", **kwargs)
    assert again["clean_error"] == runs[0][2][0]["clean_error"]
    rows = semisupervised.table_rows(runs)
    assert [r["method"] for r in rows] == ["FixMatch", "FixMatch + CN (unlabelled)"]
    assert rows[0]["clean change"] == 0.0
    assert rows[1]["corruption change"] == pytest.approx(
        runs[1][2][0]["mce"] - runs[0][2][0]["mce"]
    )
    assert semisupervised.best_cn(runs) == {("ra", 20): "ra_cn_unlabelled"}
    (note,) = semisupervised.resolution_notes(rows)  # one seed: says it cannot tell
    assert note.startswith("RA, 20 labels: resolution: 1 seed") and "not resolved" in note
    semisupervised.figure(runs)
    with pytest.raises(ValueError, match="unknown variant"):
        semisupervised.run("fixmatch", 20, tmp_path / "res")
    with pytest.raises(ValueError, match="unknown setting"):
        semisupervised.resolve_setting({"learning_rate": 0.1})


def test_run_evaluates_with_fixmatchs_normalisation(toy_root, tmp_path, monkeypatch):
    """The clean and CIFAR-10-C errors of a run are those of its EMA model on test images
    normalised as its training images (FixMatch-pytorch's CIFAR-10 mean and std)."""
    seen = {}

    def spy(trainer, *args, **kwargs):
        seen["trainer"] = trainer
        return cifar_c.robustness_metrics(trainer, *args, **kwargs)

    monkeypatch.setattr(semisupervised, "robustness_metrics", spy)
    overrides = {"epochs": 1, "eval_step": 3, "batch_size": 10, "mu": 2, "ema_decay": 0.5,
                 "bn_momentum": 0.1}  # fmt: skip
    metrics = semisupervised.run("wa", 20, tmp_path / "res", overrides=overrides,
                                 model_kwargs={"depth": 10, "widen_factor": 1}, test_subset=20,
                                 device="cpu", root=toy_root, progress=False)  # fmt: skip
    trainer = seen["trainer"]
    assert isinstance(trainer, FixMatchTrainer)
    test_x, test_y = cifar_c.subset(*load_cifar("cifar10", "test", toy_root), 20, 0)

    def error(mean, std) -> float:
        x = normalize(torch.from_numpy(test_x).permute(0, 3, 1, 2), mean, std)
        return 100.0 * float((trainer.predict(x).argmax(1).numpy() != test_y).mean())

    assert metrics["clean_error"] == pytest.approx(error(FIXMATCH["mean"], FIXMATCH["std"]))
    assert metrics["history"][-1]["test_error"] == metrics["clean_error"]
