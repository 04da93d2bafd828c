"""MixStyle, pAdaIN and DSU against their papers' formulas; the CrossNorm switch drives them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sncn.layers import crossnorm_step, instance_stats, random_partner, style_layers
from sncn.peers import DSU, MixStyle, PermutedAdaIN

PEERS = {"mixstyle": MixStyle, "padain": PermutedAdaIN, "dsu": DSU}


def batch(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 4, 8, 8, generator=g) * 2 + torch.randn(6, 4, 1, 1, generator=g)


def test_mixstyle_lambda_one_is_identity_and_zero_swaps():
    x = batch()
    layer = MixStyle(4)
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    torch.testing.assert_close(layer.mix(x, torch.ones(6), perm), x, rtol=1e-4, atol=1e-4)
    swapped = layer.mix(x, torch.zeros(6), perm)
    mean, std = instance_stats(swapped, eps=layer.eps)
    ref_mean, ref_std = instance_stats(x, eps=layer.eps)
    torch.testing.assert_close(mean, ref_mean[perm], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(std, ref_std[perm], rtol=1e-4, atol=1e-4)


def test_mixstyle_statistics_are_detached():
    x = batch().requires_grad_()
    layer = MixStyle(4)
    out = layer.mix(x, torch.full((6,), 0.3), torch.tensor([1, 0, 3, 2, 5, 4]))
    out.sum().backward()
    # with detached statistics d(sum out)/dx = gamma_mix / sigma for every position
    _, ref_std = instance_stats(x.detach(), eps=layer.eps, keepdim=True)
    gamma = 0.3 * ref_std + 0.7 * ref_std[[1, 0, 3, 2, 5, 4]]
    torch.testing.assert_close(x.grad, (gamma / ref_std).expand_as(x), rtol=1e-4, atol=1e-4)


def test_padain_takes_the_partner_statistics():
    x = batch(1)
    perm = torch.tensor([3, 4, 5, 0, 1, 2])
    out = PermutedAdaIN(4).swap(x, perm)
    mean, std = instance_stats(out)
    ref_mean, ref_std = instance_stats(x)
    torch.testing.assert_close(mean, ref_mean[perm], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(std, ref_std[perm], rtol=1e-4, atol=1e-4)


def test_dsu_noise_scale_is_the_batch_std_of_the_statistics():
    x = batch(2)
    layer = DSU(4)
    mean, std = instance_stats(x, eps=layer.eps, keepdim=True)
    sigma_mu, sigma_sigma = layer.scales(mean, std)
    # the batch variance is Bessel-corrected, as torch.var in DSU's code
    torch.testing.assert_close(sigma_mu.view(4), (mean.view(6, 4).var(0) + 1e-6).sqrt())
    torch.testing.assert_close(sigma_sigma.view(4), (std.view(6, 4).var(0) + 1e-6).sqrt())
    biased, _ = DSU(4, unbiased=False).scales(mean, std)
    torch.testing.assert_close(
        biased.view(4), (mean.view(6, 4).var(0, unbiased=False) + 1e-6).sqrt()
    )
    zero = (torch.zeros_like(mean), torch.zeros_like(std))
    torch.testing.assert_close(layer.perturb(x, zero), x, rtol=1e-4, atol=1e-4)  # no noise: x
    ones = (torch.ones_like(mean), torch.zeros_like(std))
    shifted = layer.perturb(x, ones)
    out_mean, _ = instance_stats(shifted, eps=layer.eps, keepdim=True)
    torch.testing.assert_close(out_mean, mean + sigma_mu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer", [MixStyle, PermutedAdaIN, DSU])
def test_peers_follow_the_switch(layer):
    model = nn.Sequential(nn.Conv2d(4, 4, 1), layer(4, p=1.0), nn.Conv2d(4, 4, 1), layer(4, p=1.0))
    x = batch()
    torch.manual_seed(0)
    plain = model(x)
    assert len(style_layers(model)) == 2
    with crossnorm_step(model, 1.0, 2):
        perturbed = model(x)
    assert not torch.allclose(perturbed, plain)
    assert torch.equal(model(x), plain)  # off again after the step
    model.eval()
    with crossnorm_step(model, 1.0, 2):
        assert torch.equal(model(x), plain)  # eval: identity


def test_peer_probability_and_errors():
    layer = MixStyle(4, p=0.0)
    layer.active = True
    x = batch()
    assert layer(x) is x
    with pytest.raises(ValueError):
        MixStyle(4, p=2.0)
    with pytest.raises(ValueError, match="channels"):
        DSU(3, p=1.0).transform(x)


@pytest.mark.parametrize("backbone", ["allconv", "densenet", "wrn", "resnext"])
@pytest.mark.parametrize("peer", ["mixstyle", "padain", "dsu"])
def test_peers_in_the_cifar_models(backbone, peer):
    from test_models_cifar import TINY

    from sncn.models import create_model

    torch.manual_seed(0)
    model = create_model(backbone, num_classes=5, cnsn_type=peer, **TINY[backbone])
    units = style_layers(model)
    assert units and all(type(u).__name__ != "CrossNorm" for _, u in units)
    for _, unit in units:
        unit.p = 1.0
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(1)
    plain = model(x)
    with crossnorm_step(model, 1.0, len(units)):
        out = model(x)
    out.square().mean().backward()
    assert out.shape == (4, 5) and not torch.allclose(out, plain)


# ---------------------------------------------------------------------------------------------
# pAdaIN as its code does it: partner statistics detached, eps inside and outside the sqrt
# ---------------------------------------------------------------------------------------------


def padain_reference(x, perm, eps, content_eps):
    """The formula of PermutedAdaIN's docstring, written out with torch.var (Bessel)."""
    mu = x.mean(dim=(2, 3), keepdim=True)
    sd = (x.var(dim=(2, 3), keepdim=True) + eps).sqrt()
    return (x - mu) / (sd + content_eps) * sd[perm] + mu[perm]


def test_padain_formula_and_eps_placement():
    x = batch(3).double()
    perm = torch.tensor([2, 0, 1, 5, 3, 4])
    layer = PermutedAdaIN(4, eps=0.5)  # a large eps, so where it goes shows
    torch.testing.assert_close(layer.swap(x, perm), padain_reference(x, perm, 0.5, 0.5))
    cifar_c_code = PermutedAdaIN(4, eps=0.0, content_eps=0.25)
    torch.testing.assert_close(cifar_c_code.swap(x, perm), padain_reference(x, perm, 0.0, 0.25))
    assert not torch.allclose(layer.swap(x, perm), padain_reference(x, perm, 0.5, 0.0))
    one_position = batch(4)[:, :, :1, :1]
    assert PermutedAdaIN(4).swap(one_position, perm) is one_position


def finite_difference(f, x, h=1e-6):
    grad = torch.zeros_like(x)
    flat = grad.view(-1)
    for i in range(x.numel()):
        step = torch.zeros_like(x).view(-1)
        step[i] = h
        step = step.view_as(x)
        flat[i] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


@pytest.mark.parametrize("detach", [True, False])
def test_padain_gradient_does_not_flow_into_the_partner_statistics(detach):
    x = batch(5).double()[:4, :2, :3, :3].contiguous()
    perm = torch.tensor([1, 0, 3, 2])
    w = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    layer = PermutedAdaIN(2, detach=detach)

    def loss(inp):  # sample 0's output only: its partner is sample 1
        return (layer.swap(inp, perm)[0] * w).sum()

    x_req = x.clone().requires_grad_()
    loss(x_req).backward()
    numeric = finite_difference(loss, x)
    assert numeric[1].abs().max() > 1e-3  # the output does depend on the partner ...
    if detach:  # ... but no gradient flows into the partner's statistics
        assert torch.equal(x_req.grad[1], torch.zeros_like(x_req.grad[1]))
        torch.testing.assert_close(x_req.grad[0], numeric[0], rtol=1e-5, atol=1e-7)
    else:
        torch.testing.assert_close(x_req.grad, numeric, rtol=1e-5, atol=1e-7)


def test_padain_pairs_by_a_random_permutation_from_torch():
    x = batch(6)
    layer = PermutedAdaIN(4, p=1.0)
    torch.manual_seed(7)
    out = layer.perturb(x)
    torch.manual_seed(7)
    torch.testing.assert_close(out, layer.swap(x, torch.randperm(6)))
    derange = PermutedAdaIN(4, p=1.0, pairing="derangement")
    torch.manual_seed(7)
    out = derange.perturb(x)
    torch.manual_seed(7)
    torch.testing.assert_close(out, derange.swap(x, random_partner(6)))
    with pytest.raises(ValueError, match="pairing"):
        PermutedAdaIN(4, pairing="cycle")


def test_unswitched_peers_act_at_every_training_forward():
    x = batch()
    for layer in (MixStyle(4, p=1.0, switched=False), DSU(4, p=1.0, switched=False)):
        model = nn.Sequential(layer)
        torch.manual_seed(0)
        assert not torch.allclose(model(x), x)  # on without the switch
        with crossnorm_step(model, 0.0, 1):  # the switch neither turns it off ...
            assert not torch.allclose(model(x), x)
        model.eval()
        with crossnorm_step(model, 1.0, 1):  # ... nor on in eval()
            assert torch.equal(model(x), x)


# ---------------------------------------------------------------------------------------------
# Peers at their own papers' sites in the CIFAR models
# ---------------------------------------------------------------------------------------------

WRN_CONVS = [f"block{s}.layer.{i}.conv{c}" for s in (1, 2, 3) for i in (0, 1) for c in (1, 2)]
RESNEXT_CONVS = [
    f"stage_{s}.{i}.{c}" for s in (1, 2, 3) for i in (0, 1)
    for c in ("conv_reduce", "conv_conv", "conv_expand")
]  # fmt: skip
#: the documented sites (sncn.models.cifar.own_peer_sites) in the TINY models
OWN_SITE_NAMES = {
    ("wrn", "padain"): [f"{n}.padain" for n in ["conv1", *WRN_CONVS]],
    ("wrn", "mixstyle"): ["block1.mixstyle", "block2.mixstyle"],
    ("wrn", "dsu"): ["conv1.dsu", "block1.dsu", "block2.dsu", "block3.dsu"],
    ("resnext", "padain"): [f"{n}.padain" for n in ["conv_1_3x3", *RESNEXT_CONVS]],
    ("resnext", "mixstyle"): ["stage_1.1.mixstyle", "stage_2.1.mixstyle"],
    ("resnext", "dsu"): ["conv_1_3x3.dsu", "stage_1.0.dsu_input", "stage_1.1.dsu",
                         "stage_2.1.dsu", "stage_3.1.dsu"],
    ("densenet", "padain"): ["conv1.padain"] + [f"dense{s}.{i}.conv1.padain"
                                                for s in (1, 2, 3) for i in (0, 1)],
    ("densenet", "mixstyle"): ["dense1.1.mixstyle", "dense2.1.mixstyle"],
    ("densenet", "dsu"): ["conv1.dsu", "dense1.1.dsu", "dense2.1.dsu", "dense3.1.dsu"],
}  # fmt: skip


@pytest.mark.parametrize(("backbone", "peer"), sorted(OWN_SITE_NAMES))
def test_peers_at_their_own_sites(backbone, peer):
    from test_models_cifar import TINY

    from sncn.models import create_model

    torch.manual_seed(0)
    model = create_model(
        backbone, num_classes=5, cnsn_type=peer, peer_sites="own", **TINY[backbone]
    )
    layers = style_layers(model)
    assert [name for name, _ in layers] == OWN_SITE_NAMES[(backbone, peer)]
    assert all(type(m) is PEERS[peer] and not m.switched for _, m in layers)
    assert model.peer_sites == "own" and model.unit_spec.cnsn_type == peer
    plain = create_model(backbone, num_classes=5, **TINY[backbone])
    plain.load_state_dict(model.state_dict())  # same keys: the peers have no state
    calls = {name: 0 for name, _ in layers}
    for name, m in layers:
        m.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    x = torch.randn(4, 3, 16, 16)
    for _, m in layers:
        m.p = 0.0
    torch.testing.assert_close(model(x), plain(x))  # p = 0: the backbone itself
    for _, m in layers:
        m.p = 1.0
    out = model(x)  # no crossnorm_step: on at every training forward
    out.square().mean().backward()
    assert not torch.allclose(out, plain(x))
    assert set(calls.values()) == {2}  # every site is on the forward path, once per pass
    plain.load_state_dict(model.state_dict())  # the same BatchNorm running statistics
    model.eval(), plain.eval()
    torch.testing.assert_close(model(x), plain(x))  # eval: the backbone itself


def test_own_sites_errors():
    from sncn.models import create_model
    from sncn.models.cifar import own_peer_sites

    with pytest.raises(ValueError, match="peer of CrossNorm"):
        create_model("wrn", depth=10, cnsn_type="cn", peer_sites="own")
    with pytest.raises(ValueError, match="blocks and image"):
        create_model("wrn", depth=10, cnsn_type="dsu", blocks=(1,), peer_sites="own")
    with pytest.raises(ValueError, match="peer_sites"):
        create_model("wrn", depth=10, cnsn_type="dsu", peer_sites="paper")
    with pytest.raises(ValueError, match="own peer sites"):
        own_peer_sites(create_model("allconv", width1=8, width2=16), "dsu")
    cn_slots = create_model("wrn", depth=10, widen_factor=1, cnsn_type="dsu")
    assert cn_slots.peer_sites == "crossnorm"
    assert [n for n, _ in style_layers(cn_slots)] == [f"block{s}.layer.0.cnsn" for s in (1, 2, 3)]


# ---------------------------------------------------------------------------------------------
# The peers study runs both placements and says which in its table
# ---------------------------------------------------------------------------------------------


def test_peers_study_lists_both_placements():
    from sncn.experiments import ablations
    from sncn.experiments.cifar_c import apply_overrides
    from sncn.hparams import cifar_setting
    from sncn.models import create_model

    arms = ablations.WRN_STUDIES["peers"]
    peer_arms = [a for a in arms if a.overrides.get("model", {}).get("cnsn_type") in PEERS]
    assert [a.label for a in peer_arms] == [
        "MixStyle (CN slots)", "pAdaIN (CN slots)", "DSU (CN slots)",
        "MixStyle (own sites)", "pAdaIN (own sites)", "DSU (own sites)",
    ]  # fmt: skip
    for arm in peer_arms[:3]:  # CN slots: the settings (and so the run names) as before
        peer = arm.overrides["model"]["cnsn_type"]
        assert arm.overrides == {
            "model": {"cnsn_type": peer, "pos": "post", "crop": None, "beta": None},
            "cn_prob": 1.0,
            "active_num": 1000,
        }
        assert arm.placement.startswith("CN slots")
    for arm in peer_arms[3:]:
        peer = arm.overrides["model"]["cnsn_type"]
        assert arm.overrides["model"]["peer_sites"] == "own"
        assert arm.placement.startswith("own sites")
        setting = apply_overrides(cifar_setting("cifar10", "wrn", "cn"), arm.overrides)
        model = create_model("wrn", num_classes=10, **setting["model"], depth=10, widen_factor=1)
        assert {type(m) for _, m in style_layers(model)} == {PEERS[peer]}
        assert not any(name.endswith("cnsn") for name, _ in style_layers(model))


def test_peers_table_has_a_placement_column():
    from sncn.experiments import ablations

    metrics = [{"mce": 20.0, "clean_error": 5.0, "cifar_c": "generated"}]
    rows = ablations.study_rows([(a, metrics) for a in ablations.WRN_STUDIES["peers"]])
    assert [r["placement"].split(":")[0] for r in rows] == ["CN slots"] * 5 + ["own sites"] * 3
    assert list(rows[0])[:2] == ["arm", "placement"]
    other = ablations.study_rows([(a, metrics) for a in ablations.WRN_STUDIES["table5_order"]])
    assert "placement" not in other[0]


@pytest.mark.parametrize("peer", [MixStyle, PermutedAdaIN, DSU])
def test_peers_check_their_input_when_off_too(peer):
    layer = peer(4)
    good = torch.randn(2, 4, 5, 5)
    for training in (False, True):  # eval, and training while switched off
        layer.train(training)
        assert torch.equal(layer(good), good)
        with pytest.raises(ValueError, match="4 channels"):
            layer(torch.randn(2, 3, 5, 5))
        with pytest.raises(ValueError, match="floating-point"):
            layer(torch.zeros(2, 4, 5, 5, dtype=torch.long))


@pytest.mark.slow
@pytest.mark.parametrize("peer", sorted(PEERS))
def test_compiled_peers_are_one_graph_whatever_is_switched_and_drawn(peer):
    # traced, the peers' switch and their "fires with probability p" draw stay tensors: one
    # graph, no break, no recompilation over steps that switch units on and off
    import torch._dynamo
    from torch._dynamo.utils import counters

    from sncn.train import Trainer, sgd

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=1), PEERS[peer](4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), PEERS[peer](4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip
    trainer = Trainer(model, sgd(model, 0.05), cn_prob=0.6, compile={"backend": "aot_eager"})
    torch._dynamo.reset()
    counters.clear()
    x, y = batch(), torch.arange(6) % 4
    before = [p.detach().clone() for p in model.parameters()]
    trainer.update((x, y))
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(5):
            assert torch.isfinite(torch.tensor(trainer.update((x, y))["loss"]))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not any(layer.active for _, layer in style_layers(model))
