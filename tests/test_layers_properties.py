"""Property tests (hypothesis): SelfNorm and CrossNorm over dtypes, shapes, layouts and offsets.

Each example draws features ``x = scale * (ratio + z)`` (``z`` standard normal from a seeded
generator; ``N`` 2-4, ``C`` 2-4, a 1-d map of 1-9 positions or a 2-d map of up to 5 x 5) in
float64, float32, float16 or bfloat16, laid out contiguous, channels_last or as a strided view,
runs the layer forward and backward (upstream gradient standard normal) and compares the output
``y`` and ``grad_x`` with a float64 reference on the same (rounded) input: the paper's formula
(Eq. 2 / Eq. 3) in plain autograd, written here independently of ``sncn.layers``.

Tolerances. Errors are normwise, relative to the size of the terms the result is made of:
``||y - y_ref|| <= tol * (||y_ref|| + ||a * x||)`` and
``||grad_x - grad_ref|| <= tol * (||grad_ref|| + ||a * grad||)``, where ``a`` is the per-map
factor of ``x`` (``sigma_B / sigma_A`` for CrossNorm, ``g`` for SelfNorm; ``a * grad`` is the
gradient with the statistics held fixed), with

    tol = 8 u_dtype + 2000 u_compute (kappa + kappa_att)

* ``u_dtype``: unit roundoff of the input's dtype (float64 2^-53, float32 2^-24, float16 2^-11,
  bfloat16 2^-8): the output and ``grad_x`` are rounded once to it;
* ``u_compute``: that of the dtype the layers compute in (float64 for float64, else float32);
* ``kappa = 1 + max |mu| / sigma`` over the maps (``sigma`` with the layer's eps): how far the
  statistics' digits cancel;
* ``kappa_att`` (SelfNorm only) ``= max |gamma| |z| / sqrt(var_z + eps)`` over the attention's
  BatchNorm inputs ``z = w0 mu + w1 sigma``: how much the attention amplifies an error of ``z``.

So for float16 and bfloat16 the bound is a few roundings of the dtype unless the maps are far
off-centre (float32 precision then limits it), and for float32/float64 it scales with the
conditioning. In training, SelfNorm is tested on batches of 3-4: the BatchNorm of two values is
+-1, so its gradient is an eps effect that no precision below float64 resolves. Outputs and
gradients must be finite wherever the reference is representable in the dtype. 0 crashes.
"""

from __future__ import annotations

import copy

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sncn.layers import CNSN, CROP_MODES, SelfNorm, crossnorm, random_partner, sample_box

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.float16: 2.0**-11}
ROUNDOFF[torch.bfloat16] = 2.0**-8
LAYOUTS = ("contiguous", "channels_last", "strided")
SCALES = (1e-3, 1e-1, 1.0, 10.0, 100.0)
RATIOS = (0.0, 1.0, -10.0, 100.0, 1000.0)  # offset / scale
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run: no flaky CI
    suppress_health_check=[HealthCheck.too_slow],
)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def tolerance(dtype: torch.dtype, kappa: float) -> float:
    """The bound of the module docstring for conditioning ``kappa`` (+ ``kappa_att``)."""
    return 8 * ROUNDOFF[dtype] + 2000 * ROUNDOFF[compute_dtype(dtype)] * kappa


@st.composite
def features(draw, min_batch: int = 2) -> dict:
    """A drawn example: dtype, shape, layout, scale, offset ratio and seed."""
    case = {
        "dtype": draw(st.sampled_from(DTYPES)),
        "n": draw(st.integers(min_batch, 4)),
        "c": draw(st.integers(2, 4)),
        "spatial": draw(
            st.one_of(
                st.tuples(st.integers(1, 9)),
                st.tuples(st.integers(1, 5), st.integers(1, 5)),
            )
        ),
        "layout": draw(st.sampled_from(LAYOUTS)),
        "scale": draw(st.sampled_from(SCALES)),
        "ratio": draw(st.sampled_from(RATIOS)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }
    if case["dtype"] == torch.float16:  # keep the input inside float16's range
        assume(case["scale"] * (abs(case["ratio"]) + 8) < 6e4)
    return case


def make_input(case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (in the case's dtype and layout) and the upstream gradient (float64)."""
    g = torch.Generator().manual_seed(case["seed"])
    shape = (case["n"], case["c"], *case["spatial"])
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    x = (case["scale"] * (case["ratio"] + z)).to(case["dtype"])
    if case["layout"] == "channels_last" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    elif case["layout"] == "strided":  # every other position of a twice-as-long last dimension
        x = torch.repeat_interleave(x, 2, dim=-1)[..., ::2]
    return x, torch.randn(shape, generator=g, dtype=torch.float64)


def ref_stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sqrt(Bessel-corrected var + eps) per map (no correction for one position)."""
    dims = tuple(range(2, x.dim()))
    n = x[0, 0].numel()
    mean = x.mean(dims, keepdim=True)
    var = (x - mean).square().sum(dims, keepdim=True) / max(n - 1, 1)
    return mean, (var + eps).sqrt()


def kappa_maps(x: torch.Tensor, eps: float) -> float:
    mean, std = ref_stats(x.double(), eps)
    return 1 + float((mean.abs() / std).max())


def crossnorm_reference(
    x: torch.Tensor, instances: int, crop: str, seed: int, eps: float = 1e-5, frozen: bool = False
) -> torch.Tensor:
    """Eq. 3 (and Eq. 6's boxes), drawing partners and boxes as crossnorm does from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    n, c = x.shape[:2]
    partner = random_partner(n if instances == 2 else c, gen)
    lead = (slice(None), slice(None))
    content, source = x, x
    if crop in ("content", "both"):
        content_box = lead + sample_box(x.shape[2:], generator=gen)
        content = x[content_box]
    if crop in ("style", "both"):
        source = x[lead + sample_box(x.shape[2:], generator=gen)]
    mean_a, std_a = ref_stats(content, eps)
    mean_b, std_b = ref_stats(source, eps)
    if frozen:  # the statistics held fixed: d y / d x = sigma_B / sigma_A
        mean_a, std_a, mean_b, std_b = (t.detach() for t in (mean_a, std_a, mean_b, std_b))
    if instances == 2:
        mean_b, std_b = mean_b[partner], std_b[partner]
    else:
        mean_b, std_b = mean_b[:, partner], std_b[:, partner]
    out = std_b * (content - mean_a) / std_a + mean_b
    if content is x:
        return out
    full = x.clone()
    full[content_box] = out
    return full


def attention_reference(sn: SelfNorm, fc: torch.nn.Module, bn: torch.nn.BatchNorm1d, mean, std):
    """sigmoid(BN(w0 mu + w1 sigma)) in float64, and the attention's conditioning kappa_att."""
    w = fc.weight.double().view(-1, 2)
    z = w[:, 0] * mean + w[:, 1] * std  # (N, C)
    if bn.training:
        z_mean, z_var = z.mean(0), z.var(0, correction=0)
    else:
        z_mean, z_var = bn.running_mean.double(), bn.running_var.double()
    weight, bias = bn.weight.double(), bn.bias.double()
    out = torch.sigmoid((z - z_mean) / (z_var + bn.eps).sqrt() * weight + bias)
    with torch.no_grad():
        kappa = (weight.abs() * z.abs().amax(0) / (z_var + bn.eps).sqrt()).max()
    return out, float(kappa)


def selfnorm_reference(sn: SelfNorm, x: torch.Tensor, frozen: bool = False):
    """Eq. 2, ``g (x - mu) + f mu`` (``f = g`` in the g-only form), and kappa_att."""
    mean, std = ref_stats(x, sn.eps)
    m, s = mean.flatten(1), std.flatten(1)
    g, kappa = attention_reference(sn, sn.g_fc, sn.g_bn, m, s)
    f = g
    if sn.two_functions:
        f, kappa_f = attention_reference(sn, sn.f_fc, sn.f_bn, m, s)
        kappa = max(kappa, kappa_f)
    if frozen:
        mean, g, f = mean.detach(), g.detach(), f.detach()
    return g.view(mean.shape) * (x - mean) + f.view(mean.shape) * mean, kappa


def compare(x, grad, run, reference, dtype: torch.dtype, kappa_extra: float, eps: float):
    """Run ``run`` on ``x`` and ``reference`` on float64 ``x``; assert the stated tolerance."""
    y_ratio, g_ratio = error_ratios(x, grad, run, reference, dtype, kappa_extra, eps)
    assert y_ratio <= 1 and g_ratio <= 1


def error_ratios(x, grad, run, reference, dtype, kappa_extra, eps) -> tuple[float, float]:
    """The errors of ``y`` and ``grad_x`` as fractions of their bounds (after finiteness)."""
    x_ref = x.detach().double().requires_grad_()
    y_ref = reference(x_ref, False)
    y_ref.backward(grad)
    x_frozen = x.detach().double().requires_grad_()
    reference(x_frozen, True).backward(torch.ones_like(grad))
    a = x_frozen.grad  # the per-map factor of x (statistics held fixed)
    big = torch.finfo(dtype).max / 4
    assume(float(y_ref.detach().abs().max()) < big and float(x_ref.grad.abs().max()) < big)

    x_run = x.detach().requires_grad_()
    y = run(x_run)
    y.backward(grad.to(dtype))
    assert y.dtype == dtype and y.shape == x.shape and x_run.grad.dtype == dtype
    assert torch.isfinite(y).all() and torch.isfinite(x_run.grad).all()
    tol = tolerance(dtype, kappa_maps(x, eps) + kappa_extra)
    y_err = (y.detach().double() - y_ref.detach()).norm()
    y_bound = tol * (y_ref.detach().norm() + (a * x_ref.detach()).norm())
    g_err = (x_run.grad.double() - x_ref.grad).norm()
    g_bound = tol * (x_ref.grad.norm() + (a * grad).norm())
    return float(y_err / y_bound), float(g_err / g_bound)


@SETTINGS
@given(
    case=features(),
    instances=st.sampled_from([1, 2]),
    crop=st.sampled_from(CROP_MODES),
)
def test_crossnorm_matches_float64_reference(case, instances, crop):
    x, grad = make_input(case)
    seed = case["seed"]

    def run(t):
        return crossnorm(t, instances, crop, generator=torch.Generator().manual_seed(seed))

    def reference(t, frozen):
        return crossnorm_reference(t, instances, crop, seed, frozen=frozen)

    compare(x, grad, run, reference, case["dtype"], 0.0, eps=1e-5)


def selfnorm_for(case: dict, two_functions: bool, train: bool, cast: bool) -> SelfNorm:
    """A SelfNorm with random parameters; running statistics from 16 samples like ``x``."""
    g = torch.Generator().manual_seed(case["seed"] + 1)
    sn = SelfNorm(case["c"], two_functions=two_functions)
    with torch.no_grad():
        for p in sn.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        warm = copy.deepcopy(sn).double()
        for bn in (warm.g_bn, warm.f_bn):
            if bn is not None:
                bn.momentum = 1.0  # running statistics = those of one batch of 16
        z = torch.randn(16, case["c"], *case["spatial"], generator=g, dtype=torch.float64)
        warm(case["scale"] * (case["ratio"] + z))
        sn.load_state_dict(warm.float().state_dict())
    sn.train(train)
    return sn.to(case["dtype"]) if cast else sn


@SETTINGS
@given(
    case=features(),
    two_functions=st.booleans(),
    train=st.booleans(),
    cast=st.booleans(),
)
def test_selfnorm_matches_float64_reference(case, two_functions, train, cast):
    assume(not train or case["n"] >= 3)  # see the module docstring
    x, grad = make_input(case)
    sn = selfnorm_for(case, two_functions, train, cast)  # float32, or cast to the input's dtype
    ref = copy.deepcopy(sn).double()  # the same (rounded) parameters in float64
    kappa_att = selfnorm_reference(ref, x.double())[1]

    def reference(t, frozen):
        return selfnorm_reference(copy.deepcopy(ref), t, frozen)[0]

    compare(x, grad, sn, reference, case["dtype"], kappa_att, eps=sn.eps)


@SETTINGS
@given(
    case=features(),
    constant=st.sampled_from(["none", "one map", "all maps"]),
    crop=st.sampled_from(CROP_MODES),
    train=st.booleans(),
    cast=st.booleans(),
)
def test_cnsn_unit_is_finite_on_any_input(case, constant, crop, train, cast):
    """The whole unit, constant maps included: finite output and gradients, input dtype kept."""
    x, grad = make_input(case)
    if constant != "none":  # a constant map has sigma = sqrt(eps): the largest CrossNorm scale
        x = x.clone()
        target = x[0, 0] if constant == "one map" else x
        target.fill_(case["scale"] * case["ratio"] + case["scale"])
    unit = CNSN(case["c"], crop=crop).train(train)
    unit.crossnorm.active = True
    if cast:
        unit = unit.to(case["dtype"])
    x = x.detach().requires_grad_()
    y = unit(x)
    big = torch.finfo(case["dtype"]).max / 4
    with torch.no_grad():
        expected = copy.deepcopy(unit).double()(x.detach().double())
    assume(float(expected.abs().max()) < big)
    y.backward(grad.to(case["dtype"]))
    assert y.dtype == x.dtype and y.shape == x.shape
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in unit.parameters() if p.grad is not None)
