"""SelfNorm, CrossNorm, the CNSN unit and the CrossNorm switch against the paper's equations."""

from __future__ import annotations

import copy
import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import gen
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sncn.layers import (
    BOX_SAMPLERS,
    CNSN,
    CROP_MODES,
    CrossNorm,
    SelfNorm,
    _batch_norm,
    activate_crossnorm,
    crossnorm,
    crossnorm_step,
    deactivate_crossnorm,
    instance_stats,
    random_partner,
    sample_box,
    style_layers,
    wrap_output,
)


def ref_stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 reference: mean and sqrt(unbiased var + eps) over the spatial dimensions."""
    dims = tuple(range(2, x.dim()))
    xd = x.double()
    return xd.mean(dims), (xd.var(dims) + eps).sqrt()


def standardise(x: torch.Tensor) -> torch.Tensor:
    mean, std = ref_stats(x, 0.0)
    shape = (*mean.shape, *([1] * (x.dim() - 2)))
    return (x.double() - mean.view(shape)) / std.view(shape)


# ---------------------------------------------------------------------------------------------
# instance statistics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 3, 7), (4, 3, 5, 6), (2, 8, 1, 9)])
def test_instance_stats_match_definition(shape):
    x = torch.randn(shape, generator=gen()) * 3 + 2
    mean, std = instance_stats(x, eps=1e-5)
    ref_mean, ref_std = ref_stats(x, 1e-5)
    torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std.double(), ref_std, rtol=1e-5, atol=1e-6)
    m4, s4 = instance_stats(x, keepdim=True)
    assert m4.shape == s4.shape == (*shape[:2], *([1] * (len(shape) - 2)))


@pytest.mark.parametrize(
    "layout",
    [
        lambda x: x.contiguous(memory_format=torch.channels_last),
        lambda x: x.transpose(2, 3),
        lambda x: x[:, :, 1:6, 2:7],
        lambda x: x[::2],
    ],
    ids=["channels_last", "transposed", "box_view", "strided_batch"],
)
def test_instance_stats_any_layout(layout):
    x = layout(torch.randn(6, 5, 8, 8, generator=gen()))
    mean, std = instance_stats(x)
    ref_mean, ref_std = ref_stats(x, 1e-5)
    torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std.double(), ref_std, rtol=1e-5, atol=1e-6)


def test_instance_stats_large_offset_is_accurate():
    # sums of x and x^2 in float32 would lose the variance entirely at mean 1e4, std 1
    x = torch.randn(8, 4, 32, 32, generator=gen()) + 1e4
    _, std = instance_stats(x, eps=0.0)
    _, ref_std = ref_stats(x, 0.0)
    torch.testing.assert_close(std.double(), ref_std, rtol=1e-3, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_instance_stats_low_precision_accumulates_in_fp32(dtype):
    x = (torch.randn(4, 6, 16, 16, generator=gen()) * 2 + 50).to(dtype)
    mean, std = instance_stats(x)
    assert mean.dtype == std.dtype == torch.float32
    ref_mean, ref_std = ref_stats(x.float(), 1e-5)  # the exact statistics of the rounded input
    torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(std.double(), ref_std, rtol=1e-4, atol=1e-5)


def test_instance_stats_single_position_is_finite():
    x = torch.randn(3, 4, 1, 1, generator=gen(), requires_grad=True)
    mean, std = instance_stats(x, eps=1e-5)
    torch.testing.assert_close(mean, x.detach().view(3, 4))
    torch.testing.assert_close(std, torch.full((3, 4), math.sqrt(1e-5)))
    (mean.sum() + std.sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_instance_stats_gradient():
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64, generator=gen(), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: instance_stats(t), (x,))


# ---------------------------------------------------------------------------------------------
# SelfNorm: Eq. 2
# ---------------------------------------------------------------------------------------------


def selfnorm_reference(sn: SelfNorm, x: torch.Tensor) -> torch.Tensor:
    """Eq. 2: sigma_hat (x - mu) / sigma + mu_hat; sigma_hat = g sigma, mu_hat = f mu."""
    mu, sigma = ref_stats(x, sn.eps)
    mu, sigma = mu.to(x.dtype), sigma.to(x.dtype)

    def attention(fc, bn):
        w = fc.weight.view(-1, 2)
        z = w[:, 0] * mu + w[:, 1] * sigma
        return torch.sigmoid(
            F.batch_norm(
                z, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.training, 0.0, bn.eps
            )
        )

    g = attention(sn.g_fc, sn.g_bn)
    f = attention(sn.f_fc, sn.f_bn) if sn.two_functions else g
    shape = (*mu.shape, *([1] * (x.dim() - 2)))
    sigma_hat, mu_hat = (g * sigma).view(shape), (f * mu).view(shape)
    return sigma_hat * (x - mu.view(shape)) / sigma.view(shape) + mu_hat


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BatchNorm buffer non-trivial values."""
    g = gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return module


@pytest.mark.parametrize("two_functions", [False, True])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape", [(6, 5, 7, 7), (6, 5, 11)])
def test_selfnorm_equals_equation_2(two_functions, train, shape):
    sn = randomise(SelfNorm(5, two_functions=two_functions)).train(train)
    x = torch.randn(shape, generator=gen(1)) * 2 + 1
    expected = selfnorm_reference(copy.deepcopy(sn), x)
    torch.testing.assert_close(sn(x), expected, rtol=1e-5, atol=1e-5)


def test_selfnorm_g_only_scales_mean_and_std_together():
    sn = randomise(SelfNorm(4)).eval()
    x = torch.randn(3, 4, 8, 8, generator=gen()) + 3
    out = sn(x)
    m_in, s_in = instance_stats(x, eps=0.0)
    m_out, s_out = instance_stats(out, eps=0.0)
    torch.testing.assert_close(m_out / m_in, s_out / s_in, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("two_functions", [False, True])
def test_selfnorm_gradients_reach_input_and_parameters(two_functions):
    sn = randomise(SelfNorm(3, two_functions=two_functions)).double()
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64, generator=gen(), requires_grad=True)
    assert torch.autograd.gradcheck(sn, (x,))
    sn(x).square().sum().backward()
    for name, p in sn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_selfnorm_updates_running_stats_in_training_only():
    sn = SelfNorm(3)
    x = torch.randn(8, 3, 4, 4, generator=gen())
    sn.eval()(x)
    assert torch.equal(sn.g_bn.running_mean, torch.zeros(3))
    sn.train()(x)
    assert not torch.equal(sn.g_bn.running_mean, torch.zeros(3))


def test_selfnorm_batch_of_one_uses_running_stats_in_training():
    sn = randomise(SelfNorm(3))
    x = torch.randn(1, 3, 4, 4, generator=gen())
    before = sn.g_bn.running_mean.clone()
    out_train = sn.train()(x)
    torch.testing.assert_close(out_train, sn.eval()(x))
    assert torch.equal(sn.g_bn.running_mean, before)


# ---------------------------------------------------------------------------------------------
# CrossNorm: Eq. 3-6
# ---------------------------------------------------------------------------------------------


def test_random_partner_permutation_is_the_released_randperm():
    for n in range(2, 12):
        p = random_partner(n, gen(n))  # default: the released code's pairing
        assert torch.equal(p, torch.randperm(n, generator=gen(n)))
    # a sample keeps its own statistics with probability 1/n (about 1 in 4 here)
    kept = torch.stack([random_partner(4, gen(s)) == torch.arange(4) for s in range(2000)])
    assert abs(kept.float().mean() - 0.25) < 0.02


def test_random_partner_derangement_is_a_pairing():
    for n in range(2, 12):
        p = random_partner(n, gen(n), pairing="derangement")
        assert sorted(p.tolist()) == list(range(n))  # a permutation
        assert (p != torch.arange(n)).all()  # nobody is its own partner
        if n % 2 == 0:
            assert torch.equal(p[p], torch.arange(n))  # pairs swap with each other
    with pytest.raises(ValueError):
        random_partner(1)
    with pytest.raises(ValueError, match="pairing must be one of"):
        random_partner(4, pairing="swap")


def test_crossnorm_two_instance_swaps_statistics():
    x = torch.randn(6, 4, 8, 8, generator=gen()) * torch.rand(6, 4, 1, 1) * 3 + torch.randn(
        6, 4, 1, 1
    )
    out = crossnorm(x, instances=2, generator=gen(5), eps=1e-8)
    partner = random_partner(6, gen(5))  # the first draw of crossnorm
    m_x, s_x = ref_stats(x, 0.0)
    m_o, s_o = ref_stats(out, 0.0)
    torch.testing.assert_close(m_o, m_x[partner], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s_o, s_x[partner], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(standardise(out), standardise(x), rtol=1e-4, atol=1e-4)


def test_crossnorm_one_instance_swaps_channels():
    x = torch.randn(3, 6, 8, 8, generator=gen()) * 2 + torch.arange(6.0).view(1, 6, 1, 1)
    out = crossnorm(x, instances=1, generator=gen(7), eps=1e-8)
    partner = random_partner(6, gen(7))
    m_x, s_x = ref_stats(x, 0.0)
    m_o, s_o = ref_stats(out, 0.0)
    torch.testing.assert_close(m_o, m_x[:, partner], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s_o, s_x[:, partner], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(standardise(out), standardise(x), rtol=1e-4, atol=1e-4)


def box_of_change(x: torch.Tensor, out: torch.Tensor) -> tuple[slice, slice]:
    changed = (out != x).any(0).any(0)  # (H, W)
    rows, cols = changed.any(1).nonzero().view(-1), changed.any(0).nonzero().view(-1)
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def test_crossnorm_content_crop_restyles_only_a_box():
    x = torch.randn(4, 3, 16, 16, generator=gen()) * 2 + torch.randn(4, 3, 1, 1) * 3
    out = crossnorm(x, crop="content", threshold=0.1, generator=gen(3), eps=1e-8)
    partner = random_partner(4, gen(3))
    r, c = box_of_change(x, out)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[r, c] = True
    assert torch.equal(out[..., ~inside], x[..., ~inside])  # outside the box: untouched
    assert inside.float().mean() >= 0.1  # Eq. 6: area ratio at least t
    m_box, s_box = ref_stats(out[:, :, r, c], 0.0)
    m_x, s_x = ref_stats(x, 0.0)  # the partner gives whole-map statistics
    torch.testing.assert_close(m_box, m_x[partner], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s_box, s_x[partner], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        standardise(out[:, :, r, c]), standardise(x[:, :, r, c]), rtol=1e-4, atol=1e-4
    )


def test_crossnorm_style_crop_takes_box_statistics():
    x = torch.randn(4, 3, 16, 16, generator=gen()) * 2 + torch.randn(4, 3, 1, 1) * 3
    out = crossnorm(x, crop="style", generator=gen(9), eps=1e-8)
    g = gen(9)  # crossnorm's draws, in order: the pairing, then the style box
    partner = random_partner(4, g)
    box = sample_box((16, 16), 1.0, 0.1, g)
    m_b, s_b = ref_stats(x[(slice(None), slice(None), *box)], 0.0)
    m_o, s_o = ref_stats(out, 0.0)
    torch.testing.assert_close(m_o, m_b[partner], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s_o, s_b[partner], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(standardise(out), standardise(x), rtol=1e-4, atol=1e-4)


def test_crossnorm_both_crop_changes_only_a_box_with_box_statistics():
    x = torch.randn(4, 3, 16, 16, generator=gen()) + torch.randn(4, 3, 1, 1) * 3
    out = crossnorm(x, crop="both", generator=gen(2))
    r, c = box_of_change(x, out)
    assert (out[:, :, r, c] != x[:, :, r, c]).all()
    torch.testing.assert_close(
        standardise(out[:, :, r, c]), standardise(x[:, :, r, c]), rtol=1e-3, atol=1e-3
    )


def test_crossnorm_partial_mixing():
    x = torch.randn(4, 3, 8, 8, generator=gen())
    full = crossnorm(x, generator=gen(4))
    mixed = crossnorm(x, lam=0.25, generator=gen(4))
    torch.testing.assert_close(mixed, 0.25 * x + 0.75 * full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(crossnorm(x, lam=1.0, generator=gen(4)), x)


@pytest.mark.parametrize("crop", ["neither", "style", "content", "both"])
@pytest.mark.parametrize("instances", [1, 2])
def test_crossnorm_gradients(crop, instances):
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64, generator=gen(), requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: crossnorm(t, instances=instances, crop=crop, generator=gen(1)), (x,)
    )


@pytest.mark.parametrize("crop", CROP_MODES)
@pytest.mark.parametrize("instances", [1, 2])
def test_crossnorm_gradients_with_partial_mixing_and_groups(crop, instances):
    # lam and groups change the (N, C) coefficients: a * (x - mu_A) + c with a = 1, c = mu_A for
    # the sample left alone (group -1)
    x = torch.randn(5, 2, 5, 5, dtype=torch.float64, generator=gen(), requires_grad=True)
    groups = torch.tensor([0, 0, 1, 1, -1])

    def run(t, lam=0.3):
        return crossnorm(t, instances, crop, lam=lam, groups=groups, generator=gen(1))

    assert torch.autograd.gradcheck(run, (x,))
    assert torch.equal(run(x, None)[4], x[4])  # left alone: exactly unchanged, box or not
    torch.testing.assert_close(run(x)[4], x[4], rtol=1e-14, atol=1e-14)  # lam: a, c rounded


@pytest.mark.parametrize("box", BOX_SAMPLERS)
@pytest.mark.parametrize("crop", ["content", "both"])
def test_crossnorm_restyles_the_box_sample_box_draws(crop, box):
    # the boxes are drawn as tensors and never read back; with a generator in the same state,
    # sample_box (after the pairing) returns the content box crossnorm restyled
    x = torch.randn(4, 3, 16, 16, generator=gen()) * 2 + torch.randn(4, 3, 1, 1) * 3
    for seed in range(8):
        out = crossnorm(x, crop=crop, box=box, generator=gen(seed))
        g = gen(seed)
        random_partner(4, g)
        assert box_of_change(x, out) == sample_box((16, 16), 1.0, 0.1, g, box)


@pytest.mark.parametrize("crop", ["style", "content", "both"])
def test_crossnorm_crop_accurate_at_a_large_offset(crop):
    # box statistics at mean 1e4, std 1 in float32: errors of a few roundings of the offset
    # (u |mu| / sigma = 6e-4; the old per-box Welford code: 6e-4 to 9e-4 here), where the
    # one-pass sum of squares would lose the variance (error of order one)
    x = (torch.randn(4, 8, 16, 16, generator=gen(), dtype=torch.float64) + 1e4).float()
    grad = torch.randn(4, 8, 16, 16, generator=gen(1), dtype=torch.float64)
    low, ref = x.clone().requires_grad_(), x.double().requires_grad_()
    out = crossnorm(low, crop=crop, generator=gen(2))
    out.backward(grad.float())
    expected = crossnorm(ref, crop=crop, generator=gen(2))
    expected.backward(grad)
    tol = 8 * 2.0**-24 * (1 + 1e4)
    spread = (expected - expected.mean((2, 3), keepdim=True)).detach().norm()
    assert float((out.detach().double() - expected.detach()).norm() / spread) < tol
    assert rel_err(low.grad, ref.grad) < tol


@pytest.mark.parametrize("crop", ["neither", "style", "content", "both"])
def test_crossnorm_is_seeded(crop):
    x = torch.randn(8, 4, 12, 12, generator=gen())
    layer = CrossNorm(4, crop=crop).train()
    layer.active = True
    torch.manual_seed(123)
    a = layer(x)
    torch.manual_seed(123)
    b = layer(x)
    torch.manual_seed(124)
    c = layer(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def dynamo_graphs() -> int:
    """How many graphs dynamo has compiled in this process."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


#: Dynamo settings of the compile tests: ``autograd.grad`` (in the backward of the fused layers,
#: SelfNorm's and uncropped CrossNorm's) is traced where the installed torch can.
TRACE_GRAD = (
    {"trace_autograd_ops": True} if hasattr(torch._dynamo.config, "trace_autograd_ops") else {}
)


@pytest.mark.slow
@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "autocast-bf16"])
def test_compiled_crossnorm_is_one_graph_whatever_the_boxes(autocast):
    # Fixed shapes: boxes drawn as tensors and applied as weights, so a compiled step is traced
    # once (one graph: no value read on the host) and never recompiled, while every call draws
    # new boxes
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(4, 3, 12, 12, generator=gen())
    weights = torch.randn(4, 4, 12, 12, generator=gen())  # a loss whose gradient differs by place
    for crop in CROP_MODES:
        torch._dynamo.reset()

        def step(t, crop=crop):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return crossnorm(conv(t), crop=crop)

        # without TRACE_GRAD, "neither" and "style" (SelfNorm's fused layer) break once
        fullgraph = bool(TRACE_GRAD) or crop in ("content", "both")
        compiled = torch.compile(step, backend="aot_eager", fullgraph=fullgraph)
        with torch._dynamo.config.patch(**TRACE_GRAD):
            torch.manual_seed(0)
            first = compiled(x)
        graphs, boxes = dynamo_graphs(), set()
        with torch._dynamo.config.patch(error_on_recompile=True, **TRACE_GRAD):
            for seed in range(1, 6):
                outs, grads = [], []
                for run in (compiled, step):  # the same draws: the same output and gradients
                    conv.zero_grad()
                    torch.manual_seed(seed)
                    outs.append(run(x))
                    (outs[-1].float() * weights).sum().backward()
                    grads.append(conv.weight.grad.clone())
                out = outs[0]
                torch.testing.assert_close(out, outs[1], rtol=0, atol=0)
                torch.testing.assert_close(grads[0], grads[1])
                if crop in ("content", "both"):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                        h = conv(x)
                    rows, cols = box_of_change(h, out)
                    boxes.add((rows.start, rows.stop, cols.start, cols.stop))
        assert dynamo_graphs() == graphs
        assert first.dtype == (torch.bfloat16 if autocast else torch.float32)
        assert torch.isfinite(conv.weight.grad).all()
        assert crop not in ("content", "both") or len(boxes) > 1


@pytest.mark.slow
@pytest.mark.parametrize("two_functions", [False, True], ids=["g", "f-and-g"])
def test_compiled_selfnorm_equals_eager_in_gradients_and_running_statistics(two_functions):
    # traced, the fused layer replays its coefficients in the backward (torch.func.vjp with
    # update=False): the same gradients for x and every parameter, and the attention's running
    # statistics updated once per call, as eagerly
    if not TRACE_GRAD:
        pytest.skip("this torch cannot trace the fused layers' backward")
    x = torch.randn(6, 5, 7, 7, generator=gen())
    weights = torch.randn(6, 5, 7, 7, generator=gen())  # a loss whose gradient differs by place
    torch.manual_seed(0)
    eager = SelfNorm(5, two_functions=two_functions)
    traced = copy.deepcopy(eager)
    torch._dynamo.reset()
    compiled = torch.compile(traced, fullgraph=True, backend="aot_eager")
    runs = {"eager": (eager, eager), "compiled": (traced, compiled)}
    found = {}
    with torch._dynamo.config.patch(**TRACE_GRAD):
        for name, (module, run) in runs.items():
            xs = x.clone().requires_grad_()
            for _ in range(3):
                (run(xs) * weights).sum().backward()
            grads = [p.grad.clone() for p in module.parameters()]
            found[name] = (xs.grad, grads, module.state_dict())
    (x_e, grads_e, state_e), (x_c, grads_c, state_c) = found["eager"], found["compiled"]
    torch.testing.assert_close(x_c, x_e)
    assert len(grads_e) == (6 if two_functions else 3)
    torch.testing.assert_close(grads_c, grads_e)
    torch.testing.assert_close(state_c, state_e)
    assert int(state_c["g_bn.num_batches_tracked"]) == 3


@pytest.mark.slow
def test_compiled_selfnorm_and_masked_layers_are_one_graph():
    # SelfNorm (momentum None: the cumulative average's factor is a tensor) and the masked
    # layers of padded sequences (the mask is only checked in eager mode) read no value on the
    # host either
    if not TRACE_GRAD:
        pytest.skip("this torch cannot trace the fused layers' autograd.grad")
    x, mask, _ = padded_batch()
    x.requires_grad_()
    sn, unit = SelfNorm(6, momentum=None), CNSN(6)
    unit.crossnorm.active = True
    with torch._dynamo.config.patch(**TRACE_GRAD):
        for run in (lambda t: sn(t), lambda t: sn(t, mask), lambda t: unit(t, mask)):
            torch._dynamo.reset()
            before = dynamo_graphs()
            compiled = torch.compile(run, backend="aot_eager", fullgraph=True)
            compiled(x)
            with torch._dynamo.config.patch(error_on_recompile=True):
                for _ in range(3):
                    compiled(x).sum().backward()
            assert dynamo_graphs() == before + 1
            assert torch.isfinite(x.grad).all()
        assert int(sn.g_bn.num_batches_tracked) == 8  # two runs of four calls
        empty = mask.clone()
        empty[1] = False  # compiled, unchecked: a sample without a real position is unchanged
        torch._dynamo.reset()
        masked = torch.compile(lambda t, m: sn(t, m), backend="aot_eager", fullgraph=True)
        out = masked(x, empty)
    assert torch.isfinite(out).all() and torch.equal(out[1], x[1])


def test_selfnorm_cumulative_average_matches_batchnorm():
    # momentum None: running statistics are the average over the batches, as nn.BatchNorm1d's
    for dtype in (torch.float32, torch.float64):
        bn = nn.BatchNorm1d(5, momentum=None).to(dtype)
        ref = copy.deepcopy(bn)
        for step in range(4):
            z = torch.randn(8, 5, generator=gen(step), dtype=dtype).mul(3).add(1)
            z_ref = z.detach().clone().requires_grad_()
            out, expected = _batch_norm(bn, z.requires_grad_()), ref(z_ref)
            torch.testing.assert_close(out, expected)
            out.square().sum().backward()  # the running statistics are not saved for it
            expected.square().sum().backward()
            torch.testing.assert_close(z.grad, z_ref.grad)
        torch.testing.assert_close(bn.running_mean, ref.running_mean)
        torch.testing.assert_close(bn.running_var, ref.running_var)
        assert int(bn.num_batches_tracked) == 4
    sn = SelfNorm(3, momentum=None)
    x = torch.randn(4, 3, 5, 5, generator=gen(), requires_grad=True)
    sn(x).sum().backward()
    assert torch.isfinite(x.grad).all() and int(sn.g_bn.num_batches_tracked) == 1


def test_crossnorm_is_identity_unless_training_and_active():
    x = torch.randn(4, 3, 8, 8, generator=gen())
    layer = CrossNorm(3)
    assert layer.training and not layer.active
    assert layer(x) is x
    layer.active = True
    assert not torch.equal(layer(x), x)
    assert layer.active  # the layer never switches itself off
    layer.eval()
    assert layer(x) is x


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layers_low_precision(dtype):
    x = (torch.randn(4, 6, 8, 8, generator=gen()) * 2 + 1).to(dtype)
    ref = x.float()
    out = crossnorm(x, generator=gen(3))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), crossnorm(ref, generator=gen(3)), rtol=0.05, atol=0.05)
    sn = randomise(SelfNorm(6)).eval()
    y = sn(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), sn(ref), rtol=0.05, atol=0.05)


def rel_err(value: torch.Tensor, ref: torch.Tensor) -> float:
    """Normwise relative error of ``value`` against a float64 reference."""
    return float((value.detach().double() - ref.detach()).norm() / ref.detach().norm())


def test_crossnorm_float16_near_constant_map_is_finite_and_accurate():
    # the case: a constant map (sigma = sqrt(eps)) paired with a textured one; the scale
    # sigma_B / sigma_A ~ 3e3 and x * scale ~ 2e5 overflow float16 when computed in it
    x = torch.relu(torch.randn(2, 1, 8, 8, generator=gen()) * 10 + 5).half()
    x[0, 0] = 60.0
    for seed in range(8):
        for crop in ("neither", "both"):
            out = crossnorm(x, crop=crop, generator=gen(seed))
            assert out.dtype == torch.float16 and torch.isfinite(out).all()
            ref = crossnorm(x.double(), crop=crop, generator=gen(seed))
            assert rel_err(out, ref) < 1e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("offset", [100.0, 300.0, 1000.0])
@pytest.mark.parametrize("layer", ["selfnorm", "crossnorm"])
def test_backward_accurate_in_low_precision_with_an_offset(dtype, offset, layer):
    # grad_x of the low-precision input against float64 on the same (rounded) input: within a few
    # roundings of the dtype, like nn.BatchNorm2d (was 3% / inf / inf in float16 and 22% / 48% /
    # 138% in bfloat16 for SelfNorm)
    x = (torch.randn(4, 8, 8, 8, generator=gen(), dtype=torch.float64) + offset).to(dtype)
    grad = torch.randn(4, 8, 8, 8, generator=gen(1), dtype=torch.float64)
    if layer == "selfnorm":
        sn = SelfNorm(8, two_functions=True)
        ref_sn = copy.deepcopy(sn).double()
        run, run_ref = sn, ref_sn
    else:
        run = lambda t: crossnorm(t, crop="both", generator=gen(2))  # noqa: E731
        run_ref = run
    low = x.detach().requires_grad_()
    run(low).backward(grad.to(dtype))
    ref = x.double().requires_grad_()
    run_ref(ref).backward(grad)
    assert low.grad.dtype == dtype
    assert rel_err(low.grad, ref.grad) < (2e-3 if dtype == torch.float16 else 1e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_modules_cast_to_low_precision_work_on_cpu_and_stay_accurate(dtype):
    # like nn.BatchNorm2d(8).half(): parameters in the low dtype, statistics and attention in
    # float32, the running statistics updated in the module's dtype. Tolerances: a few roundings
    # of the dtype; 5x for the parameters of the CNSN unit, whose SelfNorm sees the CrossNorm
    # output rounded to the dtype (the float64 reference does not round it).
    torch.manual_seed(0)
    x = (torch.randn(4, 8, 6, 6, generator=gen()) * 3 + 2).to(dtype)
    grad = torch.randn(4, 8, 6, 6, generator=gen(1))
    for unit in (SelfNorm(8, two_functions=True), CNSN(8)):
        low = copy.deepcopy(unit).to(dtype)
        ref = copy.deepcopy(low).double()  # the same (rounded) parameters in float64
        sn = low if isinstance(low, SelfNorm) else low.selfnorm
        sn_ref = ref if isinstance(ref, SelfNorm) else ref.selfnorm
        for m in (low, ref):
            for cn in m.modules():
                if isinstance(cn, CrossNorm):
                    cn.active = True
        x_low, x_ref = x.clone().requires_grad_(), x.double().requires_grad_()
        torch.manual_seed(3)
        out = low(x_low)
        out.backward(grad.to(dtype))
        torch.manual_seed(3)
        expected = ref(x_ref)
        expected.backward(grad.double())
        assert out.dtype == dtype and x_low.grad.dtype == dtype
        tol = 2e-3 if dtype == torch.float16 else 1e-2
        assert rel_err(out, expected) < tol
        assert rel_err(x_low.grad, x_ref.grad) < tol
        refs = dict(ref.named_parameters())
        for name, param in low.named_parameters():
            assert param.grad.dtype == dtype
            assert rel_err(param.grad, refs[name].grad) < tol * (1 if low is sn else 5)
        assert sn.g_bn.running_mean.dtype == dtype and int(sn.g_bn.num_batches_tracked) == 1
        torch.testing.assert_close(
            sn.g_bn.running_var.double(), sn_ref.g_bn.running_var, rtol=tol, atol=tol
        )
        low.eval(), ref.eval()
        assert rel_err(low(x), ref(x.double())) < tol


def test_layers_under_cpu_autocast():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    unit = CNSN(8, two_functions=True)
    unit.crossnorm.active = True
    x = torch.randn(4, 3, 8, 8, generator=gen())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        torch.manual_seed(1)
        out = unit(h)
    assert h.dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in [*conv.parameters(), *unit.parameters()])
    torch.manual_seed(1)
    ref = copy.deepcopy(unit).double()(h.detach().double())
    assert rel_err(out, ref) < 1e-2


def check_layers_on_device(device: str, dtype: torch.dtype, layout: str) -> None:
    """Output and grad_x of SelfNorm and CrossNorm on ``device`` against float64 on the CPU."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = (torch.randn(8, 16, 12, 12, generator=gen(), dtype=torch.float64) * 2 + 300).to(dtype)
    grad = torch.randn(8, 16, 12, 12, generator=gen(1), dtype=torch.float64)
    tol = {torch.float32: 1e-3, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]  # offset 300
    sn = randomise(SelfNorm(16, two_functions=True))
    sn_ref = copy.deepcopy(sn).double()
    cases = [
        (sn.to(device), sn_ref),
        (
            lambda t: crossnorm(t, crop="both", generator=gen(2)),
            lambda t: crossnorm(t, crop="both", generator=gen(2)),
        ),
    ]
    for run, run_ref in cases:
        x_dev = x.to(device, copy=True).contiguous(memory_format=fmt).requires_grad_()
        out = run(x_dev)
        out.backward(grad.to(device, dtype))
        x_ref = x.double().requires_grad_()
        run_ref(x_ref).backward(grad)
        assert out.dtype == dtype and x_dev.grad.dtype == dtype
        assert rel_err(out.cpu(), run_ref(x_ref.detach())) < tol
        assert rel_err(x_dev.grad.cpu(), x_ref.grad) < tol


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_layers_on_cuda_match_float64(dtype, layout):
    # the same kernels on the GPU: BatchNorm inference written in place, its backward
    # reductions, group norm; plus a CNSN unit under CUDA autocast
    check_layers_on_device("cuda", dtype, layout)
    with torch.autocast("cuda", dtype=torch.float16):
        conv = nn.Conv2d(3, 16, 3).cuda()
        y = CNSN(16).cuda()(conv(torch.randn(4, 3, 8, 8, device="cuda")))
    assert y.dtype == torch.float16 and torch.isfinite(y).all()


def test_inactive_crossnorm_validates_its_input():
    # off, or in eval(), the layer returns x, but rejects what it would reject when on
    layer = CrossNorm(4)
    good = torch.randn(2, 4, 5, 5)
    for training in (True, False):
        layer.train(training)
        assert layer(good) is good
        with pytest.raises(ValueError, match="built for 4 channels but got 3"):
            layer(torch.randn(2, 3, 5, 5))
        with pytest.raises(ValueError, match=r"\(N, C, L\) or \(N, C, H, W\)"):
            layer(torch.randn(2, 4))
        with pytest.raises(ValueError, match="floating-point"):
            layer(torch.ones(2, 4, 5, 5, dtype=torch.int64))
        with pytest.raises(ValueError, match="mask must have shape"):
            layer(good, torch.ones(2, 4, dtype=torch.bool))
    unit = CNSN(4, sn=False).eval()
    with pytest.raises(ValueError, match="built for 4 channels"):
        unit(torch.randn(2, 3, 5, 5))


@pytest.mark.parametrize("shape", [(0, 4, 5, 5), (0, 4, 7), (2, 4, 0, 0)])
@pytest.mark.parametrize("train", [True, False])
def test_empty_input_gives_an_empty_output_like_batchnorm(shape, train):
    expected = nn.BatchNorm2d(4).train(train)(torch.randn(*shape[:2], 1, 1)[..., :0, :0])
    assert expected.numel() == 0  # BatchNorm2d returns an empty batch, in training too
    for unit in (SelfNorm(4, two_functions=True), CNSN(4), CrossNorm(4)):
        unit.train(train)
        for m in unit.modules():
            if isinstance(m, CrossNorm):
                m.active = True
        before = copy.deepcopy(unit.state_dict())
        x = torch.randn(shape, requires_grad=True)
        out = unit(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        out.sum().backward()
        assert x.grad.shape == x.shape
        after = unit.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # running stats untouched
    assert crossnorm(torch.randn(shape)).shape == shape


def test_zero_channels_rejected():
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="num_channels >= 1"):
            SelfNorm(bad)
        with pytest.raises(ValueError, match="num_channels >= 1"):
            CrossNorm(bad)
        with pytest.raises(ValueError, match="num_channels >= 1"):
            CNSN(bad)
    assert CrossNorm(None).num_channels is None


def test_layers_channels_last_keep_layout_and_values():
    x = torch.randn(4, 6, 8, 8, generator=gen())
    xcl = x.contiguous(memory_format=torch.channels_last)
    sn = randomise(SelfNorm(6)).eval()
    out = sn(xcl)
    torch.testing.assert_close(out, sn(x))
    out_cn = crossnorm(xcl, generator=gen(1))
    torch.testing.assert_close(out_cn, crossnorm(x, generator=gen(1)))
    assert out_cn.is_contiguous(memory_format=torch.channels_last)


def test_layers_on_single_position_maps():
    x = torch.randn(4, 6, 1, 1, generator=gen(), requires_grad=True)
    y = CNSN(6, crop="both")
    y.crossnorm.active = True
    out = y(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()


def test_batch_of_one():
    x = torch.randn(1, 4, 8, 8, generator=gen())
    with pytest.raises(ValueError, match="at least 2 samples"):
        crossnorm(x, instances=2)
    assert crossnorm(x, instances=1, generator=gen()).shape == x.shape


# ---------------------------------------------------------------------------------------------
# the crop box (Eq. 6)
# ---------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    h=st.integers(1, 64),
    w=st.integers(1, 64),
    threshold=st.floats(0.01, 1.0),
    beta=st.floats(0.2, 5.0),
    seed=st.integers(0, 2**31),
    box=st.sampled_from(BOX_SAMPLERS),
)
def test_sample_box_area_and_bounds(h, w, threshold, beta, seed, box):
    rows, cols = sample_box((h, w), beta, threshold, gen(seed), box)
    assert 0 <= rows.start < rows.stop <= h and 0 <= cols.start < cols.stop <= w
    assert (rows.stop - rows.start) * (cols.stop - cols.start) >= threshold * h * w - 1e-9


def released_box(size: tuple[int, int], beta: float, threshold: float, rng) -> tuple[int, ...]:
    """The released ``cn_rand_bbox`` from its definition (numpy, a rejection loop).

    Returns (height, width, row start, column start) of the accepted, clipped box.
    """
    s0, s1 = size
    while True:
        cut = np.sqrt(rng.beta(beta, beta))
        cut0, cut1 = int(s0 * cut), int(s1 * cut)
        c0, c1 = rng.integers(s0), rng.integers(s1)  # centre: uniform over the whole map
        lo0, hi0 = np.clip(c0 - cut0 // 2, 0, s0), np.clip(c0 + cut0 // 2, 0, s0)
        lo1, hi1 = np.clip(c1 - cut1 // 2, 0, s1), np.clip(c1 + cut1 // 2, 0, s1)
        if (hi0 - lo0) * (hi1 - lo1) / (s0 * s1) > threshold:
            return int(hi0 - lo0), int(hi1 - lo1), int(lo0), int(lo1)


def assert_same_distribution(ours: list, ref: list, z: float = 5.0) -> None:
    """Every category's frequency agrees within ``z`` standard errors of a difference of two
    proportions (pooled p, n1 and n2 draws); 5 sigma keeps a family of ~1,000 cells exact."""
    n1, n2 = len(ours), len(ref)
    a, b = Counter(ours), Counter(ref)
    for key in set(a) | set(b):
        p1, p2 = a[key] / n1, b[key] / n2
        pooled = (a[key] + b[key]) / (n1 + n2)
        se = math.sqrt(max(pooled * (1 - pooled), 1 / (n1 + n2)) * (1 / n1 + 1 / n2))
        assert abs(p1 - p2) <= z * se, (key, p1, p2, z * se)


@pytest.mark.parametrize(
    "size, beta", [((32, 32), 1.0), ((16, 16), 1.0), ((8, 8), 1.0), ((7, 7), 1.0),
                   ((7, 12), 1.0), ((16, 16), 0.5)]
)  # fmt: skip
def test_sample_box_released_distribution(size, beta):
    n = 4000
    rng, g = np.random.default_rng(sum(size)), gen(sum(size))
    ref = [released_box(size, beta, 0.1, rng) for _ in range(n)]
    ours = []
    for _ in range(n):
        rows, cols = sample_box(size, beta, 0.1, g)
        ours.append((rows.stop - rows.start, cols.stop - cols.start, rows.start, cols.start))
    area = size[0] * size[1]
    # (height, width) jointly, then the area ratio in tenths, then the box positions
    assert_same_distribution([o[:2] for o in ours], [r[:2] for r in ref])
    tenths = [int(10 * h * w / area) for h, w, *_ in ours]
    assert_same_distribution(tenths, [int(10 * h * w / area) for h, w, *_ in ref])
    assert_same_distribution([o[2] for o in ours], [r[2] for r in ref])
    assert_same_distribution([o[3] for o in ours], [r[3] for r in ref])
    assert min(h * w for h, w, *_ in ours) > 0.1 * area  # the rejection: strictly above t
    if size[0] == size[1]:  # boxes touch the border and are not always square
        assert any(h != w for h, w, *_ in ours)
        assert any(r == 0 for _, _, r, _ in ours)


def test_sample_box_released_mean_area_ratio():
    """The issue's figures: mean area ratio about 0.35 / 0.33 / 0.30 on 32 / 16 / 8 px maps."""
    g = gen(1)
    for side, expected in ((32, 0.35), (16, 0.33), (8, 0.30)):
        ratios = []
        for _ in range(2000):
            rows, cols = sample_box((side, side), 1.0, 0.1, g)
            ratios.append((rows.stop - rows.start) * (cols.stop - cols.start) / side**2)
        assert abs(np.mean(ratios) - expected) < 0.015


def test_sample_box_released_falls_back_to_the_whole_map():
    # maps with a side below 3: every released box is empty (the released loop never ends)
    for size in ((2, 2), (1, 9), (2,)):
        assert sample_box(size, 1.0, 0.1, gen()) == tuple(slice(0, s) for s in size)
    # a threshold above the largest clipped box (30 x 30 of 32 x 32 = 0.88)
    assert sample_box((32, 32), 1.0, 0.9, gen()) == (slice(0, 32), slice(0, 32))


def test_sample_box_uses_only_its_generator():
    torch.manual_seed(0)
    first = [sample_box((16, 16), b, 0.1, gen(3), box) for b in (1.0, 0.3) for box in BOX_SAMPLERS]
    torch.manual_seed(1)
    second = [sample_box((16, 16), b, 0.1, gen(3), box) for b in (1.0, 0.3) for box in BOX_SAMPLERS]
    assert first == second


def test_sample_box_paper_is_square_and_ratio_uniform_for_beta_one():
    g = gen()
    ratios = []
    for _ in range(2000):
        rows, cols = sample_box((64, 64), 1.0, 0.1, g, box="paper")
        assert rows.stop - rows.start == cols.stop - cols.start
        ratios.append((rows.stop - rows.start) ** 2 / 64**2)
    ratios = torch.tensor(ratios)
    assert ratios.min() >= 0.1
    # uniform on [0.1, 1] (up to the ceil to whole pixels): mean 0.55, quartiles 0.325 / 0.775
    assert abs(ratios.mean() - 0.55) < 0.03
    assert abs(ratios.quantile(0.25) - 0.325) < 0.04


def paper_box(size: tuple[int, ...], beta: float, threshold: float, rng) -> tuple[int, ...]:
    """The paper's box from its definition (numpy): ratio t + (1 - t) Beta, ceil sides, a corner
    uniform over the positions where the box fits. Returns (sides..., starts...)."""
    ratio = threshold + (1 - threshold) * rng.beta(beta, beta)
    sides = [min(s, max(1, math.ceil(s * ratio ** (1 / len(size))))) for s in size]
    starts = [int(rng.integers(0, s - side + 1)) for s, side in zip(size, sides, strict=True)]
    return (*sides, *starts)


@pytest.mark.parametrize("size, beta", [((32, 32), 1.0), ((7, 12), 1.0), ((16, 16), 0.5)])
def test_sample_box_paper_distribution(size, beta):
    # the corner is floor(u * positions), u ~ U[0, 1): the same distribution as an integer draw
    n = 4000
    rng, g = np.random.default_rng(sum(size)), gen(sum(size))
    ref = [paper_box(size, beta, 0.1, rng) for _ in range(n)]
    ours = []
    for _ in range(n):
        rows, cols = sample_box(size, beta, 0.1, g, box="paper")
        ours.append((rows.stop - rows.start, cols.stop - cols.start, rows.start, cols.start))
    assert_same_distribution([o[:2] for o in ours], [r[:2] for r in ref])
    assert_same_distribution([o[2] for o in ours], [r[2] for r in ref])
    assert_same_distribution([o[3] for o in ours], [r[3] for r in ref])
    assert_same_distribution([o[:2] + (o[2] * 2 > o[0],) for o in ours],
                             [r[:2] + (r[2] * 2 > r[0],) for r in ref])  # fmt: skip


def test_sample_box_one_dimensional():
    # released: side int(L * r), centred, clipped, accepted above t
    for _ in range(50):
        (seg,) = sample_box((50,), 1.0, 0.3, gen(_))
        assert seg.stop - seg.start > 15
    (seg,) = sample_box((50,), 1.0, 0.3, gen(), box="paper")
    assert seg.stop - seg.start >= 15


@pytest.mark.parametrize("box", BOX_SAMPLERS)
def test_crossnorm_layer_passes_box_and_pairing(box):
    x = torch.randn(4, 3, 16, 16, generator=gen()) * 2 + torch.randn(4, 3, 1, 1) * 3
    layer = CrossNorm(3, crop="style", box=box, pairing="derangement")
    layer.active = True
    torch.manual_seed(5)
    out = layer(x)
    expected = crossnorm(x, crop="style", box=box, pairing="derangement", generator=gen(5))
    torch.testing.assert_close(out, expected)
    assert "box=" in repr(layer) and "pairing='derangement'" in repr(layer)
    unit = CNSN(3, sn=False, crop="both", box=box, pairing="derangement")
    assert unit.crossnorm.box == box and unit.crossnorm.pairing == "derangement"
    with pytest.raises(ValueError, match="box must be one of"):
        CrossNorm(3, box="inside")
    with pytest.raises(ValueError, match="pairing must be one of"):
        CNSN(3, pairing="random")


# ---------------------------------------------------------------------------------------------
# CNSN unit, released-code checkpoints, wrapping
# ---------------------------------------------------------------------------------------------


def test_cnsn_order():
    x = torch.randn(4, 3, 8, 8, generator=gen())
    for order in ("cn-sn", "sn-cn"):
        unit = randomise(CNSN(3, order=order, crop="style"))
        unit.crossnorm.active = True
        torch.manual_seed(0)
        out = unit(x)
        torch.manual_seed(0)
        if order == "cn-sn":
            expected = unit.selfnorm(unit.crossnorm(x))
        else:
            expected = unit.crossnorm(unit.selfnorm(x))
        torch.testing.assert_close(out, expected)


def test_cnsn_parts_and_errors():
    assert CNSN(4, cn=False).crossnorm is None
    assert CNSN(4, sn=False).selfnorm is None
    with pytest.raises(ValueError):
        CNSN(4, cn=False, sn=False)
    with pytest.raises(ValueError):
        CNSN(4, order="sn-then-cn")


def test_released_code_checkpoint_loads_with_identical_eval_output():
    """A state dict in the released code's naming (CNSN(crossnorm, selfnorm) with SelfNorm's
    ``g_fc`` a grouped Conv1d of kernel 2) loads, and the eval output equals that code's formula:
    ``x * sigmoid(g_bn(g_fc(cat(mean, std))))`` with std from torch.var (unbiased) + 1e-12."""
    c = 8
    g = gen(11)
    state = {
        "selfnorm.g_fc.weight": torch.randn(c, 1, 2, generator=g),
        "selfnorm.g_bn.weight": torch.randn(c, generator=g),
        "selfnorm.g_bn.bias": torch.randn(c, generator=g),
        "selfnorm.g_bn.running_mean": torch.randn(c, generator=g),
        "selfnorm.g_bn.running_var": torch.rand(c, generator=g) + 0.5,
        "selfnorm.g_bn.num_batches_tracked": torch.tensor(100),
    }
    unit = CNSN(c, crop="both")
    unit.load_state_dict(state)  # strict: same keys, same shapes
    unit.eval()

    fc = nn.Conv1d(c, c, kernel_size=2, groups=c, bias=False)
    bn = nn.BatchNorm1d(c)
    fc.weight.data = state["selfnorm.g_fc.weight"]
    bn.load_state_dict({k.split("g_bn.")[1]: v for k, v in state.items() if "g_bn" in k})
    bn.eval()
    x = torch.randn(5, c, 8, 8, generator=g) * 2 + 1
    flat = x.view(5, c, -1)
    mean, std = flat.mean(2, keepdim=True), (flat.var(2, keepdim=True) + 1e-12).sqrt()
    gate = torch.sigmoid(bn(fc(torch.cat((mean, std), -1)))).view(5, c, 1, 1)
    torch.testing.assert_close(unit(x), x * gate, rtol=1e-6, atol=1e-6)


def test_wrap_output_keeps_keys_and_applies_unit():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    keys_before = set(conv.state_dict())
    unit = randomise(CNSN(5, cn=False)).eval()
    wrapped = wrap_output(conv, unit)
    assert keys_before < set(wrapped.state_dict())
    assert {k for k in wrapped.state_dict() if k not in keys_before} == {
        "cnsn." + k for k in unit.state_dict()
    }
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(wrapped(x), unit(F.conv2d(x, conv.weight, conv.bias, padding=1)))
    clone = copy.deepcopy(wrapped)  # the hook survives copies and uses the copy's unit
    torch.testing.assert_close(clone(x), wrapped(x))
    with pytest.raises(ValueError, match="already has"):
        wrap_output(conv, CNSN(5))


# ---------------------------------------------------------------------------------------------
# the CrossNorm switch (§3.2)
# ---------------------------------------------------------------------------------------------


def toy_model(units: int = 5, channels: int = 4) -> nn.Sequential:
    layers = []
    for _ in range(units):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), CNSN(channels, sn=False)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("cn_prob, active_num", [(0.5, 1), (0.25, 2), (1.0, 3), (0.5, 9)])
def test_switch_frequency_and_count(cn_prob, active_num):
    model = toy_model(5)
    names = [n for n, _ in style_layers(model)]
    g = gen(1)
    steps, on_steps = 4000, 0
    counts = dict.fromkeys(names, 0)
    for _ in range(steps):
        with crossnorm_step(model, cn_prob, active_num, g) as active:
            on = [n for n, m in style_layers(model) if m.active]
            assert on == active
            if on:
                on_steps += 1
                assert len(on) == min(active_num, len(names))
                for n in on:
                    counts[n] += 1
        assert not any(m.active for _, m in style_layers(model))
    sd = math.sqrt(cn_prob * (1 - cn_prob) / steps)
    assert abs(on_steps / steps - cn_prob) <= 4 * sd + 1e-9
    per_unit = on_steps * min(active_num, 5) / 5  # each unit equally likely
    for n in names:
        assert abs(counts[n] - per_unit) <= 4 * math.sqrt(per_unit) + 1e-9


def test_switch_turns_all_off_after_an_exception():
    model = toy_model(3)
    with pytest.raises(RuntimeError), crossnorm_step(model, 1.0, 3):
        assert all(m.active for _, m in style_layers(model))
        raise RuntimeError("boom")
    assert not any(m.active for _, m in style_layers(model))


def test_switch_explicit_calls_and_bad_arguments():
    model = toy_model(4)
    assert len(activate_crossnorm(model, 1.0, 2)) == 2
    deactivate_crossnorm(model)
    assert not any(m.active for _, m in style_layers(model))
    with pytest.raises(ValueError):
        activate_crossnorm(model, 1.5, 1)
    with pytest.raises(ValueError):
        activate_crossnorm(model, 0.5, -1)


def test_switch_under_data_parallel_replicas():
    """DataParallel copies each module's attributes into replicas on every forward: the flag set
    on the original reaches them, and no replica can leave the original switched on."""
    model = toy_model(2)
    x = torch.randn(4, 4, 6, 6)
    with crossnorm_step(model, 1.0, 2):
        replica = model._replicate_for_data_parallel()
        units = [m for m in replica.modules() if isinstance(m, CrossNorm)]
        assert all(u.active for u in units)
        first, second = units[0](x), units[0](x)
        assert not torch.equal(first, x) and not torch.equal(second, x)  # on for the whole step
    assert not any(m.active for _, m in style_layers(model))
    dp = nn.DataParallel(model)  # no GPU: runs the module itself
    with crossnorm_step(dp, 1.0, 1) as active:
        assert len(active) == 1 and active[0].startswith("module.")
        dp(x).sum().backward()
    assert not any(m.active for _, m in style_layers(model))


def test_switch_under_distributed_data_parallel(tmp_path):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        model = nn.parallel.DistributedDataParallel(toy_model(3))
        x = torch.randn(4, 4, 6, 6)
        for _ in range(3):
            with crossnorm_step(model, 1.0, 2) as active:
                assert len(active) == 2
                model(x).square().mean().backward()
            assert not any(m.active for _, m in style_layers(model))
        dist.barrier()
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [lambda: SelfNorm(4), lambda: CNSN(4), lambda: CrossNorm(4)],
    ids=["SelfNorm", "CNSN", "CrossNorm"],
)
def test_bad_input_errors_say_what_was_expected(layer):
    module = layer()
    for m in module.modules():
        if isinstance(m, CrossNorm):
            m.active = True
    with pytest.raises(ValueError, match=r"\(N, C, L\) or \(N, C, H, W\)"):
        module(torch.randn(4, 4))
    with pytest.raises(ValueError, match="built for 4 channels but got 3"):
        module(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match="floating-point"):
        module(torch.ones(2, 4, 5, 5, dtype=torch.int64))


def test_bad_arguments():
    with pytest.raises(ValueError, match="crop must be one of"):
        CrossNorm(crop="middle")
    with pytest.raises(ValueError, match="instances"):
        CrossNorm(instances=3)
    with pytest.raises(ValueError):
        CrossNorm(lam=2.0)
    with pytest.raises(ValueError):
        sample_box((8, 8), threshold=0.0)
    with pytest.raises(ValueError, match="C >= 2"):
        crossnorm(torch.randn(2, 1, 4, 4), instances=1)


# ---------------------------------------------------------------------------------------------
# padded sequences (text): statistics over real positions only
# ---------------------------------------------------------------------------------------------


def padded_batch():
    g = gen(5)
    lengths = torch.tensor([7, 3, 5, 1])
    x = torch.randn(4, 6, 7, generator=g) * 2 + 1
    mask = torch.arange(7)[None] < lengths[:, None]  # (N, L)
    x = x * mask[:, None]  # zero embeddings at padding, as an nn.Embedding(padding_idx) gives
    return x, mask, lengths


def test_masked_stats_ignore_padding():
    x, mask, lengths = padded_batch()
    mean, std = instance_stats(x, mask=mask)
    for i, n in enumerate(lengths.tolist()):
        if n == 1:  # one position: variance 0 (no Bessel correction), std = sqrt(eps)
            ref_mean = x[i : i + 1, :, 0].double()
            ref_std = torch.full_like(ref_mean, math.sqrt(1e-5))
        else:
            ref_mean, ref_std = ref_stats(x[i : i + 1, :, :n], 1e-5)
        torch.testing.assert_close(mean[i].double(), ref_mean[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(std[i].double(), ref_std[0], rtol=1e-5, atol=1e-6)
    full = torch.ones_like(mask)
    torch.testing.assert_close(instance_stats(x, mask=full), instance_stats(x))


def test_masked_layers_match_unpadded_and_leave_padding():
    x, mask, lengths = padded_batch()
    sn = randomise(SelfNorm(6, two_functions=True)).eval()
    out = sn(x, mask)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[i : i + 1, :, :n], sn(x[i : i + 1, :, :n]))
    assert torch.equal(out[~mask[:, None].expand_as(x)], x[~mask[:, None].expand_as(x)])
    swapped = crossnorm(x, mask=mask, generator=gen(2), eps=1e-8)
    partner = random_partner(4, gen(2))
    m_x, s_x = instance_stats(x, mask=mask, eps=0.0)
    m_o, s_o = instance_stats(swapped, mask=mask, eps=0.0)
    real = lengths > 1  # a one-token sample has no spread to standardise
    torch.testing.assert_close(m_o[real], m_x[partner][real], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s_o[real], s_x[partner][real], rtol=1e-3, atol=1e-3)
    assert torch.equal(swapped * ~mask[:, None], x * ~mask[:, None])
    unit = CNSN(6)
    unit.crossnorm.active = True
    assert unit(x, mask).shape == x.shape


def test_masked_gradients_and_errors():
    x, mask, _ = padded_batch()
    x = x.double().requires_grad_()
    sn = randomise(SelfNorm(6)).double()
    assert torch.autograd.gradcheck(lambda t: sn(t, mask), (x,))
    assert torch.autograd.gradcheck(lambda t: crossnorm(t, mask=mask, generator=gen(1)), (x,))
    with pytest.raises(ValueError, match="mask must have shape"):
        sn(x, mask[:, :5])
    with pytest.raises(ValueError, match="at least one unmasked"):
        sn(x, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="crop='neither' only"):
        crossnorm(x, crop="style", mask=mask)
