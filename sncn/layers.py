"""SelfNorm, CrossNorm and the CrossNorm switch.

Notation follows the paper (Tang et al., "SelfNorm and CrossNorm for Out-of-Distribution
Robustness", ICLR 2021 submission). A feature map ``A`` is one (sample, channel) slice of a
``(N, C, L)`` or ``(N, C, H, W)`` tensor; ``mu_A`` and ``sigma_A`` are its mean and standard
deviation over the spatial (or sequence) positions.

* :class:`SelfNorm` recalibrates ``mu_A`` and ``sigma_A`` with attention (Eq. 2). It learns in
  training and acts in training and testing.
* :class:`CrossNorm` exchanges ``(mu, sigma)`` between feature maps (Eq. 3-6). It acts only in
  training and only while switched on from outside: :func:`crossnorm_step`.
* :class:`CNSN` is the unit the paper plugs into every cell: CrossNorm then SelfNorm.

Instance statistics (:func:`instance_stats`) are the hot path of both layers: they are computed in
one accurate pass (Welford, through PyTorch's group-norm kernel with one group per channel) and
have a hand-written backward, so neither layer costs much more than a BatchNorm.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BOX_SAMPLERS",
    "CNSN",
    "CROP_MODES",
    "PAIRINGS",
    "CrossNorm",
    "SelfNorm",
    "StyleLayer",
    "activate_crossnorm",
    "crossnorm",
    "crossnorm_groups",
    "crossnorm_step",
    "deactivate_crossnorm",
    "grouped_partner",
    "instance_stats",
    "random_partner",
    "sample_box",
    "style_layers",
    "wrap_output",
]

CROP_MODES = ("neither", "style", "content", "both")
#: How a crop box is drawn (:func:`sample_box`): ``"released"`` is the authors' code, ``"paper"``
#: the paper's text (a square of area ratio r ~ U(t, 1) inside the map).
BOX_SAMPLERS = ("released", "paper")
#: How 2-instance CrossNorm pairs samples (and 1-instance pairs channels): ``"permutation"`` is the
#: authors' code (a uniform random permutation: an item may keep its own statistics),
#: ``"derangement"`` pairs every item with another one (:func:`random_partner`).
PAIRINGS = ("permutation", "derangement")
#: Candidate boxes drawn at once by the released sampler; the first accepted one is used.
_BOX_CANDIDATES = 64
_LOW_PRECISION = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_features(x: Tensor, num_channels: int | None, layer: str) -> None:
    """Raise a ValueError that says what was expected when ``x`` is not a feature tensor."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{layer} expects a torch.Tensor, got {type(x).__name__}.")
    if x.dim() not in (3, 4):
        raise ValueError(
            f"{layer} expects a (N, C, L) or (N, C, H, W) tensor, got shape {tuple(x.shape)} "
            f"({x.dim()} dims). For a single sample add a batch dimension with x.unsqueeze(0)."
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{layer} expects a floating-point tensor, got {x.dtype}. Convert it first, e.g. "
            "x.float() (images: x.float() / 255)."
        )
    if num_channels is not None and x.shape[1] != num_channels:
        raise ValueError(
            f"{layer} was built for {num_channels} channels but got {x.shape[1]} "
            f"(input shape {tuple(x.shape)}); channels are dimension 1."
        )


def _check_nonempty(x: Tensor, layer: str) -> None:
    """Raise a ValueError for an empty ``x``: its instance statistics do not exist."""
    if x.numel() == 0:
        raise ValueError(f"{layer} got an empty tensor of shape {tuple(x.shape)}.")


def _check_num_channels(num_channels: int | None, layer: str, optional: bool = False) -> None:
    """Raise a ValueError unless ``num_channels`` is a positive int (or None if ``optional``)."""
    if optional and num_channels is None:
        return
    if isinstance(num_channels, bool) or not isinstance(num_channels, Integral) or num_channels < 1:
        raise ValueError(f"{layer} needs num_channels >= 1, got {num_channels!r}.")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the layers compute in for inputs of ``dtype``: float32 for float16/bfloat16."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


# --------------------------------------------------------------------------------------------
# Instance statistics
# --------------------------------------------------------------------------------------------


def _moments(x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per (sample, channel) mean and biased variance of ``x``, both ``(N, C)`` float32+.

    Computed by the group-norm kernel (one group per channel) on a contiguous tensor, where it is
    a vectorised one-pass Welford, accurate for |mean| >> std. Other layouts (channels_last,
    strided views) are copied to a contiguous tensor first: on channels_last input the kernel
    sums ``x`` and ``x^2``, which loses the variance at large offsets (all of it at mean 1e4,
    std 1 in float32), and ``var_mean`` is several times slower than the copy.

    Returns:
        ``(mean, var, spare)``: ``spare`` is the kernel's normalised output, a buffer of ``x``'s
        shape, dtype and strides that nothing else references (the caller may overwrite it
        instead of allocating its own), or None.
    """
    n, c = x.shape[:2]
    # fp16/bf16: accumulate and return fp32; one contiguous copy at most
    acc = x.to(_compute_dtype(x.dtype), memory_format=torch.contiguous_format)
    if not acc.is_contiguous():  # torch 2.13 returns some strided views unchanged
        acc = acc.contiguous()
    # eps = 0: rstd = 1 / sqrt(var); a constant map gives rstd = inf and var = 0 exactly.
    spare, mean, rstd = torch.native_group_norm(acc, None, None, n, c, acc[0, 0].numel(), c, 0.0)
    usable = spare.dtype == x.dtype and spare.stride() == x.stride()
    return mean.view(n, c), rstd.view(n, c).pow(-2), spare if usable else None


class _InstanceStats(torch.autograd.Function):
    """(mean, std) per (sample, channel) with a one-pass backward.

    std = sqrt(var + eps) with var the Bessel-corrected variance (as ``torch.var``), except for a
    single position, where the correction is skipped (var = 0, std = sqrt(eps)).
    """

    @staticmethod
    def forward(ctx, x: Tensor, eps: float) -> tuple[Tensor, Tensor]:  # noqa: D102
        n_pos = x[0, 0].numel()
        denom = max(n_pos - 1, 1)
        mean, var, _ = _moments(x)  # (N, C), (N, C)
        std = (var * (n_pos / denom) + eps).sqrt()
        ctx.save_for_backward(x, mean, std)
        ctx.denom = denom
        ctx.n_pos = n_pos
        return mean, std

    @staticmethod
    def backward(ctx, grad_mean: Tensor, grad_std: Tensor):  # noqa: D102
        x, mean, std = ctx.saved_tensors
        # d mean / d x_i = 1 / n;  d std / d x_i = (x_i - mean) / ((n - 1) std), so
        # grad_x = (x - mean) * c1 + c0 with per-map c1 = g_std / ((n-1) std), c0 = g_mean / n.
        c1 = grad_std / (ctx.denom * std)
        return _centred_values(x, mean, c1, grad_mean / ctx.n_pos), None


def _check_mask_shape(mask: Tensor, x: Tensor) -> None:
    """Raise a ValueError unless ``mask`` is a tensor of shape ``(N, *spatial)`` (no data read)."""
    if not isinstance(mask, Tensor) or tuple(mask.shape) != (x.shape[0], *x.shape[2:]):
        shape = None if not isinstance(mask, Tensor) else tuple(mask.shape)
        raise ValueError(
            f"mask must have shape (N, *spatial) = {(x.shape[0], *x.shape[2:])} for features of "
            f"shape {tuple(x.shape)}, got {shape}."
        )


def _check_mask(mask: Tensor, x: Tensor) -> Tensor:
    """``mask`` ``(N, *spatial)`` (True = a real position) as a bool ``(N, 1, *spatial)``.

    That every sample has a real position is checked in eager mode only: the check reads a
    value on the host, which a compiled graph must not do. Compiled, a sample without one
    passes through unchanged (finite statistics, see :func:`_masked_stats`).
    """
    _check_mask_shape(mask, x)
    mask = mask.to(device=x.device, dtype=torch.bool)
    if not torch.compiler.is_compiling() and not mask.flatten(1).any(1).all():
        raise ValueError("every sample needs at least one unmasked position (mask all False).")
    return mask.unsqueeze(1)


def _masked_stats(x: Tensor, mask: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Mean and ``sqrt(unbiased var + eps)`` over the positions where ``mask`` is True.

    ``mask``: bool ``(N, 1, *spatial)``. Two passes with plain autograd: for padded sequences
    (text), where every sample has its own number of positions. A sample without a real
    position gets mean 0 and std ``sqrt(eps)`` (its count is taken as 1), not NaN.
    """
    dims = tuple(range(2, x.dim()))
    acc = x.float() if x.dtype in _LOW_PRECISION else x
    weight = mask.to(acc.dtype)  # (N, 1, *spatial)
    count = weight.sum(dims).clamp_min(1)  # (N, 1)
    mean = (acc * weight).sum(dims) / count  # (N, C)
    centred = (acc - mean.view(*mean.shape, *([1] * len(dims)))) * weight
    var = centred.square().sum(dims) / (count - 1).clamp_min(1)
    return mean, (var + eps).sqrt()


def instance_stats(
    x: Tensor, eps: float = 1e-5, keepdim: bool = False, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Channel-wise mean and standard deviation of each sample.

    Args:
        x: features ``(N, C, L)`` or ``(N, C, H, W)``, any strides (channels_last included).
        eps: added to the variance before the square root: ``std = sqrt(var + eps)``, with ``var``
            the unbiased (Bessel-corrected) variance, the definition of the paper's released code.
            A map of one position has ``var = 0`` (no correction), so ``std = sqrt(eps)``.
        keepdim: return ``(N, C, 1[, 1])`` instead of ``(N, C)``.
        mask: optional bool ``(N, L)`` or ``(N, H, W)``, True at real positions: the statistics
            are taken over those only (padding of variable-length sequences excluded).

    Returns:
        ``(mean, std)``. Accumulated and returned in float32 for float16/bfloat16 inputs (in the
        input's dtype otherwise); differentiable with respect to ``x``.

    Reference:
        Eq. 1 of the paper (instance normalisation statistics).
    """
    _check_features(x, None, "instance_stats")
    _check_nonempty(x, "instance_stats")
    if mask is None:
        mean, std = _InstanceStats.apply(x, float(eps))  # (N, C), (N, C)
    else:
        mean, std = _masked_stats(x, _check_mask(mask, x), float(eps))
    if keepdim:
        shape = (*mean.shape, *([1] * (x.dim() - 2)))
        mean, std = mean.view(shape), std.view(shape)
    return mean, std


def _per_map(t: Tensor, dim: int) -> Tensor:
    """``(N, C)`` coefficients viewed as ``(N, C, 1[, 1])``, to broadcast over ``dim``-d maps."""
    return t.view(*t.shape, *([1] * (dim - 2)))


def _affine(x: Tensor, mean: Tensor, a: Tensor, c: Tensor) -> Tensor:
    """Differentiable ``a * (x - mean) + c`` with ``(N, C)`` terms, in plain autograd (masks).

    Computed in the terms' dtype (float32 for float16/bfloat16 features) and rounded once to
    ``x``'s dtype.
    """
    d = x.dim()
    return torch.addcmul(_per_map(c, d), x - _per_map(mean, d), _per_map(a, d)).to(x.dtype)


def _flat_maps(x: Tensor) -> Tensor | None:
    """``x`` viewed as ``(1, N*C, positions)`` (one BatchNorm channel per map), or None.

    Only for contiguous float32/float64 tensors: there PyTorch's BatchNorm kernels give the
    per-map affine map and its two backward reductions in single vectorised passes.
    """
    if x.is_contiguous() and x.dtype in (torch.float32, torch.float64):
        return x.view(1, x.shape[0] * x.shape[1], -1)
    return None


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype``; ``t`` itself when it has it.

    What an autograd function returns goes through here rather than a no-op ``t.to(dtype)``:
    compiled by torch 2.11, a function whose forward returned such an alias of a tensor it made,
    or a tensor it had changed in place, passed no gradient back (zero), silently. Traced, the
    forwards here make their results out of place for that reason.
    """
    return t if t.dtype == dtype else t.to(dtype)


def _affine_values(x: Tensor, a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """``x * a + b`` per map, no autograd: one pass, in ``x``'s memory layout and dtype.

    ``a``, ``b``: ``(N, C)``. The arithmetic is in float32 for float16/bfloat16 ``x`` (in ``x``'s
    dtype otherwise) and the result is rounded once to ``x``'s dtype, so neither ``x * a`` nor
    ``b`` overflows in low precision. Written into ``out`` (shaped and laid out like ``x``; it
    may be ``x`` itself) when given, except under ``torch.compile`` where the result may be a
    new tensor: use the returned one.
    """
    out = torch.empty_like(x) if out is None else out
    dtype = _compute_dtype(x.dtype)
    a, b = a.to(dtype), b.to(dtype)
    flat, flat_out = _flat_maps(x), _flat_maps(out)
    if flat is not None and flat_out is not None:
        # BatchNorm inference with mean 0, var 1, eps 0: exactly x * a + b, vectorised per map
        a_, b_ = a.reshape(-1), b.reshape(-1)
        torch.ops.aten.native_batch_norm.out(
            flat, a_, b_, torch.zeros_like(a_), torch.ones_like(a_), False, 0.0, 0.0,
            out=flat_out, save_mean=a_.new_empty(0), save_invstd=a_.new_empty(0),
        )  # fmt: skip
        return out
    a_, b_ = _per_map(a, x.dim()), _per_map(b, x.dim())
    if torch.compiler.is_compiling():  # a new tensor (torch 2.11: see _cast)
        return _cast(torch.addcmul(b_, x, a_), x.dtype)
    if dtype != x.dtype:  # float16/bfloat16: a float32 result, rounded once into out
        return out.copy_(torch.addcmul(b_, x, a_))
    return torch.addcmul(b_, x, a_, out=out)


def _map_sums(grad: Tensor, x: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
    """Per-map ``sum(grad * (x - mean))`` and ``sum(grad)``, each ``(N, C)``.

    ``mean``: ``(N, C)``, the maps' means: centring the first sum keeps it accurate when
    ``|mean| >> std``. Products and sums are in float32 for float16/bfloat16 inputs.
    """
    flat_x, flat_g = _flat_maps(x), _flat_maps(grad)
    if flat_x is not None and flat_g is not None and grad.dtype == x.dtype:
        # One vectorised pass: BatchNorm's backward reductions with the maps' means, invstd 1.
        mean_ = mean.reshape(-1).to(x.dtype)
        _, sum_gcx, sum_g = torch.ops.aten.native_batch_norm_backward(
            flat_g,
            flat_x,
            None,
            None,
            None,
            mean_,
            torch.ones_like(mean_),
            True,
            0.0,
            [False, True, True],
        )
        return sum_gcx.view(x.shape[:2]), sum_g.view(x.shape[:2])
    dims = tuple(range(2, x.dim()))
    dtype = _compute_dtype(x.dtype)
    centred = torch.sub(x, _per_map(mean.to(dtype), x.dim()))  # in dtype (float32 for fp16/bf16)
    return centred.mul_(grad).sum(dims), grad.sum(dims, dtype=dtype)


def _centred_values(
    x: Tensor,
    mean: Tensor,
    c1: Tensor,
    c0: Tensor,
    grad: Tensor | None = None,
    a: Tensor | None = None,
) -> Tensor:
    """``(x - mean) * c1 + c0`` per map, plus ``grad * a`` when given; no autograd.

    ``mean``, ``c1``, ``c0``, ``a``: ``(N, C)``. ``x - mean`` is formed first, so a map equal to
    its mean contributes exactly ``c0`` however large ``|mean| * c1`` (the folded
    ``x * c1 + (c0 - mean * c1)`` loses that sum's digits). Computed in float32 for
    float16/bfloat16 ``x`` (in ``x``'s dtype otherwise) and rounded once to ``x``'s dtype.
    """
    dtype = _compute_dtype(x.dtype)
    out = torch.sub(x, _per_map(mean.to(dtype), x.dim()))  # a new buffer, in dtype
    out = _affine_values(out, c1, c0, out=out)  # in place (eager)
    if grad is not None:
        out.addcmul_(grad, _per_map(a.to(dtype), x.dim()))
    return _cast(out, x.dtype)


#: ``coefficients(mean, std, *tensors, update=True) -> (a, c)`` of :class:`_StatAffine`: a
#: function of its tensors alone, whose side effects (running statistics) happen only with
#: ``update=True``, so that it can be replayed.
Coefficients = Callable[..., tuple[Tensor, Tensor]]


class _StatAffine(torch.autograd.Function):
    """``a * (x - mu_x) + c`` per map, with ``(a, c) = coefficients(mu_x, sigma_x, *tensors)``.

    Both layers are such maps, in the form the paper writes them (SelfNorm, Eq. 2: ``a = g``,
    ``c = f mu``; CrossNorm, Eq. 3: ``a = sigma_B / sigma_A``, ``c = mu_B``). Fusing the
    statistics, the small coefficient graph and the affine map into one autograd node makes the
    forward one statistics pass and one pass for ``x * a + (c - a mu_x)``, and the backward: one
    reduction pass for the per-map sums of ``grad * (x - mu_x)`` and ``grad`` (the gradients of
    ``a`` and ``c``), the coefficient graph's backward on ``(N, C)`` tensors, and
    ``grad_x = grad * a + (x - mu_x) * c1 + c0`` (centred: exact for a constant map, whatever its
    mean). ``tensors`` are the other differentiable inputs of ``coefficients`` (parameters, a
    partner's statistics); their gradients are returned through this node.

    For float16/bfloat16 ``x`` the statistics, the coefficients and both affine maps (forward
    and backward) are computed in float32, and each result is rounded once to ``x``'s dtype.

    Traced by ``torch.compile``, the forward makes no tensor that requires grad (older dynamo
    cannot trace that inside an autograd function): it saves the statistics and the tensors, and
    the backward replays ``coefficients`` (``update=False``) through ``torch.func.vjp``. Eager,
    the forward builds the coefficient graph and the backward differentiates it, which is
    cheaper than a ``vjp`` outside a compiled graph. Both give the same gradients.
    """

    @staticmethod
    def forward(ctx, x: Tensor, eps: float, coefficients: Coefficients, *tensors: Tensor):  # noqa: D102
        n_pos = x[0, 0].numel()
        denom = max(n_pos - 1, 1)
        mean, var, spare = _moments(x)  # spare: a free buffer for the result
        std = (var * (n_pos / denom) + eps).sqrt()
        ctx.n_pos, ctx.denom = n_pos, denom
        if torch.compiler.is_compiling():  # no grad-requiring tensor made here: replayed below
            a, c = coefficients(mean, std, *tensors)
            ctx.replay = coefficients
            ctx.save_for_backward(x, mean, std, a, *tensors)
            return _affine_values(x, a, c - a * mean, out=spare)
        with torch.enable_grad():
            leaves = (mean.requires_grad_(), std.requires_grad_())
            a, c = coefficients(*leaves, *tensors)
        ctx.graph = (leaves, a, c)
        ctx.tensors = tensors
        ctx.replay = None
        ctx.save_for_backward(x)
        a_ = a.detach()
        return _affine_values(x, a_, c.detach() - a_ * mean.detach(), out=spare)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # noqa: D102
        needs = ctx.needs_input_grad[3:]
        if ctx.replay is not None:  # traced: the coefficient graph replayed, through its vjp
            x, mean, std, a, *tensors = ctx.saved_tensors
            sum_gcx, sum_g = _map_sums(grad, x, mean)  # d loss / d a, d loss / d c
            replay = functools.partial(ctx.replay, update=False)  # no running-statistics update
            _, vjp = torch.func.vjp(replay, mean, std, *tensors)
            grad_mean, grad_std, *grads = vjp((sum_gcx.to(a.dtype), sum_g.to(a.dtype)))
        else:  # eager: the graph built in forward
            (x,) = ctx.saved_tensors
            leaves, a_graph, c_graph = ctx.graph
            mean, std, a = leaves[0].detach(), leaves[1].detach(), a_graph.detach()
            sum_gcx, sum_g = _map_sums(grad, x, mean)
            wanted = [*leaves] + [t for t, need in zip(ctx.tensors, needs, strict=True) if need]
            out_grads = [sum_gcx.to(a.dtype), sum_g.to(c_graph.dtype)]
            grads = torch.autograd.grad(
                [a_graph, c_graph], wanted, out_grads, retain_graph=True, allow_unused=True
            )  # (N, C)-sized graph: kept so that backward can run again (retain_graph=True)
            grad_mean, grad_std = (torch.zeros_like(mean) if g is None else g for g in grads[:2])
            rest = iter(grads[2:])
            grads = [next(rest) if need else None for need in needs]
        grad_mean = grad_mean - a * sum_g  # the explicit mu_x of a * (x - mu_x)
        # d mean / d x_i = 1 / n;  d std / d x_i = (x_i - mean) / ((n - 1) std), so the
        # statistics' share of grad_x is (x - mean) * c1 + c0 with per-map c1, c0.
        c1 = grad_std / (ctx.denom * std)
        grad_x = _centred_values(x, mean, c1, grad_mean / ctx.n_pos, grad, a)
        grad_tensors = [g if need else None for g, need in zip(grads, needs, strict=True)]
        return (grad_x, None, None, *grad_tensors)


def _stat_affine(x: Tensor, eps: float, coefficients: Coefficients, *tensors: Tensor) -> Tensor:
    """Differentiable ``a * (x - mu_x) + c``, ``(a, c) = coefficients(mu_x, sigma_x, *tensors)``."""
    return _StatAffine.apply(x, eps, coefficients, *tensors)


# --------------------------------------------------------------------------------------------
# SelfNorm
# --------------------------------------------------------------------------------------------


class ChannelFC(nn.Module):
    """C independent fully connected units mapping ``(mu, sigma)`` of a channel to a scalar.

    The weight has the layout of ``nn.Conv1d(C, C, kernel_size=2, groups=C, bias=False)`` (shape
    ``(C, 1, 2)``), the released code's channel-wise FC, so its checkpoints load unchanged.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_channels, 1, 2))
        # Conv1d's default initialisation for fan_in = 2.
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, mean: Tensor, std: Tensor) -> Tensor:
        """``(N, C)``, ``(N, C)`` -> ``(N, C)``: ``w0 * mu + w1 * sigma`` per channel."""
        return _channel_fc(self.weight, mean, std)


def _channel_fc(weight: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """:class:`ChannelFC` with ``weight`` ``(C, 1, 2)``."""
    w = weight.view(-1, 2).to(mean.dtype)
    return mean * w[:, 0] + std * w[:, 1]


def _batch_norm(
    bn: nn.BatchNorm1d,
    z: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    update: bool = True,
) -> Tensor:
    """``bn(z)`` computed in ``z``'s dtype, whatever the dtype of ``bn``'s parameters and buffers.

    Parameters and running statistics are cast on the fly (as BatchNorm does with float16 inputs
    under autocast), and the running statistics are updated in their own dtype: a module cast to
    float16/bfloat16 still normalises float32 statistics in float32. In training, batch
    statistics are used and the running ones updated (momentum, or a cumulative average for
    ``momentum=None``, as ``nn.BatchNorm1d``), except for a batch of one (a batch statistic of one
    value does not exist) or none, which uses the running statistics and leaves them unchanged.
    The cumulative average's factor ``1 / num_batches_tracked`` stays a tensor: no value is read
    on the host. ``weight`` and ``bias`` replace ``bn``'s; ``update=False`` gives the same output
    and leaves the module unchanged (the replay of a call).
    """
    batch_stats = bn.training and z.shape[0] > 1
    weight = (bn.weight if weight is None else weight).to(z.dtype)
    bias = (bn.bias if bias is None else bias).to(z.dtype)
    if batch_stats and not update:  # batch statistics, nothing recorded
        return F.batch_norm(z, None, None, weight, bias, True, 0.0, bn.eps)
    if batch_stats:
        bn.num_batches_tracked.add_(1)
    mean, var = bn.running_mean.to(z.dtype), bn.running_var.to(z.dtype)  # copies if cast
    if batch_stats and bn.momentum is None:  # cumulative average, updated below
        out = F.batch_norm(z, None, None, weight, bias, True, 0.0, bn.eps)
        with torch.no_grad():  # running += (batch - running) / num_batches_tracked
            factor = bn.num_batches_tracked.to(mean.dtype).reciprocal()
            batch_var, batch_mean = torch.var_mean(z.detach(), 0)  # unbiased, as BatchNorm's
            mean.lerp_(batch_mean, factor)
            var.lerp_(batch_var, factor)
    else:
        factor = bn.momentum if batch_stats else 0.0
        out = F.batch_norm(z, mean, var, weight, bias, batch_stats, factor, bn.eps)
    if batch_stats and mean is not bn.running_mean:  # updated in the copies: write them back
        with torch.no_grad():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
    return out


class SelfNorm(nn.Module):
    """SelfNorm: attention-recalibrated instance statistics (paper Eq. 2).

    ``x_hat = sigma_hat * (x - mu) / sigma + mu_hat`` with ``sigma_hat = g(mu, sigma) * sigma`` and
    ``mu_hat = f(mu, sigma) * mu``. Each attention function is a channel-wise fully connected map
    of ``(mu, sigma)`` followed by BatchNorm and a sigmoid: one independent 2-input unit per
    channel, O(C) parameters (unlike SE's O(C^2)). Two forms:

    * ``two_functions=True``: Eq. 2 as written, ``x_hat = g * (x - mu) + f * mu``: the spread and
      the mean of each map are rescaled separately.
    * ``two_functions=False`` (default, the form of the paper's released models): only ``g``, and
      ``x_hat = g * x``. This scales the whole map, mean and standard deviation together, i.e.
      Eq. 2 with ``f = g``.

    Args:
        num_channels: C of the ``(N, C, ...)`` input.
        two_functions: use both ``f`` and ``g`` (Eq. 2) instead of ``g`` alone.
        eps: variance epsilon of the statistics fed to the attention (the released code's 1e-12).
        momentum: momentum of the attention's BatchNorm running statistics.

    Shapes: ``(N, C, L)`` or ``(N, C, H, W)`` in and out. In training, a batch of one uses the
    BatchNorm running statistics (a batch statistic of one value does not exist) and leaves them
    unchanged. An empty input gives an empty output (as ``nn.BatchNorm2d``), in training too.

    Precision: float16/bfloat16 inputs, modules cast with ``.half()``/``.bfloat16()`` and
    autocast all work on CPU and GPU. The statistics, the attention (parameters cast to float32
    on the fly, running statistics kept in the module's dtype) and the affine map of the forward
    and backward passes are computed in float32, and the output and ``grad_x`` are rounded once to
    the input's dtype.

    Reference:
        Section 3 (SelfNorm), Eq. 2, and "Hyper-parameters" in Section 4 of the paper.
    """

    def __init__(
        self,
        num_channels: int,
        two_functions: bool = False,
        eps: float = 1e-12,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        _check_num_channels(num_channels, "SelfNorm")
        self.num_channels = num_channels
        self.eps = eps
        self.g_fc = ChannelFC(num_channels)
        self.g_bn = nn.BatchNorm1d(num_channels, momentum=momentum)
        if two_functions:
            self.f_fc = ChannelFC(num_channels)
            self.f_bn = nn.BatchNorm1d(num_channels, momentum=momentum)
        else:
            self.f_fc = self.f_bn = None

    @property
    def two_functions(self) -> bool:
        """Whether ``f`` (the mean's attention) is used."""
        return self.f_fc is not None

    def attention(
        self, mean: Tensor, std: Tensor, params: Sequence[Tensor] = (), update: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """``g(mu, sigma)`` and ``f(mu, sigma)`` (None in the g-only form), each ``(N, C)``.

        ``params``: tensors in the place of ``self.parameters()`` (same order), or none for the
        module's own. ``update=False``: the BatchNorms' running statistics stay as they are
        (the replay of a call: same result).
        """
        # self.parameters(): g_fc.weight, g_bn.weight, g_bn.bias (then f's three likewise)
        fc_w, bn_w, bn_b, *f_params = params or tuple(self.parameters())

        def unit(bn: nn.BatchNorm1d, fc_w: Tensor, bn_w: Tensor, bn_b: Tensor) -> Tensor:
            z = _channel_fc(fc_w, mean, std)
            return torch.sigmoid(_batch_norm(bn, z, bn_w, bn_b, update))

        g = unit(self.g_bn, fc_w, bn_w, bn_b)
        return g, (unit(self.f_bn, *f_params) if self.f_fc is not None else None)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Recalibrate ``x`` ``(N, C, ...)``; same shape out.

        With ``mask`` (bool ``(N, *spatial)``, True = real position) the statistics exclude the
        masked positions, and those pass through unchanged.
        """
        _check_features(x, self.num_channels, "SelfNorm")
        if x.numel() == 0:  # no maps, or maps of no positions: nothing to recalibrate
            if mask is not None:
                _check_mask_shape(mask, x)
            return x.clone()
        if mask is None:
            return _stat_affine(x, self.eps, self._coefficients, *self.parameters())
        mask = _check_mask(mask, x)
        mean, std = _masked_stats(x, mask, self.eps)
        return torch.where(mask, _affine(x, mean, *self._coefficients(mean, std)), x)

    def _coefficients(
        self, mean: Tensor, std: Tensor, *params: Tensor, update: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Eq. 2 as ``a * (x - mu) + c``: ``a = g``, ``c = f mu`` (g-only: ``c = g mu``);
        ``params`` and ``update`` as :meth:`attention` takes them."""
        g, f = self.attention(mean, std, params, update)  # (N, C) each
        return g, (g if f is None else f) * mean

    def extra_repr(self) -> str:
        return f"{self.num_channels}, two_functions={self.two_functions}, eps={self.eps}"


# --------------------------------------------------------------------------------------------
# CrossNorm
# --------------------------------------------------------------------------------------------


def _check_pairing(pairing: str) -> None:
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}.")


def _moved(t: Tensor, device: torch.device | str) -> Tensor:
    """``t`` on ``device``; a copy to an accelerator does not wait for it (``non_blocking``).

    A copy to the CPU blocks: a non-blocking one may return before the values have arrived.
    """
    device = torch.device(device)
    return t.to(device, non_blocking=device.type != "cpu")


def _draw_device(generator: torch.Generator | None, x: Tensor) -> torch.device:
    """Where random draws happen: on ``generator``'s device, or on ``x``'s without one."""
    return generator.device if generator is not None else x.device


def random_partner(
    n: int,
    generator: torch.Generator | None = None,
    pairing: str = "permutation",
    device: torch.device | str | None = None,
) -> Tensor:
    """Random partners for ``n`` items: item ``i`` takes the statistics of item ``partner[i]``.

    * ``pairing="permutation"`` (the released code's ``torch.randperm``): a uniform random
      permutation; an item is its own partner with probability about 1/n.
    * ``pairing="derangement"``: ``partner[i] != i``. Items are paired two by two in a random
      order (for even ``n`` an involution: partners exchange statistics); with odd ``n`` the
      last three form a cycle.

    Args:
        n: number of items (at least 2).
        generator: torch generator (default: the global one of ``device``).
        pairing: one of :data:`PAIRINGS`.
        device: where to draw and return the partners (default: the generator's device, or the
            CPU without a generator). Tensor operations only: no host synchronisation.

    Returns:
        ``(n,)`` int64 tensor of partner indices on ``device``.
    """
    _check_pairing(pairing)
    if n < 2:
        raise ValueError(f"a random partner needs at least 2 items, got {n}.")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    order = torch.randperm(n, generator=generator, device=device)
    if pairing == "permutation":
        return order
    partner = torch.empty(n, dtype=torch.long, device=device)
    paired = n - 3 if n % 2 else n
    partner[order[0:paired:2]] = order[1:paired:2]
    partner[order[1:paired:2]] = order[0:paired:2]
    if n % 2:  # a 3-cycle among the last three: a -> b -> c -> a
        partner[order[-3:]] = order[-3:].roll(-1)
    return partner


def grouped_partner(
    groups: Tensor,
    generator: torch.Generator | None = None,
    pairing: str = "permutation",
    device: torch.device | str | None = None,
) -> Tensor:
    """Random partners within each group: items only take statistics from their own group.

    Each group id ``k >= 0`` with at least two members gets its own random pairing, distributed
    as :func:`random_partner`'s (a uniform permutation of the group, or its members paired two
    by two in a uniform random order, the last three in a cycle for an odd count); an item whose
    id is negative, or which is alone in its group, is its own partner.

    Computed for all groups at once with fixed shapes (one random key per item, sorts and
    ``searchsorted``): no host synchronisation and no loop over the group ids, so the draws
    differ from a loop of :func:`random_partner` calls, not their distribution.

    Args:
        groups: ``(n,)`` integer group ids (e.g. 0 for the labelled and 1 for the unlabelled part
            of a batch; -1 for items to leave alone).
        generator: torch generator (default: the global one of ``device``).
        pairing: one of :data:`PAIRINGS` (see :func:`random_partner`).
        device: where to draw and return the partners (default: the generator's device, or the
            CPU without a generator).

    Returns:
        ``(n,)`` int64 tensor of partner indices on ``device``.
    """
    if not isinstance(groups, Tensor) or groups.dim() != 1 or groups.is_floating_point():
        what = f"{groups.dtype} {tuple(groups.shape)}" if isinstance(groups, Tensor) else groups
        raise ValueError(f"groups must be a 1-d integer tensor of group ids, got {what}.")
    _check_pairing(pairing)
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    groups = _moved(groups.long(), device)
    n = len(groups)
    index = torch.arange(n, device=device)
    keys = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
    shuffled = torch.argsort(keys)  # a uniform random order of all items
    # each group's members together (groups in increasing id): in random order, and by index
    order = shuffled[torch.sort(groups[shuffled], stable=True).indices]
    by_index = torch.sort(groups, stable=True).indices
    ids = groups[order]
    start = torch.searchsorted(ids, ids, side="left")  # where each item's group begins
    size = torch.searchsorted(ids, ids, side="right") - start
    rank = index - start  # position in the group's random order
    if pairing == "permutation":  # the k-th member by index takes the k-th in random order
        partner = torch.empty_like(index).index_put_((by_index,), order)
    else:  # neighbours in the random order, two by two; the last three in a cycle if odd
        cycle = (size % 2 == 1) & (rank >= size - 3)
        mate = torch.where(cycle, torch.where(rank == size - 1, size - 3, rank + 1), rank ^ 1)
        mate = torch.where(size >= 2, mate, rank)
        partner = torch.empty_like(index).index_put_((order,), order[start + mate])
    return torch.where(groups >= 0, partner, index)


def _beta(
    beta: float, count: int, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """``count`` float64 draws of Beta(beta, beta) on ``device`` (uniform for beta = 1)."""
    if beta == 1.0:
        return torch.rand(count, generator=generator, dtype=torch.float64, device=device)
    shape = torch.full((2, count), float(beta), dtype=torch.float64, device=device)
    gamma = torch._standard_gamma(shape, generator=generator)  # Beta(a, a) = G1 / (G1 + G2)
    return gamma[0] / gamma.sum(0)


def _released_bounds(
    size: Sequence[int],
    beta: float,
    threshold: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """The released code's box (``cn_rand_bbox``), its rejection loop unrolled over candidates.

    All candidates are drawn at once (the ratios, then the centres' coordinates dimension by
    dimension) and the first accepted one is picked with tensor operations: no value leaves
    ``device``. Returns ``(2, D)`` int64 ``[lo, hi)`` bounds (see :func:`_box_bounds`).
    """
    dims, area = len(size), math.prod(size)
    cut = _beta(beta, _BOX_CANDIDATES, generator, device).pow(1 / dims)  # sqrt(r) on a map
    lo, hi = [], []
    for extent in size:  # centres uniform over the whole map, one coordinate at a time
        centre = torch.randint(0, extent, (_BOX_CANDIDATES,), generator=generator, device=device)
        half = torch.floor(extent * cut).long() // 2  # side int(S * sqrt(r)), halved
        lo.append((centre - half).clamp_min(0))
        hi.append((centre + half).clamp_max(extent))  # clipped at the border
    lo_k, hi_k = torch.stack(lo, 1), torch.stack(hi, 1)  # (K, D)
    accepted = (hi_k - lo_k).prod(1).double() / area > threshold  # (K,), the released test
    first = accepted.int().argmax().view(1)  # the first accepted candidate (0 if none is)
    found = accepted.any()
    # no candidate accepted: impossible where no box can pass (e.g. sides < 3), else very rare
    lo_box = torch.where(found, lo_k.index_select(0, first)[0], 0)
    hi_first = hi_k.index_select(0, first)[0]
    hi_box = torch.stack([torch.where(found, hi_first[d], s) for d, s in enumerate(size)])
    return torch.stack([lo_box, hi_box])


def _paper_bounds(
    size: Sequence[int],
    beta: float,
    threshold: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """A box of area ratio ``t + (1 - t) Beta(beta, beta)``, the same shape as the map, inside.

    The corner is ``floor(u * (S - side + 1))`` with ``u ~ U[0, 1)`` in float64 for each
    dimension: uniform over the positions where the box fits (to within 2^-53), without a draw
    whose range depends on a drawn value. Returns ``(2, D)`` int64 ``[lo, hi)`` bounds.
    """
    ratio = threshold + (1 - threshold) * _beta(beta, 1, generator, device)[0]
    root = ratio.pow(1 / len(size))
    u = torch.rand(len(size), generator=generator, dtype=torch.float64, device=device)
    lo, hi = [], []
    for d, extent in enumerate(size):
        side = torch.ceil(extent * root).long().clamp(1, extent)
        room = extent - side + 1  # possible corners
        start = torch.minimum(torch.floor(u[d] * room).long(), room - 1)
        lo.append(start)
        hi.append(start + side)
    return torch.stack([torch.stack(lo), torch.stack(hi)])


def _box_bounds(
    size: Sequence[int],
    beta: float,
    threshold: float,
    generator: torch.Generator | None,
    box: str,
    device: torch.device,
) -> Tensor:
    """A random crop box as a ``(2, D)`` int64 tensor on ``device``: row 0 the first position of
    each spatial dimension, row 1 one past the last. Drawn from ``generator`` (which must live
    on ``device``; None: the default generator of ``device``) without a host synchronisation and
    with fixed shapes, so a compiled step neither recompiles nor breaks its graph on it."""
    size = [int(s) for s in size]
    if box == "paper":
        return _paper_bounds(size, beta, threshold, generator, device)
    return _released_bounds(size, beta, threshold, generator, device)


def _box_mask(bounds: Tensor, spatial: Sequence[int]) -> Tensor:
    """Bool ``(1, 1, *spatial)``, True inside the box ``bounds`` (``(2, D)``, on x's device)."""
    mask = None
    for d, extent in enumerate(spatial):
        pos = torch.arange(extent, device=bounds.device)
        inside = (pos >= bounds[0, d]) & (pos < bounds[1, d])
        inside = inside.view([extent if e == d else 1 for e in range(len(spatial))])
        mask = inside if mask is None else mask & inside
    return mask.view(1, 1, *spatial)


def sample_box(
    size: Sequence[int],
    beta: float = 1.0,
    threshold: float = 0.1,
    generator: torch.Generator | None = None,
    box: str = "released",
) -> tuple[slice, ...]:
    """A random box for cropped CrossNorm (paper Eq. 6).

    ``box="released"`` (default; the authors' ``cn_rand_bbox``): draw ``r ~ Beta(beta, beta)``,
    sides ``int(size_d * r^(1/D))`` for each of the ``D`` spatial dimensions (``int(S sqrt(r))``
    on a map), a centre uniform over all positions, and the box ``[c - side // 2, c + side // 2)``
    per dimension, clipped at the border; accept it when its clipped area exceeds ``threshold``
    times the map's, else draw again. Boxes touch the border often, need not be square, and have
    an even side unless clipped. Here 64 candidates are drawn at once and the first accepted one
    is returned: the same distribution as the released loop. When none is accepted, the box is
    the whole map: this is certain where no box can pass (sides below 3, where every released
    box is empty, or a threshold above the largest clipped area; the released loop never ends
    there) and otherwise rare (each candidate passes with probability above 0.5 for ``t = 0.1``
    and ``beta`` in [0.2, 5] on maps of 3 to 32 positions a side, so all 64 fail with
    probability below 1e-19).

    ``box="paper"`` (the paper's text, §3.1: "a square with area ratio r no less than t"): area
    ratio ``r = t + (1 - t) Beta(beta, beta)``, sides ``ceil(size_d * r^(1/D))``, and a corner
    uniform over the positions where the box fits inside the map (``floor(u * positions)``,
    ``u ~ U[0, 1)`` in float64).

    :func:`crossnorm` draws its boxes with the same tensor code, on the device of its
    generator, and never reads them back: called with a generator in the same state, this
    function returns the box that :func:`crossnorm` uses (its draws: the pairing first, then the
    content box, then the style box).

    Args:
        size: spatial size, ``(H, W)`` or ``(L,)``.
        beta: Beta distribution parameter (1 = uniform).
        threshold: ``t`` in (0, 1], the area-ratio threshold.
        generator: torch generator for every draw, on any device (default: torch's global CPU
            generator).
        box: one of :data:`BOX_SAMPLERS`.

    Returns:
        One non-empty slice per spatial dimension.

    Reference:
        ``cn_rand_bbox`` in ``models/cnsn.py`` of the released code; paper §3.1, Eq. 6.
    """
    _check_box_args(beta, threshold, box)
    device = generator.device if generator is not None else torch.device("cpu")
    lo, hi = _box_bounds(size, beta, threshold, generator, box, device).tolist()
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))


def _check_box_args(beta: float, threshold: float, box: str) -> None:
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}.")
    if box not in BOX_SAMPLERS:
        raise ValueError(f"box must be one of {BOX_SAMPLERS}, got {box!r}.")


def crossnorm(
    x: Tensor,
    instances: int = 2,
    crop: str = "neither",
    beta: float = 1.0,
    threshold: float = 0.1,
    lam: float | None = None,
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    mask: Tensor | None = None,
    groups: Tensor | None = None,
    box: str = "released",
    pairing: str = "permutation",
) -> Tensor:
    """Exchange channel-wise statistics between feature maps (always applied; see CrossNorm).

    Each map ``A`` is standardised with its own statistics and takes those of a partner ``B``
    (Eq. 3): ``sigma_B * (A - mu_A) / sigma_A + mu_B``.

    Args:
        x: features ``(N, C, L)`` or ``(N, C, H, W)``.
        instances: 2 for 2-instance CrossNorm (Eq. 5: channel ``i`` of each sample takes the
            statistics of channel ``i`` of a random partner sample; needs N >= 2), 1 for
            1-instance (Eq. 4: channels of one sample take each other's statistics, the same
            partners for every sample; needs C >= 2).
        crop: ``"neither"`` (whole maps), ``"content"`` (only a random box of ``A`` is restyled,
            with the box's own statistics; the partner gives whole-map statistics), ``"style"``
            (the partner's statistics come from a random box; all of ``A`` is restyled) or
            ``"both"`` (independent boxes for both). Eq. 6.
        beta: Beta parameter of the box area ratio (see :func:`sample_box`).
        threshold: box area-ratio threshold ``t`` (paper: 0.1).
        lam: optional partial mixing: ``lam * x + (1 - lam) * crossnorm(x)``.
        eps: variance epsilon of the statistics.
        generator: torch generator for the pairing and the boxes, on any device (default: the
            global generator of ``x``'s device). Draws are made on the generator's device and
            moved to ``x``'s without waiting for the device: a CPU generator gives the same
            pairings and boxes whatever the device of ``x`` (the same boxes as
            :func:`sample_box`), and a generator on ``x``'s device (or none) keeps every draw
            there, as CUDA graphs need.
        mask: optional bool ``(N, *spatial)``, True at real positions (padded sequences): the
            statistics exclude the rest, which pass through unchanged. Only with ``crop="neither"``.
        groups: optional ``(N,)`` integer group ids of the samples: 2-instance CrossNorm then
            pairs samples only within their group (:func:`grouped_partner`), e.g. the labelled
            and the unlabelled parts of a semi-supervised batch. Samples with a negative id (and,
            for 2 instances, samples alone in their group) pass through unchanged. None: one
            group, as in the paper.
        box: how crop boxes are drawn, ``"released"`` or ``"paper"`` (see :func:`sample_box`).
        pairing: ``"permutation"`` (released code: a random permutation, so a sample may keep
            its own statistics) or ``"derangement"`` (every sample takes another's); see
            :func:`random_partner`.

    Returns:
        Tensor of ``x``'s shape and dtype (an empty ``x`` gives an empty copy). Gradients flow to
        ``x`` through both the standardised map and the partner's statistics, as in the paper's
        released code. For float16/bfloat16 ``x`` the statistics, ``a = sigma_B / sigma_A`` and
        ``a (x - mu_A) + mu_B`` (forward and backward) are computed in float32 and rounded once
        to ``x``'s dtype, so a near-constant map (tiny ``sigma_A``) neither overflows nor gives
        NaN.

    Fixed shapes: crop boxes are drawn as tensors (:func:`sample_box`'s distribution, never read
    on the host) and applied as 0/1 weights over the whole maps: box statistics from masked
    sums, the restyled box written with arithmetic that leaves ``x`` exactly unchanged outside
    it. Every tensor has the same shape at every call and no Python branch depends on a tensor's
    value, so a ``torch.compile``'d step is traced once whatever the boxes. ``"content"`` and
    ``"both"`` are one graph; ``"neither"`` and ``"style"`` (whose ``A`` is the whole map)
    restyle with SelfNorm's fused layer, whose backward calls ``torch.autograd.grad``: one graph
    with ``torch._dynamo.config.trace_autograd_ops = True``, else a break there.

    Reference:
        Section 3 (CrossNorm) and 3.1 (CrossNorm Variants), Eq. 3-6.
    """
    _check_features(x, None, "CrossNorm")
    _check_crossnorm_args(instances, crop, lam)
    _check_box_args(beta, threshold, box)
    _check_pairing(pairing)
    n, c = x.shape[:2]
    if x.numel() == 0:  # no maps, or maps of no positions: nothing to exchange
        if mask is not None:
            _check_mask_shape(mask, x)
        return x.clone()
    if instances == 2 and n < 2:
        raise ValueError(
            "2-instance CrossNorm needs a batch of at least 2 samples to pair them, got N=1. "
            "Use drop_last=True in the DataLoader, or instances=1."
        )
    if instances == 1 and c < 2:
        raise ValueError("1-instance CrossNorm pairs channels and needs C >= 2, got C=1.")
    if mask is not None and crop != "neither":
        raise ValueError(f"a mask works with crop='neither' only, got crop={crop!r}.")
    keep = None  # (N, 1): True for samples left unchanged (negative group id)
    if groups is not None:
        if not isinstance(groups, Tensor) or tuple(groups.shape) != (n,):
            shape = tuple(groups.shape) if isinstance(groups, Tensor) else type(groups).__name__
            raise ValueError(f"groups must have shape (N,) = ({n},), got {shape}.")
        keep = (groups < 0).to(x.device)[:, None]
    draw = _draw_device(generator, x)  # pairing and boxes: drawn there, never read back
    if instances == 2 and groups is not None:
        partner = grouped_partner(groups, generator, pairing, device=draw)
    else:
        partner = random_partner(n if instances == 2 else c, generator, pairing, device=draw)
    partner = _moved(partner, x.device)
    # boxes: bool (1, 1, *spatial) masks, drawn after the pairing (content, then style)
    content_box = style_box = None
    if crop in ("content", "both"):
        content_box = _crop_mask(x, beta, threshold, generator, box)
    if crop in ("style", "both"):
        style_box = _crop_mask(x, beta, threshold, generator, box)

    def coefficients(
        mean_a: Tensor, std_a: Tensor, *stats_b: Tensor, update: bool = True
    ) -> tuple[Tensor, Tensor]:  # no side effects: ``update`` changes nothing
        mean_b, std_b = stats_b or (mean_a, std_a)  # (N, C) each
        if instances == 2:  # Eq. 5: same channel of the partner sample
            mean_b, std_b = mean_b[partner], std_b[partner]
        else:  # Eq. 4: partner channel of the same sample
            mean_b, std_b = mean_b[:, partner], std_b[:, partner]
        scale = std_b / std_a  # Eq. 3: scale * (x - mean_a) + mean_b
        if keep is not None:  # excluded samples: the identity (scale 1, mean_b = mean_a)
            scale = torch.where(keep, torch.ones_like(scale), scale)
            mean_b = torch.where(keep, mean_a, mean_b)
        if lam is not None:  # lam x + (1 - lam) crossnorm(x)
            return lam + (1 - lam) * scale, lam * mean_a + (1 - lam) * mean_b
        return scale, mean_b

    if mask is not None:  # padded sequences: statistics over real positions, padding untouched
        mask = _check_mask(mask, x)
        mean, std = _masked_stats(x, mask, eps)
        return torch.where(mask, _affine(x, mean, *coefficients(mean, std)), x)

    if crop == "neither":
        return _stat_affine(x, eps, coefficients)
    if crop == "style":
        x_on, mean_b, std_b = _RegionStats.apply(x, float(eps), style_box)
        return _stat_affine(x_on, eps, coefficients, mean_b, std_b)
    # Eq. 6 with fixed shapes: statistics over the boxes (None: the whole map), A restyled
    # inside its box only (content, both) or whole (style: the fused map, with the partners' box
    # statistics)
    x_on, mean_a, std_a, mean_b, std_b, *centred = _RegionStats.apply(
        x, float(eps), content_box, style_box
    )  # x_on: x, passed on; centred: (x - mean_a) * content_box, for a content box
    a, c = coefficients(mean_a, std_a, mean_b, std_b)
    return _CropAffine.apply(x_on, mean_a, a, c, content_box, *(centred or [None]))


def _crop_mask(
    x: Tensor, beta: float, threshold: float, generator: torch.Generator | None, box: str
) -> Tensor:
    """A random crop box of ``x``'s maps: a 0/1 weight ``(1, 1, *spatial)`` on x's device, in
    the dtype the layers compute in."""
    bounds = _box_bounds(x.shape[2:], beta, threshold, generator, box, _draw_device(generator, x))
    mask = _box_mask(_moved(bounds, x.device), x.shape[2:])
    return mask.to(_compute_dtype(x.dtype))


def _masked_sums(x: Tensor, weight: Tensor) -> Tensor:
    """Per-map ``sum(x * weight)``, ``(N, C)``, with ``weight`` ``(1, 1, *spatial)``."""
    if x.is_contiguous() and weight.dtype == x.dtype:  # one matrix-vector product, no buffer
        return torch.mv(x.view(x.shape[0] * x.shape[1], -1), weight.reshape(-1)).view(x.shape[:2])
    return (x * weight).sum(tuple(range(2, x.dim())))


class _RegionStats(torch.autograd.Function):
    """Mean and std of each map over fixed-shape regions: a box (a 0/1 weight) or the whole map.

    ``forward(x, eps, *regions)``, regions ``(content, style)`` or ``(style,)``: each a 0/1
    weight ``(1, 1, *spatial)`` in the compute dtype (a box) or None (the whole map). Returns
    ``x`` itself (a view: the features passed on to the restyling, :class:`_CropAffine` or
    :class:`_StatAffine`, so that ``x`` has one consumer and both gradients meet here), a
    ``(mean, std)`` pair per region, each ``(N, C)``, and, when the content region is a box,
    ``t = (x - mean_a) * weight`` (zero outside the box, not differentiable), which
    :class:`_CropAffine` reuses. ``std = sqrt(var + eps)``
    with the Bessel-corrected variance (none for a single position), as :func:`instance_stats`.
    Every shape is fixed whatever the box, so a compiled step neither recompiles nor
    synchronises with the host on it.

    Box statistics are exact two-pass sums: the box mean from one matrix-vector product of the
    maps with the weight, then the sum of squares of the centred ``t``, accurate for
    ``|mean| >> std`` like the whole-map Welford pass (:class:`_InstanceStats`'), which gives
    the whole-map statistics. Float16/bfloat16 inputs are accumulated in float32 and the
    statistics returned in float32. Backward: the gradient reaching the view of ``x`` plus, per
    map and region, ``t * c1 + weight * c0`` with ``c1 = grad_std / ((n - 1) std)`` and
    ``c0 = grad_mean / n``, summed into one buffer (that of the view's gradient, a fresh one
    from the restyling's backward, when it has the compute dtype).
    """

    @staticmethod
    def forward(ctx, x: Tensor, eps: float, *regions: Tensor | None):  # noqa: D102
        ctx.set_materialize_grads(False)
        content_box = len(regions) == 2 and regions[0] is not None
        acc = x.to(_compute_dtype(x.dtype))
        dims, n_pos = tuple(range(2, x.dim())), x[0, 0].numel()
        outputs, saved, centred_a = [], [], []
        for weight in regions:
            if weight is None:  # the whole map: one Welford pass
                mean, var, _ = _moments(x)
                std = (var * (n_pos / max(n_pos - 1, 1)) + eps).sqrt()
                saved += [mean, std]
            else:
                count = weight.sum()  # n, a 0-d tensor (never read on the host)
                mean = _masked_sums(acc, weight) / count
                centred = torch.sub(acc, _per_map(mean, x.dim())).mul_(weight)  # 0 outside
                var = torch.linalg.vector_norm(centred, dim=dims).square() / (count - 1).clamp(1)
                std = (var + eps).sqrt()
                saved += [centred, weight, count, std]
                if content_box and not outputs:
                    centred_a.append(centred)
            outputs += [mean, std]
        ctx.boxed = tuple(weight is not None for weight in regions)
        ctx.n_pos = n_pos
        ctx.save_for_backward(x, *saved)
        ctx.mark_non_differentiable(*centred_a)
        return (x.view_as(x), *outputs, *centred_a)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_x: Tensor | None, *grads: Tensor | None):  # noqa: D102
        x, *saved = ctx.saved_tensors
        dtype, d = _compute_dtype(x.dtype), x.dim()
        rest, terms = iter(saved), []
        stats = grads[: 2 * len(ctx.boxed)]
        for boxed, grad_mean, grad_std in zip(ctx.boxed, stats[::2], stats[1::2], strict=True):
            # d mean / d x_i = w_i / n;  d std / d x_i = w_i (x_i - mean) / ((n - 1) std)
            if boxed:
                centred, weight, count, std = (next(rest) for _ in range(4))
                n, denom = count, (count - 1).clamp(1)
            else:
                (centred, std), weight = (next(rest), next(rest)), None  # centred: the mean
                n, denom = ctx.n_pos, max(ctx.n_pos - 1, 1)
            if grad_mean is None and grad_std is None:
                continue
            c1 = torch.zeros_like(std) if grad_std is None else grad_std / (denom * std)
            c0 = torch.zeros_like(std) if grad_mean is None else grad_mean / n
            terms.insert(len(terms) if boxed else 0, (centred, weight, c1, c0))
        # the sum, in the compute dtype. grad_x is the fresh buffer _CropAffine's backward made
        # for the private view of x (nothing else holds it): summed into in place if it has
        # the compute dtype, else read once
        grad = grad_x if grad_x is not None and grad_x.dtype == dtype else None
        for centred, weight, c1, c0 in terms:
            if weight is None:  # the whole map, first: (x - mean) * c1 + c0 (+ grad_x)
                term = torch.sub(x, _per_map(centred.to(dtype), d))
                term = _affine_values(term, c1, c0, out=term)
                grad = term if grad_x is None else term.add_(grad_x)
                continue
            if grad is not None:
                grad.addcmul_(centred, _per_map(c1, d))
            elif grad_x is None:
                grad = centred * _per_map(c1, d)
            else:  # low precision grad_x + t * c1: the first term reads grad_x
                grad = torch.addcmul(grad_x, centred, _per_map(c1, d))
            grad.addcmul_(_per_map(c0, d), weight)
        if grad is None:  # no statistic has a gradient
            grad = grad_x
        return None if grad is None else _cast(grad, x.dtype), None, *(None for _ in ctx.boxed)


class _CropAffine(torch.autograd.Function):
    """``a * (x - mean) + c`` per map inside a box, ``x`` outside; everywhere without a box.

    ``forward(x, mean, a, c, weight, centred)``: ``mean``, ``a``, ``c`` ``(N, C)`` (float32 for
    float16/bfloat16 ``x``); ``weight`` the box's 0/1 weight ``(1, 1, *spatial)`` and
    ``centred = (x - mean) * weight`` (from :class:`_RegionStats`), or both None (no box). With
    a box the result is ``x + (a - 1) * centred + (c - mean) * weight``: exactly ``x`` outside
    the box and for ``a = 1, c = mean``, fixed shapes, no copy of a box and no masked select.
    Without one it is ``x * a + (c - a * mean)`` (one pass). Computed in the terms' dtype and
    rounded once to ``x``'s.

    Backward: the per-map sums of ``g * centred`` and of ``g`` over the box (the gradients of
    ``a``, ``c`` and ``mean``) and ``grad_x = g * a`` inside the box, ``g`` outside (a
    ``lerp`` with the 0/1 weight: exact on both sides).
    """

    @staticmethod
    def forward(  # noqa: D102
        ctx,
        x: Tensor,
        mean: Tensor,
        a: Tensor,
        c: Tensor,
        weight: Tensor | None,
        centred: Tensor | None,
    ):
        d = x.dim()
        if weight is None:
            out = _affine_values(x, a, c - a * mean)
        else:
            out = torch.addcmul(x, centred, _per_map(a - 1, d))
            shift = (_per_map(c - mean, d), weight)
            # in place when eager; compiled by torch 2.11, a forward that changed its result in
            # place passed no gradient back
            compiled = torch.compiler.is_compiling()
            out = _cast(torch.addcmul(out, *shift) if compiled else out.addcmul_(*shift), x.dtype)
        ctx.save_for_backward(x, mean, a, weight, centred)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # noqa: D102
        x, mean, a, weight, centred = ctx.saved_tensors
        if weight is None:
            sum_gcx, sum_g = _map_sums(grad, x, mean)  # d loss / d a, d loss / d c
            grad_x = _affine_values(grad, a, torch.zeros_like(a))
        else:
            acc = grad.to(weight.dtype)
            sum_g = _masked_sums(acc, weight)
            sum_gcx = _map_sums(acc, centred, torch.zeros_like(sum_g))[0]  # sum(g * centred)
            grad_x = _cast(torch.mul(acc, _per_map(a, x.dim())).lerp_(acc, 1 - weight), x.dtype)
        sum_gcx, sum_g = sum_gcx.to(a.dtype), sum_g.to(a.dtype)
        return grad_x, -a * sum_g, sum_gcx, sum_g, None, None


def _check_crossnorm_args(instances: int, crop: str, lam: float | None) -> None:
    if instances not in (1, 2):
        raise ValueError(f"instances must be 1 or 2 (1- or 2-instance CrossNorm), got {instances}.")
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}.")
    if lam is not None and not 0 <= lam <= 1:
        raise ValueError(f"lam must be in [0, 1] or None, got {lam}.")


#: Fixed switch buffers per style layer, used in turn (:class:`StyleLayer`): two settings per
#: switched forward (on, then off on leaving :func:`crossnorm_step`), so a step may run four
#: switched forwards before its backward.
SWITCH_SLOTS = 8


def _traced() -> bool:
    """Whether ``torch.compile`` is tracing the current call (then a style layer's switch is
    read as a tensor, :class:`StyleLayer`)."""
    return torch.compiler.is_compiling()


class StyleLayer(nn.Module):
    """Base of stochastic, train-only style layers switched from outside (CrossNorm and peers).

    ``active`` is set by :func:`activate_crossnorm` / :func:`crossnorm_step` and never changed by
    the layer itself; the layer is the identity unless ``self.training and self.active``.
    Subclasses implement :meth:`transform`, and :meth:`check_input`, which runs at every forward,
    on or off, so that an input the layer would reject when on is rejected from the first step.

    The switch is kept twice: as the Python bool ``active`` and as ``switch``, a 0-d bool tensor
    on the layer's device (a buffer, not in the state dict). Run eagerly, the layer reads
    ``active`` and restyles only when on. Traced by ``torch.compile``, it reads ``switch``: it
    restyles at every training forward and returns ``torch.where(switch, restyled, x)``, so
    every on/off pattern of a model's units runs the same graph (a Python attribute would be a
    guard, and each pattern a recompilation). That costs a restyling of every unit per step
    where eager mode restyles the ``active_num`` chosen ones, and each unit draws its pairing
    and boxes at every step: a compiled run draws other random numbers than an eager one (the
    same distributions).

    ``switch`` is one of :data:`SWITCH_SLOTS` fixed 0-d buffers (``switch_0``, ...), used in
    turn: each setting of ``active`` moves to the next slot and writes the value there (a
    device-side fill: no host synchronisation). Not the same tensor, because a compiled graph
    saves the switch for its backward (``where``'s) and trainers that run several forwards
    before one backward (the consistency and AugMix losses) switch between them: a write into
    the saved tensor would change what the pending backward reads (autograd stops it: the saved
    tensor's version changed; the compiler saves the buffer itself even where the forward copies
    it). Not a new tensor each time, because under CUDA graphs (``mode="reduce-overhead"``) a
    buffer is a static input: at a new address each step, cudagraph trees would record a new
    graph each step. :func:`activate_crossnorm` and :func:`deactivate_crossnorm` set every unit
    of a model once, so all units move in step and a forward sees one of ``SWITCH_SLOTS / 2``
    sets of addresses: at most that many CUDA graphs, whatever the patterns (twice that if units
    are also switched one by one). A step may run up to ``SWITCH_SLOTS / 2`` switched forwards
    before its backward.
    """

    def __init__(self) -> None:
        super().__init__()
        for k in range(SWITCH_SLOTS):
            self.register_buffer(f"switch_{k}", torch.zeros((), dtype=torch.bool), persistent=False)
        self._slot = 0
        self._active = False
        self.switch: Tensor = self.switch_0  # the current slot (an attribute, not a buffer)

    def _apply(self, fn, recurse=True):  # noqa: ANN001, D102 - nn.Module's: moves the slots
        super()._apply(fn, recurse)
        self.switch = getattr(self, f"switch_{self._slot}")
        return self

    @property
    def active(self) -> bool:
        """Whether the layer is switched on (see the class docstring)."""
        return self._active

    @active.setter
    def active(self, value: bool) -> None:
        self._active = bool(value)
        self._slot = (self._slot + 1) % SWITCH_SLOTS  # never the slot a pending backward saved
        switch = getattr(self, f"switch_{self._slot}")
        switch.fill_(self._active)
        self.switch = switch

    def check_input(self, x: Tensor, mask: Tensor | None = None) -> None:
        """Raise a ValueError for an input :meth:`transform` would reject (cheap: no data read)."""

    def transform(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``transform(x, mask)`` while training and switched on, else ``x`` unchanged.

        :meth:`check_input` runs in every case.
        """
        self.check_input(x, mask)
        if not self.training:
            return x
        if _traced():  # the tensor switch: one graph for every on/off pattern
            return torch.where(self.switch, self.transform(x, mask), x)
        return self.transform(x, mask) if self.active else x


class CrossNorm(StyleLayer):
    """CrossNorm as a layer: :func:`crossnorm` while training and switched on, else the identity.

    Args:
        num_channels: C of the input, checked when given (None accepts any C), so the layer drops
            in wherever ``nn.BatchNorm2d(num_channels)`` goes.
        instances, crop, beta, threshold, lam, eps, box, pairing: see :func:`crossnorm`.

    The input (rank, dtype, channels, and a mask's shape) is checked at every forward, also off or
    in ``eval()``, where the layer returns it unchanged; an empty input is returned unchanged
    (off) or as an empty copy (on), as ``nn.BatchNorm2d`` returns an empty output.

    Randomness (pairing, boxes) comes from torch's global generator of the input's device
    (``torch.manual_seed`` seeds the CPU's and every GPU's): seed it once per run
    (:func:`sncn.utils.seed_everything`). Which samples may be paired (``groups`` of
    :func:`crossnorm`) is set from outside with :func:`crossnorm_groups` (default: all together).

    Reference:
        Section 3 and 3.1 of the paper, Eq. 3-6.
    """

    def __init__(
        self,
        num_channels: int | None = None,
        instances: int = 2,
        crop: str = "neither",
        beta: float = 1.0,
        threshold: float = 0.1,
        lam: float | None = None,
        eps: float = 1e-5,
        box: str = "released",
        pairing: str = "permutation",
    ) -> None:
        super().__init__()
        _check_num_channels(num_channels, "CrossNorm", optional=True)
        _check_crossnorm_args(instances, crop, lam)
        _check_box_args(beta, threshold, box)
        _check_pairing(pairing)
        self.num_channels = num_channels
        self.instances = instances
        self.crop = crop
        self.beta = beta
        self.threshold = threshold
        self.lam = lam
        self.eps = eps
        self.box = box
        self.pairing = pairing
        self.groups: Tensor | None = None  # set from outside: crossnorm_groups

    def check_input(self, x: Tensor, mask: Tensor | None = None) -> None:
        """Raise a ValueError unless ``x`` is a floating-point ``(N, C, L)``/``(N, C, H, W)``
        tensor with the layer's C and ``mask`` (if given) is ``(N, *spatial)``."""
        _check_features(x, self.num_channels, "CrossNorm")
        if mask is not None:
            _check_mask_shape(mask, x)

    def transform(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Apply CrossNorm to ``x`` ``(N, C, ...)`` (``mask``, ``groups``: see crossnorm)."""
        _check_features(x, self.num_channels, "CrossNorm")
        return crossnorm(
            x, self.instances, self.crop, self.beta, self.threshold, self.lam, self.eps,
            mask=mask, groups=self.groups, box=self.box, pairing=self.pairing,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, instances={self.instances}, crop={self.crop!r}, "
            f"beta={self.beta}, threshold={self.threshold}, lam={self.lam}, box={self.box!r}, "
            f"pairing={self.pairing!r}"
        )


# --------------------------------------------------------------------------------------------
# CNSN unit and wrapping
# --------------------------------------------------------------------------------------------


class CNSN(nn.Module):
    """A CrossNorm and/or SelfNorm unit, CrossNorm first by default (paper §4, Hyper-parameters).

    Child names are ``crossnorm`` and ``selfnorm``, as in the released code, so its state dicts
    load unchanged.

    Args:
        num_channels: C of the input.
        cn: include a CrossNorm.
        sn: include a SelfNorm.
        order: ``"cn-sn"`` (paper) or ``"sn-cn"`` (Table 5's alternative).
        instances, crop, beta, threshold, box, pairing: CrossNorm settings (see
            :func:`crossnorm`).
        two_functions: SelfNorm form (see :class:`SelfNorm`).
    """

    def __init__(
        self,
        num_channels: int,
        cn: bool = True,
        sn: bool = True,
        order: str = "cn-sn",
        instances: int = 2,
        crop: str = "neither",
        beta: float = 1.0,
        threshold: float = 0.1,
        two_functions: bool = False,
        box: str = "released",
        pairing: str = "permutation",
    ) -> None:
        super().__init__()
        if order not in ("cn-sn", "sn-cn"):
            raise ValueError(f"order must be 'cn-sn' or 'sn-cn', got {order!r}.")
        if not (cn or sn):
            raise ValueError("a CNSN unit needs cn=True, sn=True or both.")
        self.order = order
        self.crossnorm = (
            CrossNorm(num_channels, instances, crop, beta, threshold, box=box, pairing=pairing)
            if cn
            else None
        )
        self.selfnorm = SelfNorm(num_channels, two_functions) if sn else None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Apply the unit's layers in ``order`` (``mask``: padded positions, see SelfNorm)."""
        layers = (self.crossnorm, self.selfnorm)
        for layer in layers if self.order == "cn-sn" else reversed(layers):
            if layer is not None:
                x = layer(x) if mask is None else layer(x, mask)
        return x

    def extra_repr(self) -> str:
        return f"order={self.order!r}"


class _ApplyChild:
    """Forward hook: pass a module's output through its child ``name``.

    Looked up on the module the hook is called with, so DataParallel replicas use their own copy.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        return getattr(module, self.name)(output)


def wrap_output(module: nn.Module, unit: nn.Module, name: str = "cnsn") -> nn.Module:
    """Pass ``module``'s output through ``unit`` (e.g. a :class:`CNSN`), in place.

    ``unit`` becomes the child ``name`` of ``module`` and a forward hook applies it, so every
    existing parameter keeps its state-dict key (pretrained weights still load) and the unit's
    own keys appear under ``<module path>.<name>.``.

    Args:
        module: any module whose output is a ``(N, C, ...)`` tensor.
        unit: the module to apply to that output.
        name: attribute name for the unit.

    Returns:
        ``module`` itself.
    """
    if hasattr(module, name):
        raise ValueError(
            f"{type(module).__name__} already has an attribute {name!r}; pass another name."
        )
    module.add_module(name, unit)
    module.register_forward_hook(_ApplyChild(name))
    return module


# --------------------------------------------------------------------------------------------
# The CrossNorm switch (paper §3.2)
# --------------------------------------------------------------------------------------------


def style_layers(model: nn.Module) -> list[tuple[str, StyleLayer]]:
    """All switchable style layers of ``model`` (CrossNorm and peers), as ``(name, layer)``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, StyleLayer)]


def deactivate_crossnorm(model: nn.Module) -> None:
    """Switch every style layer of ``model`` off."""
    for _, layer in style_layers(model):
        layer.active = False


def activate_crossnorm(
    model: nn.Module,
    cn_prob: float,
    active_num: int,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Switch on ``active_num`` random style layers with probability ``cn_prob`` (the rest off).

    Args:
        model: a model containing CrossNorm (or peer) layers; DDP/DataParallel wrappers are fine.
        cn_prob: probability that any layer is switched on for this step.
        active_num: how many layers to switch on then (all of them if the model has fewer).
        generator: CPU torch generator (default: torch's global one).

    Returns:
        Names of the layers switched on (empty when none).

    Reference:
        Section 3.2 of the paper ("we randomly turn on only some CrossNorms").
    """
    if not 0 <= cn_prob <= 1:
        raise ValueError(f"cn_prob must be in [0, 1], got {cn_prob}.")
    if active_num < 0:
        raise ValueError(f"active_num must be >= 0, got {active_num}.")
    layers = style_layers(model)
    chosen: list[int] = []
    if layers and float(torch.rand((), generator=generator)) < cn_prob:
        chosen = torch.randperm(len(layers), generator=generator)[:active_num].tolist()
    for i, (_, layer) in enumerate(layers):  # each unit set once: their switches move in step
        layer.active = i in chosen
    return [layers[i][0] for i in sorted(chosen)]


@contextlib.contextmanager
def crossnorm_step(
    model: nn.Module,
    cn_prob: float,
    active_num: int,
    generator: torch.Generator | None = None,
) -> Iterator[list[str]]:
    """Context manager for one training step: layers switched on inside, all off on exit.

    Example::

        with crossnorm_step(model, cn_prob=0.5, active_num=1):
            loss = F.cross_entropy(model(x), y)
        loss.backward()

    Yields:
        Names of the layers switched on for this step.
    """
    try:
        yield activate_crossnorm(model, cn_prob, active_num, generator)
    finally:
        deactivate_crossnorm(model)


@contextlib.contextmanager
def crossnorm_groups(model: nn.Module, groups: Tensor | None) -> Iterator[None]:
    """Context manager: every CrossNorm of ``model`` pairs samples only within their group.

    Sets the ``groups`` of each :class:`CrossNorm` layer (see :func:`crossnorm`) for the forward
    passes inside and restores the previous value on exit; switching the layers on is separate
    (:func:`crossnorm_step`). Example, a semi-supervised batch ``cat(labelled, unlabelled)``::

        groups = torch.cat([torch.zeros(n_l), torch.ones(n_u)]).long()  # -1: left alone
        with crossnorm_step(model, 1.0, 1), crossnorm_groups(model, groups):
            logits = model(torch.cat([x_l, x_u]))

    Args:
        model: a model containing CrossNorm layers.
        groups: ``(N,)`` integer group ids of the batch's samples, or None (one group).
    """
    layers = [m for m in model.modules() if isinstance(m, CrossNorm)]
    previous = [layer.groups for layer in layers]
    try:
        for layer in layers:
            layer.groups = groups
        yield
    finally:
        for layer, value in zip(layers, previous, strict=True):
            layer.groups = value
