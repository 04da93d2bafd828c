"""CIFAR backbones: unit placements, the CrossNorm switch, sizes, and released-checkpoint loading.

The released-code references below re-implement the forward passes of the paper's released models
(amazon-science/crossnorm-selfnorm, ``models/cifar/*_cnsn.py``) functionally, straight from a state
dict in the released naming, so that loading such a state dict into our models and comparing the
outputs checks names, shapes and wiring together.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import bn_eval, gen, random_state
from torch import Tensor, nn

from sncn.layers import CNSN, SelfNorm, crossnorm_step, style_layers
from sncn.models import cifar, create_model, list_models
from sncn.models.cifar import ResNeXtBottleneck, SqueezeExcitation, load_released_checkpoint

# Reduced sizes for wiring tests; every registered CIFAR model must appear here.
TINY = {
    "allconv": dict(width1=8, width2=16),
    "densenet": dict(depth=10, growth_rate=4),  # 2 cells per stage
    "wrn": dict(depth=16, widen_factor=1),  # 2 blocks per stage; block1 without projection
    "resnext": dict(depth=20, cardinality=2, base_width=4),  # 2 blocks per stage
}
POSITIONS = {
    "allconv": [1, 2, 3],
    "densenet": ["pre", "post"],
    "wrn": ["pre", "residual", "identity", "post"],
    "resnext": ["pre", "residual", "identity", "post"],
}
CIFAR_MODELS = [n for n in list_models() if getattr(cifar, n, None) is not None]
PLACEMENTS = [(name, pos) for name in CIFAR_MODELS for pos in POSITIONS.get(name, [])]
NUM_CLASSES = 7


def images(n: int = 4, seed: int = 0, dtype=torch.float32) -> Tensor:
    return torch.randn(n, 3, 32, 32, generator=gen(seed), dtype=dtype)


def tiny(name: str, **kwargs) -> nn.Module:
    return create_model(name, num_classes=NUM_CLASSES, **TINY[name], **kwargs)


def units(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (CNSN, SqueezeExcitation))}


def inert_units(model: nn.Module) -> set[str]:
    """Units whose output the released ResNeXt discards (identity position, projection block)."""
    return {
        f"{n}.{m.unit_attr}"
        for n, m in model.named_modules()
        if isinstance(m, ResNeXtBottleneck) and m.inert_unit
    }


def no_dropout(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    return model


def test_every_cifar_model_is_tested():
    assert sorted(CIFAR_MODELS) == sorted(TINY) == sorted(POSITIONS)


# ---------------------------------------------------------------------------------------------
# Forward, backward and the CrossNorm switch for every placement
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cnsn_type", ["sn", "cn", "cnsn", "se"])
@pytest.mark.parametrize(("name", "pos"), PLACEMENTS)
def test_forward_backward_every_placement(name, pos, cnsn_type):
    torch.manual_seed(0)
    model = tiny(name, cnsn_type=cnsn_type, pos=pos).train()
    with crossnorm_step(model, cn_prob=1.0, active_num=len(style_layers(model))):
        out = model(images())
    assert out.shape == (4, NUM_CLASSES)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    inert = inert_units(model)
    found = units(model)
    assert found
    for unit_name, unit in found.items():
        grads = [p.grad for p in unit.parameters()]
        if unit_name in inert:  # as in the released code: no effect, so no gradient
            assert all(g is None for g in grads), unit_name
        else:  # (a tiny SE bottleneck may have a dead ReLU: gradients per unit, not per tensor)
            assert all(g is not None for g in grads), unit_name
            assert not grads or sum(g.abs().sum() for g in grads) > 0, unit_name
    for p_name, p in model.named_parameters():
        if ".selfnorm." in p_name and p_name.rsplit(".selfnorm.")[0] not in inert:
            assert p.grad.abs().sum() > 0, p_name  # every SelfNorm tensor learns
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "pos"), PLACEMENTS)
def test_crossnorm_switch(name, pos):
    model = no_dropout(tiny(name, cnsn_type="cnsn", pos=pos).train())
    x = images()
    everything = len(style_layers(model))
    with torch.no_grad():
        off = model(x)
        torch.testing.assert_close(model(x), off)  # deterministic without CrossNorm
        with crossnorm_step(model, cn_prob=1.0, active_num=everything) as active:
            on = model(x)
        assert len(active) == everything
        assert not torch.allclose(on, off)
        model.eval()
        eval_off = model(x)
        with crossnorm_step(model, cn_prob=1.0, active_num=everything):
            torch.testing.assert_close(model(x), eval_off)  # CrossNorm only acts in training


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_image_space_unit(name):
    model = no_dropout(tiny(name, cnsn_type="cnsn", blocks=(), image=True).train())
    assert list(units(model)) == ["image_cnsn"]
    assert model.image_cnsn.selfnorm.num_channels == 3
    x = images()
    with torch.no_grad():
        off = model(x)
        with crossnorm_step(model, cn_prob=1.0, active_num=1):
            on = model(x)
    assert not torch.allclose(on, off)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_channels_last_matches_contiguous(name):
    model = tiny(name, cnsn_type="cnsn").eval()
    x = images()
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    model.train()
    with crossnorm_step(model, cn_prob=1.0, active_num=2):
        model(x.contiguous(memory_format=torch.channels_last)).sum().backward()


# ---------------------------------------------------------------------------------------------
# Unit count, location and settings
# ---------------------------------------------------------------------------------------------


def wrn_cells(stages=(1, 2, 3), n: int = 6) -> list[str]:
    return [f"block{s}.layer.{i}.cnsn" for s in stages for i in range(n)]


@pytest.mark.parametrize(
    ("blocks", "stages"),
    [("all", (1, 2, 3)), (1, (1,)), ((2,), (2,)), ([3, 1], (1, 3))],
)
def test_wrn_40_2_units_per_block(blocks, stages):
    model = create_model("wrn", cnsn_type="cnsn", pos="post", blocks=blocks)
    assert list(units(model)) == wrn_cells(stages)
    assert len(style_layers(model)) == 6 * len(stages)
    widths = {1: 32, 2: 64, 3: 128}
    for unit_name, unit in units(model).items():
        assert unit.selfnorm.num_channels == widths[int(unit_name[5])]


def test_wrn_40_2_has_18_post_units():
    model = create_model("wrn", cnsn_type="cnsn", pos="post")
    assert len(units(model)) == 18 == len(style_layers(model))
    assert sum(isinstance(m, SelfNorm) for m in model.modules()) == 18


@pytest.mark.parametrize(
    ("pos", "first_channels"), [("pre", 16), ("residual", 32), ("identity", 32), ("post", 32)]
)
def test_wrn_unit_channels_follow_released_code(pos, first_channels):
    model = create_model("wrn", cnsn_type="sn", pos=pos)
    assert model.block1.layer[0].cnsn.selfnorm.num_channels == first_channels
    assert model.block1.layer[1].cnsn.selfnorm.num_channels == 32


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("resnext", {}, [f"stage_{s}.{i}.cnsn" for s in (1, 2, 3) for i in range(3)]),
        ("densenet", {}, [f"dense{s}.{i}.cnsn" for s in (1, 2, 3) for i in range(12)]),
        ("densenet", dict(blocks=(3,)), [f"dense3.{i}.cnsn" for i in range(12)]),
    ],
)
def test_unit_locations(name, kwargs, expected):
    model = create_model(name, cnsn_type="cnsn", **kwargs)
    assert list(units(model)) == expected


@pytest.mark.parametrize(
    ("blocks", "indices"),
    [
        # pos=1: conv, unit, BN, GELU per layer (max-pool + dropout after layers 3 and 6), so
        # the unit is an element of `features` and shifts the indices after it, as released
        ("all", (1, 5, 9, 15, 19, 23, 29, 33, 37)),
        ((1,), (1, 5, 9)),
        ((2,), (12, 16, 20)),
        ((3,), (23, 27, 31)),
    ],
)
def test_allconv_block_selection(blocks, indices):
    model = create_model("allconv", cnsn_type="sn", pos=1, blocks=blocks)
    assert list(units(model)) == [f"features.{i}" for i in indices]


def test_resnext_identity_units_in_projection_blocks_are_inert():
    model = create_model("resnext", cnsn_type="cnsn", pos="identity")
    assert len(units(model)) == 9 == len(style_layers(model))  # all counted by the switch
    assert inert_units(model) == {f"stage_{s}.0.cnsn" for s in (1, 2, 3)}
    assert model.stage_1[0].cnsn.selfnorm.num_channels == 64  # the block input, as released


@pytest.mark.parametrize(
    ("pos", "released", "channels"),
    [("pre", "conv1_pre", 24), ("post", "conv2_post", 12), ("conv1_post", "conv1_post", 48)],
)
def test_densenet_bc_positions(pos, released, channels):
    model = create_model(
        "densenet", depth=100, bottleneck=True, reduction=0.5, cnsn_type="sn", pos=pos
    )
    assert model.pos == released
    assert model.dense1[0].cnsn.selfnorm.num_channels == channels
    assert len(units(model)) == 48


def test_unit_settings_pass_through():
    model = tiny(
        "wrn",
        cnsn_type="cnsn",
        crop="both",
        beta=0.5,
        instances=1,
        threshold=0.2,
        order="sn-cn",
        two_functions=True,
    )
    unit = model.block2.layer[0].cnsn
    cn, sn = unit.crossnorm, unit.selfnorm
    assert (cn.crop, cn.beta, cn.instances, cn.threshold) == ("both", 0.5, 1, 0.2)
    assert unit.order == "sn-cn" and sn.two_functions
    se = tiny("wrn", cnsn_type="se", pos="post", se_reduction=4).block3.layer[0].se
    assert se.fc1.out_features == se.num_channels // 4


@pytest.mark.parametrize("cnsn_type", ["sn", "cn"])
def test_single_layer_units(cnsn_type):
    unit = tiny("resnext", cnsn_type=cnsn_type).stage_2[1].cnsn
    assert (unit.crossnorm is not None) == (cnsn_type == "cn")
    assert (unit.selfnorm is not None) == (cnsn_type == "sn")


# ---------------------------------------------------------------------------------------------
# Sizes of the plain models (AugMix definitions)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "params"),
    [
        ("allconv", {}, 1_409_674),  # ~1.4M
        ("densenet", {}, 1_059_298),  # DenseNet-40 (k=12), ~1.0M; the paper's "DenseNet-BC-100"
        ("densenet", dict(depth=100, bottleneck=True, reduction=0.5), 769_162),  # BC-100, 0.8M
        ("wrn", {}, 2_243_546),  # WRN-40-2, ~2.2M
        ("resnext", {}, 6_807_882),  # ResNeXt-29 (4 x 32), ~6.8M
    ],
)
def test_plain_parameter_counts(name, kwargs, params):
    model = create_model(name, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == params
    assert not units(model)


# ---------------------------------------------------------------------------------------------
# Bad keywords
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("wrn", dict(cnsn_type="cnsn", pos="middle"), "'pre', 'residual', 'identity', 'post'"),
        ("resnext", dict(cnsn_type="sn", pos=2), "'pre', 'residual', 'identity', 'post'"),
        ("allconv", dict(cnsn_type="sn", pos=4), r"\(1, 2, 3\)"),
        ("densenet", dict(cnsn_type="sn", pos="identity"), "'pre', 'post'"),
        ("densenet", dict(cnsn_type="sn", pos="conv2_post"), "bottleneck=True"),
        ("wrn", dict(cnsn_type="bn"), "'sn', 'cn', 'cnsn', 'se'"),
        ("wrn", dict(cnsn_type="sn", blocks=(0, 1)), r"\(1, 2, 3\)"),
        ("wrn", dict(cnsn_type="sn", blocks="first"), "'all'"),
        ("wrn", dict(cnsn_type="sn", blocks=()), "places no unit"),
        ("wrn", dict(cnsn_type="se", image=True), "image-space"),
        ("wrn", dict(cnsn_type="cn", crop="middle"), "crop"),
        ("wrn", dict(depth=41), "6 n \\+ 4"),
        ("resnext", dict(depth=30), "9 n \\+ 2"),
    ],
)
def test_bad_kwargs_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model(name, **kwargs)


# ---------------------------------------------------------------------------------------------
# Released checkpoints: keys in the released naming, outputs against the released forward
# ---------------------------------------------------------------------------------------------


def add_bn(shapes: dict, prefix: str, c: int) -> None:
    for suffix in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{suffix}"] = (c,)
    shapes[f"{prefix}.num_batches_tracked"] = ()


def add_selfnorm(shapes: dict, prefix: str, c: int, cnsn_type: str | None) -> None:
    """Released ``SelfNorm(c)`` at ``prefix``: ``g_fc`` = Conv1d(c, c, 2, groups=c), ``g_bn``.

    A released CrossNorm has no state, so "cn" units (and None) add no keys.
    """
    if cnsn_type in ("sn", "cnsn"):
        shapes[f"{prefix}.selfnorm.g_fc.weight"] = (c, 1, 2)
        add_bn(shapes, f"{prefix}.selfnorm.g_bn", c)


def released_wrn_shapes(depth=40, k=2, classes=10, pos="post", cnsn_type="cnsn") -> dict:
    """State-dict names and shapes of the released ``WideResNet(depth, classes, k, ...)``.

    With ``cnsn_type=None``: AugMix's plain ``WideResNet``.
    """
    widths, n = [16, 16 * k, 32 * k, 64 * k], (depth - 4) // 6
    shapes = {"conv1.weight": (16, 3, 3, 3)}
    for s in (1, 2, 3):
        for i in range(n):
            p, c_in, c = f"block{s}.layer.{i}", widths[s] if i else widths[s - 1], widths[s]
            add_bn(shapes, f"{p}.bn1", c_in)
            shapes[f"{p}.conv1.weight"] = (c, c_in, 3, 3)
            add_bn(shapes, f"{p}.bn2", c)
            shapes[f"{p}.conv2.weight"] = (c, c, 3, 3)
            if c_in != c:
                shapes[f"{p}.conv_shortcut.weight"] = (c, c_in, 1, 1)
            add_selfnorm(shapes, f"{p}.cnsn", c_in if pos == "pre" else c, cnsn_type)
    add_bn(shapes, "bn1", widths[3])
    shapes["fc.weight"], shapes["fc.bias"] = (classes, widths[3]), (classes,)
    return shapes


def released_resnext_shapes(
    depth=29, card=4, width=32, classes=10, pos="post", cnsn_type="cnsn"
) -> dict:
    """State-dict names and shapes of the released ``CifarResNeXt(depth, card, width, ...)``."""
    shapes = {"conv_1_3x3.weight": (64, 3, 3, 3)}
    add_bn(shapes, "bn_1", 64)
    inplanes = 64
    for s, planes in zip((1, 2, 3), (64, 128, 256), strict=True):
        d, out = int(math.floor(planes * width / 64)) * card, planes * 4
        for i in range((depth - 2) // 9):
            p = f"stage_{s}.{i}"
            shapes[f"{p}.conv_reduce.weight"] = (d, inplanes, 1, 1)
            add_bn(shapes, f"{p}.bn_reduce", d)
            shapes[f"{p}.conv_conv.weight"] = (d, d // card, 3, 3)
            add_bn(shapes, f"{p}.bn", d)
            shapes[f"{p}.conv_expand.weight"] = (out, d, 1, 1)
            add_bn(shapes, f"{p}.bn_expand", out)
            if i == 0:
                shapes[f"{p}.downsample.0.weight"] = (out, inplanes, 1, 1)
                add_bn(shapes, f"{p}.downsample.1", out)
            c = inplanes if pos in ("pre", "identity") else out
            add_selfnorm(shapes, f"{p}.cnsn", c, cnsn_type)
            inplanes = out
    shapes["classifier.weight"], shapes["classifier.bias"] = (classes, 1024), (classes,)
    return shapes


def released_densenet_shapes(depth=40, k=12, classes=10, pos="conv1_pre", cnsn_type="cnsn"):
    """State-dict names and shapes of the released ``densenet(k, depth)`` (no bottleneck)."""
    shapes, c = {"conv1.weight": (2 * k, 3, 3, 3)}, 2 * k
    for s in (1, 2, 3):
        for i in range((depth - 4) // 3):
            p = f"dense{s}.{i}"
            add_bn(shapes, f"{p}.bn1", c)
            shapes[f"{p}.conv1.weight"] = (k, c, 3, 3)
            add_selfnorm(shapes, f"{p}.cnsn", c if pos == "conv1_pre" else k, cnsn_type)
            c += k
        if s < 3:
            add_bn(shapes, f"trans{s}.bn1", c)
            shapes[f"trans{s}.conv1.weight"] = (c, c, 1, 1)
    add_bn(shapes, "bn1", c)
    shapes["fc.weight"], shapes["fc.bias"] = (classes, c), (classes,)
    return shapes


ALLCONV_CFG = ["wide1"] * 3 + ["Md"] + ["wide2"] * 3 + ["Md", "nopad", "NIN", "NIN"]


def released_allconv_shapes(w1=96, w2=192, classes=10, pos=1, cnsn_type="cnsn") -> dict:
    """State-dict names and shapes of the released ``AllConvNet``: one flat ``features``.

    Each convolution is a (conv, BN, GELU) triple with the CNSN unit inserted at index ``pos``
    (even a "cn" unit without state takes an index); ``cnsn_type=None``: AugMix's plain model.
    """
    shapes, index, c_in = {}, 0, 3
    for v in ALLCONV_CFG:
        if v == "Md":
            index += 2  # max-pool, dropout
            continue
        c = {"wide1": w1, "wide2": w2}.get(v, c_in)
        triple = ["conv", "bn", "gelu"]
        if cnsn_type is not None:
            triple.insert(pos, "unit")
        for kind in triple:
            if kind == "conv":
                kernel = 1 if v == "NIN" else 3
                shapes[f"features.{index}.weight"] = (c, c_in, kernel, kernel)
                shapes[f"features.{index}.bias"] = (c,)
            elif kind == "bn":
                add_bn(shapes, f"features.{index}", c)
            elif kind == "unit":
                add_selfnorm(shapes, f"features.{index}", c, cnsn_type)
            index += 1
        c_in = c
    shapes["classifier.weight"], shapes["classifier.bias"] = (classes, w2), (classes,)
    return shapes


class Released:
    """Functional re-implementation of the released models' eval forward from a state dict."""

    def __init__(self, sd: dict[str, Tensor]) -> None:
        self.sd = sd

    def bn(self, x: Tensor, p: str) -> Tensor:
        return bn_eval(self.sd, x, p)

    def conv(self, x: Tensor, p: str, stride=1, padding=0, groups=1) -> Tensor:
        bias = self.sd.get(f"{p}.bias")
        return F.conv2d(x, self.sd[f"{p}.weight"], bias, stride, padding, 1, groups)

    def selfnorm(self, x: Tensor, p: str) -> Tensor:
        """Released SelfNorm (g only): x * sigmoid(BN(conv1d([mu, sigma])))."""
        n, c = x.shape[:2]
        flat = x.reshape(n, c, -1)
        stats = torch.stack((flat.mean(2), (flat.var(2) + 1e-12).sqrt()), -1)  # (N, C, 2)
        g = F.conv1d(stats, self.sd[f"{p}.g_fc.weight"], groups=c)  # (N, C, 1)
        return x * torch.sigmoid(self.bn(g, f"{p}.g_bn")).view(n, c, 1, 1)

    def wrn(self, x: Tensor, depth: int, k: int, pos: str) -> Tensor:
        widths, n = [16, 16 * k, 32 * k, 64 * k], (depth - 4) // 6
        out = self.conv(x, "conv1", 1, 1)
        for s in (1, 2, 3):
            for i in range(n):
                p = f"block{s}.layer.{i}"
                equal = i > 0 or widths[s - 1] == widths[s]
                stride = 2 if s > 1 and i == 0 else 1
                x = out
                if not equal:
                    x = F.relu(self.bn(x, f"{p}.bn1"))
                out = self.selfnorm(x, f"{p}.cnsn.selfnorm") if pos == "pre" else x
                if equal:
                    out = F.relu(self.bn(out, f"{p}.bn1"))
                out = F.relu(self.bn(self.conv(out, f"{p}.conv1", stride, 1), f"{p}.bn2"))
                out = self.conv(out, f"{p}.conv2", 1, 1)
                if not equal:
                    x = self.conv(x, f"{p}.conv_shortcut", stride, 0)
                if pos == "residual":
                    out = self.selfnorm(out, f"{p}.cnsn.selfnorm")
                elif pos == "identity":
                    x = self.selfnorm(x, f"{p}.cnsn.selfnorm")
                out = x + out
                if pos == "post":
                    out = self.selfnorm(out, f"{p}.cnsn.selfnorm")
        out = F.avg_pool2d(F.relu(self.bn(out, "bn1")), 8).view(out.shape[0], -1)
        return F.linear(out, self.sd["fc.weight"], self.sd["fc.bias"])

    def resnext(self, x: Tensor, depth: int, card: int, pos: str) -> Tensor:
        x = F.relu(self.bn(self.conv(x, "conv_1_3x3", 1, 1), "bn_1"))
        for s in (1, 2, 3):
            for i in range((depth - 2) // 9):
                p, stride = f"stage_{s}.{i}", 2 if s > 1 and i == 0 else 1
                residual = x
                if pos == "pre":
                    x = self.selfnorm(x, f"{p}.cnsn.selfnorm")
                b = F.relu(self.bn(self.conv(x, f"{p}.conv_reduce"), f"{p}.bn_reduce"))
                b = F.relu(self.bn(self.conv(b, f"{p}.conv_conv", stride, 1, card), f"{p}.bn"))
                b = self.bn(self.conv(b, f"{p}.conv_expand"), f"{p}.bn_expand")
                if pos == "residual":
                    b = self.selfnorm(b, f"{p}.cnsn.selfnorm")
                if pos == "identity":
                    residual = self.selfnorm(residual, f"{p}.cnsn.selfnorm")
                if i == 0:
                    residual = self.bn(
                        self.conv(x, f"{p}.downsample.0", stride), f"{p}.downsample.1"
                    )
                x = F.relu(residual + b)
                if pos == "post":
                    x = self.selfnorm(x, f"{p}.cnsn.selfnorm")
        x = F.avg_pool2d(x, 8).view(x.shape[0], -1)
        return F.linear(x, self.sd["classifier.weight"], self.sd["classifier.bias"])

    def densenet(self, x: Tensor, depth: int, pos: str) -> Tensor:
        out = self.conv(x, "conv1", 1, 1)
        for s in (1, 2, 3):
            for i in range((depth - 4) // 3):
                p, x = f"dense{s}.{i}", out
                if pos == "conv1_pre":
                    x = self.selfnorm(x, f"{p}.cnsn.selfnorm")
                new = self.conv(F.relu(self.bn(x, f"{p}.bn1")), f"{p}.conv1", 1, 1)
                if pos == "conv1_post":
                    new = self.selfnorm(new, f"{p}.cnsn.selfnorm")
                out = torch.cat((x, new), 1)
            if s < 3:
                out = F.avg_pool2d(
                    self.conv(F.relu(self.bn(out, f"trans{s}.bn1")), f"trans{s}.conv1"), 2
                )
        out = torch.squeeze(F.avg_pool2d(F.relu(self.bn(out, "bn1")), 8))
        return F.linear(out, self.sd["fc.weight"], self.sd["fc.bias"])

    def allconv(self, x: Tensor, pos: int) -> Tensor:
        index = 0
        for v in ALLCONV_CFG:
            if v == "Md":
                x, index = F.max_pool2d(x, 2, 2), index + 2  # dropout: identity in eval
                continue
            triple = ["conv", "bn", "gelu"]
            triple.insert(pos, "unit")
            for kind in triple:
                p = f"features.{index}"
                if kind == "conv":
                    x = self.conv(x, p, 1, 0 if v == "nopad" else 1)
                elif kind == "bn":
                    x = self.bn(x, p)
                elif kind == "gelu":
                    x = torch.sigmoid(1.702 * x) * x
                elif f"{p}.selfnorm.g_fc.weight" in self.sd:  # a "cn" unit: identity in eval
                    x = self.selfnorm(x, f"{p}.selfnorm")
                index += 1
        x = F.avg_pool2d(x, 8).view(x.shape[0], -1)
        return F.linear(x, self.sd["classifier.weight"], self.sd["classifier.bias"])


def check_released(model: nn.Module, shapes: dict, reference) -> None:
    """Names/shapes equal the released ones; strict load; eval output equals the reference."""
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == shapes
    state = random_state(shapes)
    model.double().load_state_dict(state, strict=True)
    x = images(2, seed=1, dtype=torch.float64)
    with torch.no_grad():
        out = model.eval()(x)
    expected = reference(Released(state), x)
    assert expected.abs().max() > 1e-3  # a meaningful comparison
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


def test_released_wrn_40_2_cnsn_post_checkpoint():
    shapes = released_wrn_shapes(depth=40, k=2, classes=100, pos="post")
    # a few released names written out in full
    assert shapes["block1.layer.0.cnsn.selfnorm.g_fc.weight"] == (32, 1, 2)
    assert shapes["block1.layer.0.conv_shortcut.weight"] == (32, 16, 1, 1)
    assert shapes["block2.layer.5.cnsn.selfnorm.g_bn.running_var"] == (64,)
    assert shapes["block3.layer.5.cnsn.selfnorm.g_bn.num_batches_tracked"] == ()
    assert "block2.layer.1.conv_shortcut.weight" not in shapes
    model = create_model("wrn", num_classes=100, cnsn_type="cnsn", pos="post", crop="both")
    check_released(model, shapes, lambda ref, x: ref.wrn(x, 40, 2, "post"))


@pytest.mark.parametrize("pos", ["pre", "residual", "identity"])
def test_released_wrn_positions(pos):
    shapes = released_wrn_shapes(depth=16, k=2, pos=pos)
    model = create_model("wrn", depth=16, cnsn_type="sn", pos=pos)
    check_released(model, shapes, lambda ref, x: ref.wrn(x, 16, 2, pos))


@pytest.mark.parametrize("pos", ["pre", "residual", "identity", "post"])
def test_released_resnext_positions(pos):
    shapes = released_resnext_shapes(depth=20, card=2, width=4, pos=pos)
    assert shapes["stage_2.0.downsample.0.weight"] == (512, 256, 1, 1)
    assert shapes["stage_1.1.cnsn.selfnorm.g_fc.weight"] == (256, 1, 2)
    model = create_model(
        "resnext", depth=20, cardinality=2, base_width=4, cnsn_type="cnsn", pos=pos
    )
    check_released(model, shapes, lambda ref, x: ref.resnext(x, 20, 2, pos))


@pytest.mark.parametrize(("pos", "released"), [("pre", "conv1_pre"), ("post", "conv1_post")])
def test_released_densenet_positions(pos, released):
    shapes = released_densenet_shapes(depth=13, k=4, pos=released)
    model = create_model("densenet", depth=13, growth_rate=4, cnsn_type="sn", pos=pos)
    check_released(model, shapes, lambda ref, x: ref.densenet(x, 13, released))


@pytest.mark.parametrize(("pos", "cnsn_type"), [(1, "cnsn"), (2, "sn"), (3, "cn")])
def test_released_allconv_positions(pos, cnsn_type):
    shapes = released_allconv_shapes(w1=8, w2=16, pos=pos, cnsn_type=cnsn_type)
    assert ("features.1.selfnorm.g_fc.weight" in shapes) == (pos == 1)
    assert ("features.2.weight" in shapes) == (pos == 1)  # the BN moved to index 2
    model = create_model("allconv", width1=8, width2=16, cnsn_type=cnsn_type, pos=str(pos))
    check_released(model, shapes, lambda ref, x: ref.allconv(x, pos))


@pytest.mark.parametrize(
    ("name", "kwargs", "shapes"),
    [
        ("allconv", dict(width1=8, width2=16), released_allconv_shapes(8, 16, cnsn_type=None)),
        (
            "densenet",
            dict(depth=13, growth_rate=4),
            released_densenet_shapes(13, 4, cnsn_type=None),
        ),
        ("wrn", dict(depth=16), released_wrn_shapes(16, 2, cnsn_type=None)),
        ("resnext", dict(depth=11), released_resnext_shapes(11, 4, 32, cnsn_type=None)),
    ],
)
def test_plain_models_have_augmix_names(name, kwargs, shapes):
    model = create_model(name, **kwargs)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes


def test_load_released_checkpoint_strips_dataparallel_prefix():
    kwargs = dict(depth=11, cardinality=2, base_width=4, cnsn_type="cnsn")
    state = random_state(released_resnext_shapes(depth=11, card=2, width=4, pos="post"), seed=3)
    checkpoint = {
        "epoch": 200,
        "best_acc": 0.9,
        "state_dict": {f"module.{k}": v for k, v in state.items()},
    }
    model = create_model("resnext", pos="post", **kwargs).double()
    assert load_released_checkpoint(model, checkpoint) is model
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    load_released_checkpoint(create_model("resnext", pos="post", **kwargs).double(), state)
    with pytest.raises(RuntimeError, match="size mismatch"):  # units at "pre" see 64 channels
        load_released_checkpoint(create_model("resnext", pos="pre", **kwargs), checkpoint)
