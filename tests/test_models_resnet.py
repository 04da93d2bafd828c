"""ResNet-50 / IBN-Net with SN and CN: placements, IBN, released checkpoints, the insertion helper.

As for the CIFAR models, the released-code reference below re-implements the eval forward of the
paper's released ImageNet models (amazon-science/crossnorm-selfnorm,
``models/imagenet/resnet_cnsn.py`` and ``resnet_ibn_cnsn.py``) functionally from a state dict in
the released naming, so a strict load plus equal outputs checks names, shapes and wiring.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import bn_eval, gen, random_state
from torch import Tensor, nn

from sncn.layers import CNSN, crossnorm_step, style_layers
from sncn.models import create_model
from sncn.models.resnet import (
    IBN,
    RESNET_POSITIONS,
    TORCHVISION_RESNET50_WEIGHTS,
    add_cnsn,
    load_pretrained,
    load_released_checkpoint,
    torchvision_resnet50_state,
)

TINY = dict(layers=(1, 1, 2, 1), width=8, num_classes=5)


def images(n: int = 2, size: int = 64, seed: int = 0, dtype=torch.float32) -> Tensor:
    return torch.randn(n, 3, size, size, generator=gen(seed), dtype=dtype)


def units(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, CNSN)}


# ---------------------------------------------------------------------------------------------
# Placements, IBN, the CrossNorm switch
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ibn", [None, "a", "b"])
@pytest.mark.parametrize("pos", RESNET_POSITIONS)
@pytest.mark.parametrize("cnsn_type", ["sn", "cn", "cnsn"])
def test_forward_backward_every_placement(ibn, pos, cnsn_type):
    torch.manual_seed(0)
    model = create_model("resnet50", ibn=ibn, pos=pos, cnsn_type=cnsn_type, **TINY)
    found = units(model)
    # IBN-b at post-addition: the two blocks ending in instance norm have no unit (as released)
    assert len(found) == (3 if ibn == "b" and pos == "post" else 5)
    with crossnorm_step(model, 1.0, active_num=5):
        out = model.train()(images())
    assert out.shape == (2, 5)
    out.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for name, unit in found.items():
        stage, index = name.split(".")[:2]
        block = getattr(model, stage)[int(index)]
        expected = block.conv1.in_channels if pos == "pre" else block.bn3.num_features
        assert (unit.selfnorm or unit.crossnorm).num_channels == expected


def test_ibn_variants_follow_ibn_net():
    a = create_model("resnet50", ibn="a")
    b = create_model("resnet50", ibn="b")
    ibn_a = [n for n, m in a.named_modules() if isinstance(m, IBN)]
    assert len(ibn_a) == 3 + 4 + 6  # every bn1 of stages 1-3
    assert a.layer1[0].bn1.IN.num_features == 32 and a.layer1[0].bn1.BN.num_features == 32
    assert isinstance(a.layer4[0].bn1, nn.BatchNorm2d)
    assert isinstance(b.bn1, nn.InstanceNorm2d)
    with_in = [n for n, m in b.named_modules() if getattr(m, "IN", None) is not None]
    assert with_in == ["layer1.2", "layer2.3"]  # the last block of stages 1 and 2
    assert sum(p.numel() for p in a.parameters()) == 25_557_032  # IN + BN = BN's parameters


def test_plain_model_is_torchvision_resnet50():
    ours = create_model("resnet50").eval()
    theirs = torchvision.models.resnet50().eval()
    assert sum(p.numel() for p in ours.parameters()) == 25_557_032
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_image_crossnorm_is_the_released_recipe():
    """``image_cn``: one CN layer, on the input; off in eval and when not switched on."""
    torch.manual_seed(0)
    model = create_model("resnet50", cnsn_type="sn", image_cn=True, crop="both", **TINY)
    assert [n for n, _ in style_layers(model)] == ["image_cnsn.crossnorm"]
    assert model.image_cnsn.crossnorm.crop == "both"
    x = images(4)
    model.train()
    torch.manual_seed(1)
    off = model(x)
    torch.manual_seed(1)
    with crossnorm_step(model, 1.0, 1) as on_names:
        on = model(x)
    assert on_names == ["image_cnsn.crossnorm"]
    assert not torch.allclose(on, off)
    with torch.no_grad(), crossnorm_step(model, 1.0, 1):
        model.eval()
        torch.testing.assert_close(model(x), model(x))


def test_blocks_and_bad_arguments():
    model = create_model("resnet50", cnsn_type="sn", blocks=(1, 4), **TINY)
    assert sorted({n.split(".")[0] for n in units(model)}) == ["layer1", "layer4"]
    with pytest.raises(ValueError, match="unknown pos"):
        create_model("resnet50", pos="middle")
    with pytest.raises(ValueError, match="ibn must be"):
        create_model("resnet50", ibn="c")
    with pytest.raises(ValueError, match="blocks must be"):
        create_model("resnet50", cnsn_type="sn", blocks=(5,))
    with pytest.raises(ValueError, match="layers must be"):
        create_model("resnet50", layers=(3, 4, 6))
    with pytest.raises(ValueError, match="not both"):
        create_model("resnet50", cnsn_type="cn", image=True, image_cn=True)


def test_channels_last_matches_contiguous():
    model = create_model("resnet50", ibn="a", cnsn_type="sn", **TINY).eval()
    x = images()
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last)
        )
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Released checkpoints: keys in the released naming, outputs against the released forward
# ---------------------------------------------------------------------------------------------


def add_bn(shapes: dict, prefix: str, c: int) -> None:
    for suffix in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{suffix}"] = (c,)
    shapes[f"{prefix}.num_batches_tracked"] = ()


def add_in(shapes: dict, prefix: str, c: int) -> None:
    """``InstanceNorm2d(c, affine=True)``: weight and bias, no running statistics."""
    shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (c,), (c,)


def released_shapes(layers=(3, 4, 6, 3), w=64, classes=1000, ibn=None, pos="post", sn=True):
    """State-dict names and shapes of the released ``resnet50`` / ``resnet50_ibn_{a,b}``.

    ``sn``: the model has SelfNorm units (``cnsn_type`` "sn" or "cnsn"; a released CrossNorm has
    no state). With ``ibn=None`` and ``sn=False`` these are torchvision's names.
    """
    ibn_cfg = {None: (None,) * 4, "a": ("a", "a", "a", None), "b": ("b", "b", None, None)}[ibn]
    shapes = {"conv1.weight": (w, 3, 7, 7)}
    (add_in if ibn == "b" else add_bn)(shapes, "bn1", w)
    inp = w
    for s in range(4):
        p, out = w * 2**s, 4 * w * 2**s
        for i in range(layers[s]):
            q = f"layer{s + 1}.{i}"
            shapes[f"{q}.conv1.weight"] = (p, inp, 1, 1)
            if ibn_cfg[s] == "a":
                add_in(shapes, f"{q}.bn1.IN", p // 2)
                add_bn(shapes, f"{q}.bn1.BN", p - p // 2)
            else:
                add_bn(shapes, f"{q}.bn1", p)
            shapes[f"{q}.conv2.weight"] = (p, p, 3, 3)
            add_bn(shapes, f"{q}.bn2", p)
            shapes[f"{q}.conv3.weight"] = (out, p, 1, 1)
            add_bn(shapes, f"{q}.bn3", out)
            has_in = ibn_cfg[s] == "b" and i == layers[s] - 1
            if has_in:
                add_in(shapes, f"{q}.IN", out)
            if i == 0:
                shapes[f"{q}.downsample.0.weight"] = (out, inp, 1, 1)
                add_bn(shapes, f"{q}.downsample.1", out)
            if sn and not (has_in and pos == "post"):
                c = inp if pos == "pre" else out
                shapes[f"{q}.cnsn.selfnorm.g_fc.weight"] = (c, 1, 2)
                add_bn(shapes, f"{q}.cnsn.selfnorm.g_bn", c)
            inp = out
    shapes["fc.weight"], shapes["fc.bias"] = (classes, inp), (classes,)
    return shapes


class Released:
    """Functional re-implementation of the released ImageNet models' eval forward."""

    def __init__(self, sd: dict[str, Tensor], ibn: str | None, pos: str) -> None:
        self.sd, self.ibn, self.pos = sd, ibn, pos

    def bn(self, x: Tensor, p: str) -> Tensor:
        return bn_eval(self.sd, x, p)

    def inorm(self, x: Tensor, p: str) -> Tensor:
        return F.instance_norm(x, weight=self.sd[f"{p}.weight"], bias=self.sd[f"{p}.bias"])

    def norm(self, x: Tensor, p: str) -> Tensor:
        """BatchNorm, or IBN-a's half instance / half batch norm when the keys say so."""
        if f"{p}.IN.weight" not in self.sd:
            return self.bn(x, p)
        half = self.sd[f"{p}.IN.weight"].shape[0]
        return torch.cat((self.inorm(x[:, :half], f"{p}.IN"), self.bn(x[:, half:], f"{p}.BN")), 1)

    def conv(self, x: Tensor, p: str, stride=1, padding=0) -> Tensor:
        return F.conv2d(x, self.sd[f"{p}.weight"], None, stride, padding)

    def unit(self, x: Tensor, p: str) -> Tensor:
        """Released CNSN in eval: CrossNorm off; SelfNorm x * sigmoid(BN(conv1d([mu, sigma])))."""
        if f"{p}.selfnorm.g_fc.weight" not in self.sd:
            return x
        n, c = x.shape[:2]
        flat = x.reshape(n, c, -1)
        stats = torch.stack((flat.mean(2), (flat.var(2) + 1e-12).sqrt()), -1)  # (N, C, 2)
        g = F.conv1d(stats, self.sd[f"{p}.selfnorm.g_fc.weight"], groups=c)  # (N, C, 1)
        return x * torch.sigmoid(self.bn(g, f"{p}.selfnorm.g_bn")).view(n, c, 1, 1)

    def block(self, x: Tensor, q: str, stride: int) -> Tensor:
        identity, pos, u = x, self.pos, f"{q}.cnsn"
        out = x
        if pos == "pre":
            out = self.unit(x, u)
            if self.ibn is not None:  # resnet_ibn_cnsn.py: x = self.cnsn(x)
                x = out
        out = F.relu(self.norm(self.conv(out, f"{q}.conv1"), f"{q}.bn1"))
        out = F.relu(self.bn(self.conv(out, f"{q}.conv2", stride, 1), f"{q}.bn2"))
        out = self.bn(self.conv(out, f"{q}.conv3"), f"{q}.bn3")
        if f"{q}.downsample.0.weight" in self.sd:
            identity = self.bn(self.conv(x, f"{q}.downsample.0", stride), f"{q}.downsample.1")
        if pos == "residual":
            out = self.unit(out, u)
        elif pos == "identity":
            identity = self.unit(identity, u)
        out = out + identity
        if f"{q}.IN.weight" in self.sd:
            out = self.inorm(out, f"{q}.IN")
        elif pos == "post":
            out = self.unit(out, u)
        return F.relu(out)

    def __call__(self, x: Tensor, layers) -> Tensor:
        x = self.conv(x, "conv1", 2, 3)
        x = self.inorm(x, "bn1") if self.ibn == "b" else self.bn(x, "bn1")
        x = F.max_pool2d(F.relu(x), 3, 2, 1)
        for s, n in enumerate(layers):
            for i in range(n):
                x = self.block(x, f"layer{s + 1}.{i}", 2 if s > 0 and i == 0 else 1)
        x = x.mean((2, 3))  # AvgPool2d(7) at 224 px, adaptive pooling elsewhere
        return F.linear(x, self.sd["fc.weight"], self.sd["fc.bias"])


def check_released(model: nn.Module, shapes: dict, ibn, pos, layers, module_prefix=False):
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == shapes
    state = random_state(shapes)
    checkpoint = {"epoch": 90, "state_dict": state}
    if module_prefix:  # the released script saves DataParallel(net).state_dict()
        checkpoint["state_dict"] = {f"module.{k}": v for k, v in state.items()}
    load_released_checkpoint(model.double(), checkpoint)
    x = images(2, seed=1, dtype=torch.float64)
    with torch.no_grad():
        out = model.eval()(x)
    expected = Released(state, ibn, pos)(x, layers)
    assert expected.abs().max() > 1e-3  # a meaningful comparison
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("ibn", "pos", "cnsn_type", "image_cn"),
    [
        (None, "post", "sn", False),  # the released ResNet-50 + SN
        (None, "post", "sn", True),  # + CNSN: SN in the blocks, CN on the input
        (None, None, None, True),  # + CN: CN on the input only
        ("b", "residual", "sn", True),  # + CNSN + IBN(b) + AugMix
    ],
)
def test_released_resnet50_checkpoints(ibn, pos, cnsn_type, image_cn):
    layers = (3, 4, 6, 3)
    model = create_model(
        "resnet50", ibn=ibn, pos=pos or "post", cnsn_type=cnsn_type, image_cn=image_cn
    )
    shapes = released_shapes(layers, ibn=ibn, pos=pos, sn=cnsn_type is not None)
    if ibn is None and pos == "post" and cnsn_type:
        assert shapes["layer1.0.cnsn.selfnorm.g_fc.weight"] == (256, 1, 2)
        assert shapes["layer4.2.cnsn.selfnorm.g_bn.running_var"] == (2048,)
    check_released(model, shapes, ibn, pos, layers, module_prefix=True)


@pytest.mark.parametrize("ibn", [None, "a", "b"])
@pytest.mark.parametrize("pos", RESNET_POSITIONS)
def test_released_positions_and_ibn(ibn, pos):
    layers = (1, 1, 2, 1)
    model = create_model(
        "resnet50", ibn=ibn, pos=pos, cnsn_type="cnsn", layers=layers, width=8, num_classes=5
    )
    shapes = released_shapes(layers, w=8, classes=5, ibn=ibn, pos=pos)
    check_released(model, shapes, ibn, pos, layers)


def test_plain_ibn_names_are_ibn_nets():
    for ibn in ("a", "b"):
        model = create_model("resnet50", ibn=ibn)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == released_shapes(
            ibn=ibn, sn=False
        )


# ---------------------------------------------------------------------------------------------
# Fine-tuning: torchvision's ImageNet weights, loaded non-strictly
# ---------------------------------------------------------------------------------------------


def test_torchvision_weights_are_v1_the_released_file_re_saved():
    """run-cn.sh's resnet50-19c8e357.pth was re-serialised as resnet50-0676ba61.pth (V1)."""
    weights = torchvision.models.ResNet50_Weights[TORCHVISION_RESNET50_WEIGHTS]
    assert weights.url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert weights.meta["_metrics"]["ImageNet-1K"]["acc@1"] == 76.13
    assert weights != torchvision.models.ResNet50_Weights.DEFAULT  # V2: other weights


def test_torchvision_state_reads_the_hub_cache_or_says_where_to_put_it(tmp_path, monkeypatch):
    calls = []

    def no_network(url, dst, *args, **kwargs):
        calls.append(url)
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError, match="resnet50-0676ba61.pth") as error:
        torchvision_resnet50_state(progress=False)
    assert str(cache / "resnet50-0676ba61.pth") in str(error.value)
    assert "TORCH_HOME" in str(error.value) and "`pretrained`" in str(error.value)
    assert calls == ["https://download.pytorch.org/models/resnet50-0676ba61.pth"]
    state = {"conv1.weight": torch.randn(4, 3, 7, 7, generator=gen(1))}
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache / "resnet50-0676ba61.pth")
    torch.testing.assert_close(torchvision_resnet50_state(progress=False), state)
    other = tmp_path / "elsewhere"
    other.mkdir()
    torch.save(state, other / "resnet50-0676ba61.pth")
    torch.testing.assert_close(torchvision_resnet50_state(other, progress=False), state)
    assert len(calls) == 1  # cached files are read, never downloaded


def test_load_pretrained_keeps_units_and_a_resized_classifier():
    plain = create_model("resnet50", layers=(1, 1, 2, 1), width=8, num_classes=1000)
    theirs = random_state({k: v.shape for k, v in plain.state_dict().items()})
    theirs = {k: v.float() if v.is_floating_point() else v for k, v in theirs.items()}
    torch.manual_seed(0)
    model = create_model("resnet50", cnsn_type="sn", pos="post", **TINY)
    fresh = copy.deepcopy(model.state_dict())
    ddp_file = {"state_dict": {f"module.{k}": v for k, v in theirs.items()}}
    left = load_pretrained(model, ddp_file)
    assert set(left) == {k for k in fresh if ".cnsn." in k or k.startswith("fc.")} - {
        k for k in fresh if k.endswith("num_batches_tracked")
    }
    for key, value in model.state_dict().items():
        expected = fresh[key] if key in left or key not in theirs else theirs[key]
        assert torch.equal(value, expected), key
    # the shared part computes what the source does
    plain.load_state_dict(theirs)
    x = images()
    stem = nn.Sequential(plain.conv1, plain.bn1, plain.relu, plain.maxpool).eval()
    with torch.no_grad():
        ours = model.eval().maxpool(model.relu(model.bn1(model.conv1(x))))
        torch.testing.assert_close(ours, stem(x))
    with pytest.raises(ValueError, match="shape"):  # other widths do not fit
        load_pretrained(create_model("resnet50", layers=(1, 1, 2, 1), width=4), theirs)
    with pytest.raises(ValueError, match="lacks"):  # IBN-a's bn1 is IN + BN, not one BN
        load_pretrained(create_model("resnet50", ibn="a", **TINY), theirs)


# ---------------------------------------------------------------------------------------------
# add_cnsn: an existing torchvision / timm ResNet
# ---------------------------------------------------------------------------------------------


def _resnet50(library: str) -> torch.nn.Module:
    if library == "timm":  # timm names its ResNet's modules as torchvision does
        return pytest.importorskip("timm").create_model("resnet50", num_classes=7)
    return torchvision.models.resnet50(num_classes=7)


@pytest.mark.parametrize("library", ["torchvision", "timm"])
@pytest.mark.parametrize("pos", ["post", "residual"])
def test_add_cnsn_resnet50_equals_ours(pos, library):
    torch.manual_seed(0)
    tv = _resnet50(library)
    before = {k: v.clone() for k, v in tv.state_dict().items()}
    add_cnsn(tv, "cnsn", pos=pos)
    state = tv.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())  # old keys kept
    assert len(style_layers(tv)) == 16
    for name, value in state.items():  # non-trivial SelfNorm weights
        if "g_bn.bias" in name:
            value.normal_(0, 1, generator=gen(1))
    ours = create_model("resnet50", num_classes=7, cnsn_type="cnsn", pos=pos)
    ours.load_state_dict(state, strict=True)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(tv.eval()(x), ours.eval()(x))
    copied = copy.deepcopy(tv)  # hooks and swapped classes survive a deep copy
    with torch.no_grad():
        torch.testing.assert_close(copied.eval()(x), ours(x))


def test_add_cnsn_torchvision_resnet18_post_addition():
    """BasicBlock: the unit sees the sum before the ReLU, and the block outputs ReLU of it."""
    torch.manual_seed(0)
    tv = add_cnsn(torchvision.models.resnet18(num_classes=3), "sn", blocks=(2,))
    assert [n for n in units(tv)] == ["layer2.0.cnsn", "layer2.1.cnsn"]
    seen = {}

    class Record(nn.Module):
        def forward(self, x):
            seen["input"] = x.clone()
            return x

    block = tv.layer2[1]
    block.cnsn = Record()
    out = {}
    block.register_forward_hook(lambda m, i, o: out.setdefault("y", o.clone()))
    tv.eval()(images())
    assert (seen["input"] < 0).any()  # before the ReLU
    torch.testing.assert_close(out["y"], F.relu(seen["input"]))


def _regnet(library: str) -> torch.nn.Module:
    if library == "timm":
        return pytest.importorskip("timm").create_model("regnetx_002", num_classes=3)
    return torchvision.models.regnet_y_400mf(num_classes=3)


@pytest.mark.parametrize("library", ["torchvision", "timm"])
def test_add_cnsn_regnet_post_addition_and_residual(library):
    """RegNet blocks: the unit sees the block's sum before its activation (post), or the last
    BatchNorm's output of the residual branch (residual); every block gets one."""
    torch.manual_seed(0)
    model = add_cnsn(_regnet(library), "sn")
    with torch.no_grad():  # timm zero-initialises each block's last BatchNorm: sums >= 0
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(0, 1, generator=gen(2))
    names = units(model)
    blocks = [m for m in model.modules() if hasattr(m, "cnsn")]
    assert len(names) == len(blocks) > 4 and all(n.endswith(".cnsn") for n in names)
    seen, out = {}, {}

    class Record(nn.Module):
        def forward(self, x):
            seen["input"] = x.clone()
            return x

    block = blocks[-1]
    block.cnsn = Record()
    block.register_forward_hook(lambda m, i, o: out.setdefault("y", o.clone()))
    model.eval()(images())
    assert (seen["input"] < 0).any()  # the sum, before the activation
    torch.testing.assert_close(out["y"], F.relu(seen["input"]))

    residual = add_cnsn(_regnet(library), "cn", pos="residual", blocks=(4,))
    fourth = list(units(residual))
    assert fourth and all(n.startswith(("trunk_output.block4.", "s4.")) for n in fourth)
    with crossnorm_step(residual, 1.0, 8):
        residual.train()(images(4)).sum().backward()


@pytest.mark.parametrize("arch", ["wide_resnet50_2", "resnext50_32x4d"])
def test_add_cnsn_torchvision_wide_resnet_and_resnext(arch):
    model = add_cnsn(getattr(torchvision.models, arch)(num_classes=3), "cnsn")
    assert len(units(model)) == 16
    assert model.eval()(images(2)).shape == (2, 3)


def test_add_cnsn_crossnorm_trains():
    tv = add_cnsn(torchvision.models.resnet18(num_classes=3), "cn", crop="style")
    with crossnorm_step(tv, 1.0, 8):
        tv.train()(images(4)).sum().backward()
    assert tv.layer1[0].cnsn.crossnorm.crop == "style"


def test_add_cnsn_bad_inputs():
    with pytest.raises(ValueError, match="cnsn_type"):
        add_cnsn(torchvision.models.resnet18(), "se")
    with pytest.raises(ValueError, match="pos"):
        add_cnsn(torchvision.models.resnet18(), "sn", pos="identity")
    with pytest.raises(ValueError, match="layer1"):
        add_cnsn(torchvision.models.vgg11(), "sn")
    model = add_cnsn(torchvision.models.resnet18(), "sn")
    with pytest.raises(ValueError, match="already has"):
        add_cnsn(model, "sn")


@pytest.mark.parametrize("pos", ["post", "residual"])
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_add_cnsn_model_pickles_and_deep_copies(arch, pos, tmp_path, monkeypatch):
    """torch.save(model) / torch.load give the same model, also where the post-addition block
    class has not been made yet (a fresh process); copy.deepcopy keeps the block classes."""
    from sncn.models import add_cnsn as exported
    from sncn.models import resnet

    assert exported is add_cnsn
    torch.manual_seed(0)
    model = exported(getattr(torchvision.models, arch)(num_classes=3), "cnsn", pos=pos).eval()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    monkeypatch.setattr(resnet, "_POST_CLASSES", {})  # as in a new interpreter
    loaded = torch.load(path, weights_only=False).eval()
    block = loaded.layer1[0]
    assert type(block).__name__ == type(model.layer1[0]).__name__
    assert isinstance(block, type(model.layer1[0]).__mro__[1 if pos == "post" else 0])
    copied = copy.deepcopy(loaded)
    assert type(copied.layer1[0]) is type(block)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(copied(x), model(x), rtol=0, atol=0)
    with crossnorm_step(loaded.train(), 1.0, 2):  # its units are still switchable
        assert len(style_layers(loaded)) == (8 if arch == "resnet18" else 16)
        loaded(images(4)).sum().backward()


def test_add_cnsn_timm_resnet18_basic_blocks():
    timm = pytest.importorskip("timm")
    small = timm.create_model("resnet18", num_classes=3)  # basic blocks: the hook on act2
    add_cnsn(small, "sn")
    assert len(units(small)) == 8
    small.eval()(images())
