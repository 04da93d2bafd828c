"""Visualising CrossNorm and SelfNorm: Figures 1, 5, 11 and 14, and SelfNorm's recalibration.

What ``notebooks/07_visualization.ipynb`` calls. Four kinds of picture:

* **Style exchange and adjustment in RGB** (Figure 1): every image takes the RGB means and
  standard deviations of every other (CrossNorm at the image level, Eq. 3), and the styled
  versions of one image get their RGB statistics pulled toward a common value (what SelfNorm does
  with attention, done here by hand).
* **Feature inversion** (Figures 5 and 11): CrossNorm between a content and a style image at the
  head or tail of a WRN block, mapped back to image space by finding the image whose features
  there match (Mahendran & Vedaldi, 2015); see :func:`invert`.
* **SelfNorm's recalibration**: one test image under several corruptions, the spread of its
  channel statistics across the corrupted versions before and after a SelfNorm unit of a trained
  model, and the images whose features without that unit match those with it.
* **Image-level CrossNorm with style crops** (Figure 14) on a pair of street scenes.

Feature points (:func:`resolve_point`) name a module's output (``"block1.layer.0"``) or input
(``"block1.layer.0.cnsn.selfnorm:input"``); ``"block<k>.head"`` and ``"block<k>.tail"`` are the
first and last CrossNorm/SelfNorm units of a WRN block (cells with ``pos="post"`` units). Features
are taken with forward hooks, and the forward pass stops there.

Reference:
    Tang et al., "SelfNorm and CrossNorm for Out-of-Distribution Robustness": Figures 1, 5-7,
    11 and 14, Section 4.4 and appendix 6.3 ("Visualization Continued"). Mahendran & Vedaldi,
    "Understanding Deep Image Representations by Inverting Them", CVPR 2015.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sncn.data import data_root, sample_for
from sncn.data.vision import CIFAR_MEAN, CIFAR_STD, NUM_CLASSES, load_cifar, normalize
from sncn.layers import SelfNorm, crossnorm, instance_stats, random_partner, sample_box
from sncn.models import create_model

__all__ = [
    "INVERSION_DEFAULTS",
    "adjust_stats",
    "cifar_images",
    "crossnorm_inversion",
    "exchange_grid",
    "exchange_stats",
    "features",
    "image_crossnorm",
    "image_crossnorm_figure",
    "inversion_figure",
    "inversion_loss",
    "inversion_rows",
    "invert",
    "load_run_model",
    "model_for",
    "point_label",
    "resolve_point",
    "scene_caption",
    "selfnorm_figure",
    "selfnorm_recalibration",
    "selfnorm_rows",
    "selfnorm_units",
    "street_scenes",
    "style_exchange_figure",
]

#: The paper's inversion settings (appendix 6.3): SGD, lr 1e4, momentum 0.9, 200 iterations, the
#: learning rate divided by 10 every 40 iterations; and the weight of the normalised feature error
#: that makes lr 1e4 a stable step for a CIFAR WRN-40-2 (see :func:`invert`).
INVERSION_DEFAULTS: dict[str, Any] = {
    "iterations": 200,
    "lr": 1e4,
    "momentum": 0.9,
    "lr_step": 40,
    "lr_gamma": 0.1,
    "loss_weight": 1e-3,
}


# --------------------------------------------------------------------------------------------
# Statistics exchange and adjustment (Figure 1)
# --------------------------------------------------------------------------------------------


def exchange_stats(content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    """``content`` with the channel-wise mean and standard deviation of ``style`` (Eq. 3).

    ``sigma_B * (A - mu_A) / sigma_A + mu_B`` with ``A`` a map of ``content`` and ``B`` the same
    channel of ``style``: what 2-instance CrossNorm does to a pair, with the pairing given.

    Args:
        content: ``(N, C, H, W)`` images or features.
        style: ``(N, C, H', W')``, paired with ``content`` sample by sample (any spatial size).
        eps: variance epsilon, as in :func:`sncn.layers.crossnorm`.

    Returns:
        ``(N, C, H, W)``; differentiable in both inputs.
    """
    mean_a, std_a = instance_stats(content, eps, keepdim=True)  # (N, C, 1, 1) each
    mean_b, std_b = instance_stats(style, eps, keepdim=True)
    return std_b * (content - mean_a) / std_a + mean_b


def exchange_grid(content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    """Every content image with the statistics of every style image.

    Args:
        content: ``(Nc, C, H, W)``.
        style: ``(Ns, C, H, W)``.
        eps: variance epsilon.

    Returns:
        ``(Nc, Ns, C, H, W)``: entry ``[i, j]`` is ``content[i]`` in the style of ``style[j]``.
    """
    nc, ns = len(content), len(style)
    pairs = exchange_stats(
        content.repeat_interleave(ns, 0), style.repeat(nc, 1, 1, 1), eps
    )  # (Nc * Ns, C, H, W), content-major
    return pairs.view(nc, ns, *content.shape[1:])


def adjust_stats(images: Tensor, strength: float = 1.0, eps: float = 1e-5) -> Tensor:
    """Pull the channel statistics of several versions of one image toward a common value.

    The common value is the mean over the versions of the channel means and the geometric mean of
    their standard deviations; each version's ``(mu, log sigma)`` moves the fraction
    ``strength`` of the way there (1: all versions end with equal statistics). A hand-made
    stand-in for SelfNorm's recalibration in Figure 1 (right).

    Args:
        images: ``(V, C, H, W)``, versions of one image in different styles.
        strength: in [0, 1].
        eps: variance epsilon.

    Returns:
        ``(V, C, H, W)``.
    """
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength}.")
    mean, std = instance_stats(images, eps, keepdim=True)  # (V, C, 1, 1) each
    common_mean = mean.mean(0, keepdim=True)
    common_log_std = std.log().mean(0, keepdim=True)
    new_mean = mean + strength * (common_mean - mean)
    new_std = (std.log() + strength * (common_log_std - std.log())).exp()
    return new_std * (images - mean) / std + new_mean


#: The data of the CIFAR figures as the notebook makes them (:func:`cifar_images`).
CIFAR_SOURCE = "official CIFAR images from the data root"


def _heading(fig, text: str) -> None:
    """The figure's title, above its subfigures' own titles."""
    fig.suptitle(text, y=1.0, va="bottom", fontsize=10)


def style_exchange_figure(
    content: Tensor,
    style: Tensor,
    versions: Tensor,
    adjusted: Tensor,
    title: str = "",
    source: str = CIFAR_SOURCE,
):
    """Figure 1: exchanging (left) and adjusting (right) RGB means and standard deviations.

    Args:
        content: ``(Nc, 3, H, W)`` images in [0, 1] (rows of the left panel).
        style: ``(Ns, 3, H, W)`` images in [0, 1] (columns of the left panel).
        versions: ``(V, 3, H, W)``, one image in several styles (top row of the right panel).
        adjusted: ``(V, 3, H, W)``, the same after :func:`adjust_stats` (bottom row).
        title: caption, written under the figure.
        source: where the images come from, for the footer.
    """
    import matplotlib.pyplot as plt

    from sncn.results import figure_footer

    grid = exchange_grid(content, style)
    nc, ns, v = len(content), len(style), len(versions)
    fig = plt.figure(figsize=(1.0 * (ns + 1 + v) + 0.4, 1.0 * (nc + 1) + 0.8))
    left, right = fig.subfigures(1, 2, width_ratios=[ns + 1, v + 0.4])
    axes = left.subplots(nc + 1, ns + 1, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for j in range(ns):
        _show(axes[0, j + 1], style[j], "style" if j == 0 else "")
    for i in range(nc):
        _show(axes[i + 1, 0], content[i], "content" if i == 0 else "")
        for j in range(ns):
            _show(axes[i + 1, j + 1], grid[i, j])
    left.suptitle("(a) exchanging RGB mean and std (CrossNorm)", fontsize=9)
    left.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.02, wspace=0.05, hspace=0.2)
    axes = right.subplots(2, v, squeeze=False)
    for k in range(v):
        _show(axes[0, k], versions[k], "styled versions" if k == 0 else "")
        _show(axes[1, k], adjusted[k], "adjusted" if k == 0 else "")
    right.suptitle("(b) adjusting RGB mean and std", fontsize=9)
    height = min(0.76, 2.3 * 0.84 / (nc + 1))  # two rows of the left panel's image size
    right.subplots_adjust(
        left=0.08, right=0.98, top=0.5 + height / 2, bottom=0.5 - height / 2, wspace=0.05
    )
    _heading(fig, "Figure 1: exchanging and adjusting the RGB mean and std of images")
    figure_footer(fig, source, title)
    return fig


# --------------------------------------------------------------------------------------------
# Features at a point, inversion (Figures 5, 11, and SelfNorm's)
# --------------------------------------------------------------------------------------------


class _Captured(Exception):  # noqa: N818 - control flow, not an error
    """Raised by a hook to stop the forward pass once the wanted features are taken."""

    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.value = value


def _raise_input(module: nn.Module, inputs: tuple) -> None:
    raise _Captured(inputs[0])


def _raise_output(module: nn.Module, inputs: tuple, output: Tensor) -> None:
    raise _Captured(output)


def resolve_point(model: nn.Module, point: str) -> tuple[nn.Module, str]:
    """A feature point -> (the module, ``"input"`` or ``"output"``).

    Points: ``"<module path>"`` (the module's output), ``"<module path>:input"`` (its input), or
    for WRN-like models with ``block1..3`` of cells ``layer.0, layer.1, ...``: ``"block<k>.head"``
    (the output of the block's first cell, where its first CrossNorm/SelfNorm unit sits with
    ``pos="post"``) and ``"block<k>.tail"`` (the block's output, after its last unit).
    """
    path, _, where = point.partition(":")
    if where not in ("", "input"):
        raise ValueError(f"a feature point ends in ':input' or names a module, got {point!r}.")
    block, _, end = path.rpartition(".")
    if end == "head" and block:
        path = f"{block}.layer.0"
    elif end == "tail" and block:
        path = block
    modules = dict(model.named_modules())
    if path not in modules:
        top = [n for n in modules if n and "." not in n]
        raise ValueError(
            f"model has no module {path!r} (point {point!r}); its top-level modules: {top}."
        )
    return modules[path], where or "output"


def features(model: nn.Module, x: Tensor, point: str) -> Tensor:
    """The features of ``x`` at ``point`` (see :func:`resolve_point`); the forward stops there.

    Taken with a forward hook (a pre-hook for ``":input"``) that ends the forward pass by raising,
    so nothing after the point is computed.

    Args:
        model: the network, used as it is (call ``model.eval()`` first for inference features).
        x: network input ``(N, 3, H, W)`` (normalised images).
        point: e.g. ``"block1.head"``, ``"block2.tail"``, ``"block1.layer.0.cnsn.selfnorm:input"``.

    Returns:
        The features, with their autograd graph to ``x``.
    """
    module, where = resolve_point(model, point)
    if where == "input":
        handle = module.register_forward_pre_hook(_raise_input)
    else:
        handle = module.register_forward_hook(_raise_output)
    try:
        model(x)
    except _Captured as captured:
        return captured.value
    finally:
        handle.remove()
    raise RuntimeError(f"the forward pass of {type(model).__name__} never reached {point!r}.")


def inversion_loss(feats: Tensor, target: Tensor) -> Tensor:
    """Per-sample normalised feature error ``||phi(x) - phi_0||^2 / ||phi_0||^2``, ``(N,)``.

    Mahendran & Vedaldi's objective without their regularisers: the normalisation makes it
    comparable across layers (0: features matched; 1: as far as all-zero features).
    """
    dims = tuple(range(1, feats.dim()))
    return (feats - target).square().sum(dims) / target.square().sum(dims).clamp_min(1e-12)


def invert(
    model: nn.Module,
    point: str,
    target: Tensor,
    init: Tensor,
    iterations: int = 200,
    lr: float = 1e4,
    momentum: float = 0.9,
    lr_step: int = 40,
    lr_gamma: float = 0.1,
    loss_weight: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Find images whose features at ``point`` match ``target`` (Mahendran & Vedaldi, 2015).

    Objective, per image ``x`` with target features ``phi_0``::

        loss_weight * ||phi(x) - phi_0||^2 / ||phi_0||^2       (:func:`inversion_loss`)

    summed over the batch (the images do not interact: the network is in eval mode), minimised
    over the pixels of the normalised network input by SGD with the paper's schedule (appendix
    6.3: lr 1e4, momentum 0.9, 200 iterations, lr / 10 every 40). With plain SGD only
    ``lr * loss_weight`` matters: the paper's lr comes from a reference implementation of the
    inversion (224-px ImageNet images, error weighted 0.1); on 32-px CIFAR images and a WRN-40-2
    the normalised error needs a step of about 10 (``lr * loss_weight``: 100 overshoots at block
    1, 3 converges slower), hence the default weight 1e-3. There is no regulariser: after every
    step the pixels are clipped to the range of images in [0, 1] (a projection), which is enough
    at these iteration counts. Only the image gets gradients; the network runs in eval mode and its
    training flag is restored afterwards.

    Args:
        model: the network (its parameters are not changed).
        point: feature point (:func:`resolve_point`).
        target: ``(N, ...)`` features to match.
        init: ``(N, 3, H, W)`` starting images in [0, 1] (CIFAR normalisation is applied inside).
        iterations, lr, momentum, lr_step, lr_gamma: the SGD schedule.
        loss_weight: weight of the normalised feature error.

    Returns:
        ``(images, losses)``: ``(N, 3, H, W)`` in [0, 1], and ``(iterations + 1, N)`` the
        per-image normalised error (without the weight) before each step and after the last.
    """
    mean = torch.tensor(CIFAR_MEAN, device=init.device)[:, None, None]
    std = torch.tensor(CIFAR_STD, device=init.device)[:, None, None]
    low, high = (0 - mean) / std, (1 - mean) / std  # (3, 1, 1): the normalised [0, 1] range
    x = normalize(init).detach().requires_grad_(True)
    optimizer = torch.optim.SGD([x], lr=lr, momentum=momentum)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, lr_step, lr_gamma)
    target = target.detach()
    was_training = model.training
    model.eval()
    losses = []
    try:
        for _ in range(iterations):
            loss = inversion_loss(features(model, x, point), target)  # (N,)
            (x.grad,) = torch.autograd.grad(loss_weight * loss.sum(), x)  # not the weights'
            losses.append(loss.detach())
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, high), low))
        with torch.no_grad():
            losses.append(inversion_loss(features(model, x, point), target))
    finally:
        model.train(was_training)
    images = (x.detach() * std + mean).clamp(0, 1)
    return images, torch.stack(losses)


def crossnorm_inversion(
    model: nn.Module, point: str, content: Tensor, style: Tensor, **schedule: Any
) -> tuple[Tensor, Tensor]:
    """CrossNorm between every content and style image at ``point``, mapped back to images.

    As in the paper (Section 4.4): forward both, standardise the content's features with their
    own statistics and give them the style's (:func:`exchange_stats`), then optimise the image,
    starting from the content image, until its features at ``point`` match those.

    Args:
        model: the network (a model trained for one epoch in the paper).
        point: feature point, e.g. ``"block1.head"``.
        content: ``(Nc, 3, H, W)`` images in [0, 1].
        style: ``(Ns, 3, H, W)`` images in [0, 1].
        **schedule: :func:`invert`'s SGD settings.

    Returns:
        ``(grid, losses)``: ``(Nc, Ns, 3, H, W)`` images and :func:`invert`'s losses.
    """
    nc, ns = len(content), len(style)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        feats_c = features(model, normalize(content), point)
        feats_s = features(model, normalize(style), point)
    model.train(was_training)
    target = exchange_stats(feats_c.repeat_interleave(ns, 0), feats_s.repeat(nc, 1, 1, 1))
    images, losses = invert(model, point, target, content.repeat_interleave(ns, 0), **schedule)
    return images.view(nc, ns, *content.shape[1:]), losses


def point_label(point: str, layer: str = "CN") -> str:
    """A panel title in the paper's words: ``"block1.head"`` -> ``"CN at the start of block 1"``."""
    block, _, end = point.rpartition(".")
    if block.startswith("block") and end in ("head", "tail"):
        return f"{layer} at the {'start' if end == 'head' else 'end'} of block {block[5:]}"
    return f"{layer} at {point}"


def inversion_rows(losses: dict[str, Tensor]) -> list[dict[str, Any]]:
    """Table rows: the normalised feature error at the start and end of each inversion.

    Args:
        losses: ``{point or unit: (iterations + 1, N) losses from invert}``.
    """
    return [
        {
            "point": name,
            "images": loss.shape[1],
            "iterations": loss.shape[0] - 1,
            "error at start": float(loss[0].mean()),
            "error at end": float(loss[-1].mean()),
            "worst at end": float(loss[-1].max()),
        }
        for name, loss in losses.items()
    ]


def _paper_figure(panels: Sequence[str]) -> str:
    """Figure 5 shows image space and block 1; Figure 11 the deeper blocks."""
    first = any("image space" in p or "block 1" in p for p in panels)
    return "Figure 5" if first else "Figure 11"


def inversion_figure(
    panels: dict[str, Tensor],
    content: Tensor,
    style: Tensor,
    title: str = "",
    source: str = CIFAR_SOURCE,
):
    """Figures 5 and 11: one panel per point, content images as rows, style images as columns.

    The title names Figure 5 when a panel is in image space or block 1, else Figure 11. Panels
    whose images agree to 1e-3 (identical on screen) are named in the footer: their points give
    the same features (in a block of one cell its start and end coincide).

    Args:
        panels: ``{panel title: (Nc, Ns, 3, H, W) images}``, e.g. from
            :func:`crossnorm_inversion` or :func:`exchange_grid` (image level).
        content: ``(Nc, 3, H, W)`` in [0, 1].
        style: ``(Ns, 3, H, W)`` in [0, 1].
        title: caption, written under the figure (say which model and settings).
        source: where the images come from, for the footer.
    """
    import matplotlib.pyplot as plt

    from sncn.results import figure_footer

    nc, ns, p = len(content), len(style), len(panels)
    fig = plt.figure(figsize=(p * (ns + 1) * 0.95 + 0.3 * (p - 1), (nc + 1) * 1.05 + 0.5))
    subfigs = fig.subfigures(1, p, squeeze=False)[0]
    for sub, (name, grid) in zip(subfigs, panels.items(), strict=True):
        axes = sub.subplots(nc + 1, ns + 1, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for j in range(ns):
            _show(axes[0, j + 1], style[j], "style" if j == 0 else "")
        for i in range(nc):
            _show(axes[i + 1, 0], content[i], "content" if i == 0 else "")
            for j in range(ns):
                _show(axes[i + 1, j + 1], grid[i, j])
        sub.suptitle(name, fontsize=9)
        sub.subplots_adjust(left=0.01, right=0.99, top=0.84, bottom=0.01, wspace=0.05, hspace=0.05)
    names = list(panels)
    same = [
        f"'{a}' and '{b}'"
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if panels[a].shape == panels[b].shape
        and torch.allclose(panels[a], panels[b], rtol=0.0, atol=1e-3)  # same on screen
    ]
    note = title
    if same:
        note += (f" Identical panels: {'; '.join(same)}: the points give the same features in "
                 "this model (a block of one cell, as in WRN-10-1, starts and ends at the same "
                 "place).")  # fmt: skip
    _heading(fig, f"{_paper_figure(names)}: CrossNorm inverted to images (rows: content, "
                  "columns: style)")  # fmt: skip
    figure_footer(fig, source, note.strip())
    return fig


# --------------------------------------------------------------------------------------------
# SelfNorm's recalibration
# --------------------------------------------------------------------------------------------


def selfnorm_units(model: nn.Module, names: Sequence[str] = ()) -> list[str]:
    """SelfNorm modules to look at: ``names`` checked, or by default the first unit and the last
    of block 1 (the paper's "SN at the start/end of block 1", Figure 6).

    Args:
        model: a model with SelfNorm units.
        names: module names (each must be a SelfNorm of ``model``).

    Returns:
        Module names, in forward order.
    """
    found = [name for name, m in model.named_modules() if isinstance(m, SelfNorm)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no SelfNorm units (use a sn/sncn model).")
    if names:
        unknown = [n for n in names if n not in found]
        if unknown:
            raise ValueError(f"not SelfNorm units of the model: {unknown}; it has {found}.")
        return [n for n in found if n in names]
    block1 = [n for n in found if n.startswith("block1.")]
    return list(dict.fromkeys([found[0], *block1[-1:]]))


def _spreads(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Per channel spread of the style statistics across versions: ``(C,)`` twice.

    * mean spread: std over versions of ``mu``, in units of the average ``sigma``;
    * std spread: std over versions of ``log sigma``.

    Both are unchanged when every version is scaled by the same factor, so a SelfNorm that only
    shrinks all maps alike scores the same before and after.
    """
    mean, std = instance_stats(feats)  # (V, C) each
    return mean.std(0) / std.mean(0), std.log().std(0)


def selfnorm_recalibration(
    model: nn.Module, images: Tensor, unit: str, **schedule: Any
) -> dict[str, Any]:
    """What the SelfNorm unit ``unit`` does to versions of one image, in features and images.

    Args:
        model: a trained model with SelfNorm units (eval mode is used).
        images: ``(V, 3, H, W)`` in [0, 1], e.g. one test image under several corruptions.
        unit: name of a SelfNorm module (:func:`selfnorm_units`).
        **schedule: :func:`invert`'s SGD settings.

    Returns:
        ``mean_spread_before/after`` and ``std_spread_before/after`` (``(C,)`` each, see
        ``_spreads``), ``g`` (``(V, C)`` attention values), ``inverted`` (``(V, 3, H, W)``: the
        images whose features without the unit match those with it, as in the paper's Figure 6:
        starting from each image), and ``losses``.
    """
    module = dict(model.named_modules())[unit]
    if not isinstance(module, SelfNorm):
        raise ValueError(f"{unit!r} is a {type(module).__name__}, not a SelfNorm.")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        before = features(model, normalize(images), f"{unit}:input")
        after = module(before)
        g, _ = module.attention(*instance_stats(before, module.eps))
    model.train(was_training)
    out = {"g": g.cpu()}
    for name, feats in (("before", before), ("after", after)):
        spreads = _spreads(feats)
        out[f"mean_spread_{name}"], out[f"std_spread_{name}"] = (t.cpu() for t in spreads)
    inverted, losses = invert(model, f"{unit}:input", after, images, **schedule)
    out["inverted"], out["losses"] = inverted.cpu(), losses.cpu()
    return out


def selfnorm_rows(recalibrations: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows: per unit, the channel-averaged spreads before and after, how often the unit
    narrows them, the range of its attention ``g``, and the normalised feature error of the
    inversion at its start (the input image) and end.

    Args:
        recalibrations: ``{unit name: selfnorm_recalibration(...)}``.
    """
    rows = []
    for unit, r in recalibrations.items():
        row: dict[str, Any] = {"SelfNorm unit": unit}
        for stat in ("mean", "std"):
            before, after = r[f"{stat}_spread_before"], r[f"{stat}_spread_after"]
            row[f"{stat} spread before"] = float(before.mean())
            row[f"{stat} spread after"] = float(after.mean())
            row[f"channels narrowed ({stat}, %)"] = float((after < before).float().mean() * 100)
        row["g min"], row["g max"] = float(r["g"].min()), float(r["g"].max())
        row["inversion error start"] = float(r["losses"][0].mean())
        row["inversion error end"] = float(r["losses"][-1].mean())
        rows.append(row)
    return rows


def selfnorm_figure(
    images: Tensor,
    labels: Sequence[str],
    recalibrations: dict[str, dict[str, Any]],
    title: str,
    source: str = f"{CIFAR_SOURCE}; corruptions generated here (sncn.corruptions)",
):
    """Figure 6: SelfNorm's recalibration: images before/after each unit, and the per-channel
    spreads across the versions (one dot per channel; below the diagonal: narrowed).

    Args:
        images: ``(V, 3, H, W)`` in [0, 1], the versions of one image.
        labels: one name per version (e.g. the corruption).
        recalibrations: ``{unit: selfnorm_recalibration(...)}``.
        title: caption, written under the figure (say which model was used).
        source: where the images come from, for the footer.
    """
    import matplotlib.pyplot as plt

    from sncn.results import PALETTE, figure_footer, legend_outside

    units = list(recalibrations)
    v = len(images)
    rows = 1 + len(units)
    fig = plt.figure(figsize=(max(1.2 * v, 6) + 4.2 * 2, 1.3 * rows + 1.4))
    left, right = fig.subfigures(1, 2, width_ratios=[max(1.2 * v, 6), 8.4])
    axes = left.subplots(rows, v, squeeze=False)
    for k in range(v):
        _show(axes[0, k], images[k], labels[k])
        for u, unit in enumerate(units):
            _show(axes[u + 1, k], recalibrations[unit]["inverted"][k])
    row_labels = ["input"] + [f"after SN\n{_short(unit)}" for unit in units]
    for r, text in enumerate(row_labels):
        axes[r, 0].text(-0.12, 0.5, text, transform=axes[r, 0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=7)  # fmt: skip
    left.suptitle("inverted: features with SelfNorm, matched without it", fontsize=9)
    left.subplots_adjust(left=0.06, right=0.98, top=0.8, bottom=0.04, wspace=0.08, hspace=0.2)
    stat_axes = right.subplots(1, 2)
    measures = (
        ("mean", "channel mean", "std of channel mean / mean channel std"),
        ("std", "log channel std", "std of log channel std"),
    )
    for ax, (stat, name, unit_text) in zip(stat_axes, measures, strict=True):
        top = 0.0
        for u, unit in enumerate(units):
            before = recalibrations[unit][f"{stat}_spread_before"].numpy()
            after = recalibrations[unit][f"{stat}_spread_after"].numpy()
            ax.scatter(before, after, s=8, alpha=0.7, color=PALETTE[u % len(PALETTE)],
                       label=_short(unit))  # fmt: skip
            top = max(top, before.max(), after.max())
        ax.plot([0, top], [0, top], color="gray", lw=0.8, ls="--", label="no change")
        ax.set_xlabel(f"before SN ({unit_text})", fontsize=7)
        ax.set_ylabel(f"after SN ({unit_text})", fontsize=7)
        ax.set_title(f"spread of the {name}\nacross versions (dot: channel)", fontsize=8)
        ax.tick_params(labelsize=7)
    legend_outside(stat_axes[1], fontsize=6, title="SN unit", title_fontsize=7)
    right.subplots_adjust(left=0.1, right=0.78, wspace=0.5, bottom=0.2, top=0.8)
    _heading(fig, "Figure 6: SelfNorm recalibrating the statistics of corrupted versions")
    figure_footer(fig, source, title)
    return fig


def _short(unit: str) -> str:
    """``block1.layer.0.cnsn.selfnorm`` -> ``block1.layer.0``."""
    return unit.removesuffix(".selfnorm").removesuffix(".cnsn")


# --------------------------------------------------------------------------------------------
# Image-level CrossNorm with style crops (Figure 14)
# --------------------------------------------------------------------------------------------


def image_crossnorm(
    images: Tensor,
    draws: int,
    crop: str = "style",
    beta: float = 1.0,
    threshold: float = 0.1,
    generator: torch.Generator | None = None,
    pairing: str = "derangement",
) -> tuple[Tensor, Tensor, list[tuple[slice, ...] | None]]:
    """2-instance CrossNorm on a batch of images, ``draws`` times (:func:`sncn.layers.crossnorm`).

    Args:
        images: ``(N, 3, H, W)`` in [0, 1], one training batch (N >= 2).
        draws: how many times to apply it.
        crop, beta, threshold: CrossNorm's crop settings (Figure 14: ``"style"``).
        generator: CPU generator of the pairings and boxes (default: seeded with 0).
        pairing: ``"derangement"`` (default here: every image shows another's style, which is
            what the figure illustrates) or ``"permutation"`` (training's default, the released
            code's: an image may keep its own). Boxes are drawn as in training (released).

    Returns:
        ``(outputs, partners, boxes)``: ``(draws, N, 3, H, W)`` (not clipped), ``(draws, N)``
        the image each one took its statistics from, and per draw the box (one for the batch)
        those statistics were computed in for ``crop="style"`` (else None). Pairings and boxes
        are the ones :func:`~sncn.layers.crossnorm` draws, replayed on a copy of the generator.
    """
    if crop not in ("neither", "style"):
        raise ValueError(f"crop must be 'neither' or 'style' here, got {crop!r}.")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    outputs, partners, boxes = [], [], []
    for _ in range(draws):
        replay = torch.Generator().set_state(generator.get_state())
        partners.append(random_partner(len(images), replay, pairing))
        boxes.append(
            sample_box(images.shape[2:], beta, threshold, replay) if crop == "style" else None
        )
        outputs.append(
            crossnorm(images, 2, crop, beta, threshold, generator=generator, pairing=pairing)
        )
    return torch.stack(outputs), torch.stack(partners), boxes


def image_crossnorm_figure(
    images: Tensor,
    outputs: Tensor,
    boxes: list,
    title: str,
    source: str = "official street scenes (GTA5, Cityscapes or ImageNet sample) named above",
):
    """Figure 14: the original batch (first column) and the batch after each CrossNorm draw.

    Args:
        images: ``(N, 3, H, W)`` in [0, 1].
        outputs: ``(draws, N, 3, H, W)`` from :func:`image_crossnorm`.
        boxes: the style boxes from :func:`image_crossnorm`, drawn dashed on every image of
            their draw: each image took its statistics from that box of its partner.
        title: caption, written under the figure (say which images were used).
        source: where the images come from, for the footer.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from sncn.results import figure_footer

    draws, n = outputs.shape[:2]
    h, w = images.shape[2:]
    scale = 1.6 / h
    fig, axes = plt.subplots(
        n, draws + 1, figsize=((draws + 1) * w * scale, n * h * scale + 0.5), squeeze=False
    )
    for i in range(n):
        _show(axes[i, 0], images[i], "original batch" if i == 0 else "")
        for d in range(draws):
            _show(axes[i, d + 1], outputs[d, i], f"CrossNorm draw {d + 1}" if i == 0 else "")
            if boxes[d] is not None:
                rows, cols = boxes[d]
                for colour, style in (("black", "-"), ("white", "--")):  # visible on any image
                    axes[i, d + 1].add_patch(
                        Rectangle(
                            (cols.start - 0.5, rows.start - 0.5),
                            cols.stop - cols.start,
                            rows.stop - rows.start,
                            fill=False,
                            lw=1.0,
                            ls=style,
                            edgecolor=colour,
                        )
                    )
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02, wspace=0.04, hspace=0.06)
    _heading(fig, "Figure 14: CrossNorm on images, each taking the statistics of a box of another")
    figure_footer(fig, source, title)
    return fig


def _street_files(root: Path) -> list[Path]:
    """The street scenes under ``root`` in :func:`street_scenes`'s order of preference."""
    gta = sorted((root / "gta5" / "images").glob("*.png"))
    city = sorted((root / "cityscapes" / "leftImg8bit").glob("**/*.png"))
    sample = sorted((root / "cityscapes_sample" / "leftImg8bit").glob("**/*.png"))
    street = [root / "imagenet_sample" / "images" / f for f in _STREETS]
    found = gta[:2] if len(gta) >= 2 else city[:2] if len(city) >= 2 else sample[:1] + street
    return [p for p in found if p.is_file()][:2]


#: ImageNet sample images of streets: class "streetcar", then "trolleybus"
_STREETS = ("829_n04335435.jpg", "874_n04487081.jpg")


def street_scenes(
    root: str | os.PathLike | None = None,
    paths: Sequence[str] = (),
    size: tuple[int, int] = (128, 256),
) -> tuple[Tensor, list[str]]:
    """Two street scenes for Figure 14, as ``(2, 3, H, W)`` images in [0, 1].

    Looked for under the data root, first found wins: two GTA5 frames (``gta5/images/*.png``,
    the paper's choice), two Cityscapes frames (``cityscapes/leftImg8bit/**/*.png``), else the
    one frame of ``cityscapes_sample/leftImg8bit`` with the ImageNet sample's street scene
    (``imagenet_sample/images/829_n04335435.jpg``, class "streetcar"), or that and a second
    one (``874_n04487081.jpg``, "trolleybus"); else, where allowed
    (:func:`sncn.data.sample_for`), the two of the embedded sample.

    Args:
        root: data root (default :func:`sncn.data.data_root`).
        paths: explicit image paths relative to the root (overrides the search).
        size: ``(H, W)``; each image is centre-cropped to this aspect ratio and resized.

    Returns:
        ``(images, paths)``: the images and their paths relative to the root.
    """
    from PIL import Image

    given, root = root, data_root(root)
    if not paths:
        found = _street_files(root)
        if len(found) < 2 and (sample := sample_for("imagenet_sample", given)) is not None:
            root, found = sample, _street_files(sample)
        paths = [str(p.relative_to(root)) for p in found]
    if len(paths) < 2 or not all((root / p).is_file() for p in paths):
        raise FileNotFoundError(
            f"need two street scenes under {root} (gta5/images, cityscapes/leftImg8bit, or "
            f"cityscapes_sample + imagenet_sample); got {list(paths)}."
        )
    h, w = size
    images = []
    for p in paths:
        image = Image.open(root / p).convert("RGB")
        iw, ih = image.size
        cw, ch = min(iw, round(ih * w / h)), min(ih, round(iw * h / w))  # centre crop to W:H
        left, top = (iw - cw) // 2, (ih - ch) // 2
        image = image.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BILINEAR)
        images.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(images), list(paths)


def scene_caption(paths: Sequence[str], root: str | os.PathLike | None = None) -> str:
    """Say plainly where the street scenes of :func:`street_scenes` come from."""
    root = data_root(root)
    classes = {}
    labels = root / "imagenet_sample" / "labels.csv"
    if labels.is_file():
        import csv

        with labels.open() as f:
            classes = {row["filename"]: row["name"] for row in csv.DictReader(f)}
    parts = []
    for p in paths:
        name = Path(p).name
        if p.startswith("gta5/"):
            parts.append(f"GTA5 frame {name}")
        elif p.startswith("cityscapes"):
            parts.append(f"Cityscapes frame {name}")
        elif p.startswith("imagenet_sample/"):
            label = f", class '{classes[name]}'" if name in classes else ""
            parts.append(f"ImageNet sample image {name}{label}")
        else:
            parts.append(name)
    text = "Images: " + "; ".join(parts) + "."
    if not all(p.startswith("gta5/") for p in paths):
        text += " The paper uses two GTA5 frames; GTA5 is not in the data root"
        if sum(p.startswith("cityscapes") for p in paths) < 2:
            text += " and only one Cityscapes frame is, so it is paired with another street scene"
        text += "."
    return text


# --------------------------------------------------------------------------------------------
# Images and models
# --------------------------------------------------------------------------------------------


def cifar_images(
    dataset: str,
    split: str,
    n: int,
    seed: int = 0,
    root: str | os.PathLike | None = None,
) -> tuple[Tensor, np.ndarray]:
    """``n`` CIFAR images of distinct classes (as far as there are classes), chosen by ``seed``.

    Returns:
        ``(images, labels)``: ``(n, 3, 32, 32)`` float in [0, 1] and ``(n,)``.
    """
    images, labels = load_cifar(dataset, split, root, progress=False)
    rng = np.random.default_rng(seed)
    classes = rng.permutation(NUM_CLASSES[dataset])
    take = []
    for k in range(n):
        pool = np.flatnonzero(labels == classes[k % len(classes)])
        take.append(pool[rng.integers(len(pool))])
    chosen = torch.from_numpy(images[take]).permute(0, 3, 1, 2).float() / 255
    return chosen, labels[take]


def load_run_model(run: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a finished :func:`sncn.experiments.cifar_c.run` folder, in eval mode.

    Returns:
        ``(model, params)`` with ``params`` the run's ``params.json``.
    """
    run = Path(run)
    params = json.loads((run / "params.json").read_text())
    model = create_model(
        params["backbone"],
        num_classes=NUM_CLASSES[params["dataset"]],
        **params["model"],
        **params["model_kwargs"],
    )
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["trainer"]["model"])
    return model.eval(), params


def _describe(name: str, params: dict[str, Any]) -> str:
    """``WRN-40-2 'cn' (run cifar10-wrn-cn-seed0: 1 epoch(s) on 32000 cifar10 images)``."""
    arch = params["backbone"].upper()
    kwargs = params["model_kwargs"]
    if params["backbone"] == "wrn":
        arch = f"WRN-{kwargs.get('depth', 40)}-{kwargs.get('widen_factor', 2)}"
    return (
        f"{arch} '{params['method']}' (run {name}: {params['epochs']} epoch(s) on "
        f"{params['train_images']} {params['dataset']} images)"
    )


def model_for(
    results_dir: str | os.PathLike,
    method: str,
    *,
    dataset: str = "cifar10",
    backbone: str = "wrn",
    seed: int = 0,
    epochs: int = 0,
    **budget: Any,
) -> tuple[nn.Module, str]:
    """A trained model of ``method``: an existing run's, else one trained here.

    Looks for a finished run of ``method`` with its own setting (no overrides) in
    ``runs/<dataset>-<backbone>-<method>-<digest>-seed<seed>`` (e.g. written by ``01_cifar_c``)
    trained for ``epochs`` epochs (any number when ``epochs`` is 0), runs made by this code first
    (a stale one is said to be so in the description); else trains one with
    :func:`sncn.experiments.cifar_c.run`, ``epochs`` and ``budget``.

    Args:
        results_dir: the profile's results folder.
        method: a CIFAR method (``"cn"`` for the CrossNorm figures, ``"sncn"`` or ``"sn"`` for
            SelfNorm's).
        dataset, backbone, seed: the run's.
        epochs: the training length wanted (0: any finished run, or the released scripts' for a
            new one).
        **budget: :func:`~sncn.experiments.cifar_c.run` keywords for a new run
            (``train_subset``, ``test_subset``, ``batch_size``, ``model_kwargs``, ``progress``).

    Returns:
        ``(model, description)``: the model on the CPU in eval mode, and a sentence naming the
        run it comes from.
    """
    from sncn import results
    from sncn.experiments import cifar_c
    from sncn.hparams import cifar_setting

    own_model = cifar_setting(dataset, backbone, method)["model"]

    def find() -> tuple[nn.Module, str] | None:
        pattern = f"{dataset}-{backbone}-{method}-*-seed{seed}"
        finished = [run for run in sorted((Path(results_dir) / "runs").glob(pattern))
                    if results.is_done(run) and (run / "checkpoint.pt").is_file()]  # fmt: skip
        stale = {run: results.is_stale(results.load_metrics(run)) for run in finished}
        for run in sorted(finished, key=stale.get):  # runs made by this code first
            model, params = load_run_model(run)
            if params["model"] == own_model and epochs in (0, params["epochs"]):
                description = _describe(run.name, params)
                if stale[run]:
                    description = description[:-1] + "; STALE: made by other code)"
                return model, description
        return None

    found = find()
    if found is None:  # train one here
        cifar_c.run(dataset, backbone, method, results_dir, seed=seed, epochs=epochs, **budget)
        model, description = find()
        found = model, description[:-1] + ", trained by this notebook)"
    return found


def _show(ax, image: Tensor, title: str = "") -> None:
    """Show a ``(3, H, W)`` image (clipped to [0, 1]) without axes."""
    ax.imshow(image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=7)
