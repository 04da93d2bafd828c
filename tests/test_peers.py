"""MixStyle, pAdaIN and DSU against their papers' formulas; the CrossNorm switch drives them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sncn.layers import crossnorm_step, instance_stats, style_layers
from sncn.peers import DSU, MixStyle, PermutedAdaIN


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
    torch.testing.assert_close(
        sigma_mu.view(4), (mean.view(6, 4).var(0, unbiased=False) + 1e-6).sqrt()
    )
    torch.testing.assert_close(
        sigma_sigma.view(4), (std.view(6, 4).var(0, unbiased=False) + 1e-6).sqrt()
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
