"""Every figure of the notebooks, built from tiny synthetic inputs, is readable on its own: a
title naming the paper's figure or table, labelled axes, legends outside the data, the data
source and the profile written on it, colour-blind-safe colours, readable numbers in cells."""

from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex, to_rgb
from matplotlib.markers import MarkerStyle

from sncn import results
from sncn.corruptions import CORRUPTIONS
from sncn.experiments import ablations, cifar_c, semisupervised, sentiment
from sncn.experiments import segmentation as seg
from sncn.experiments import visualization as viz

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SOURCE_WORDS = ("official", "generated", "proxy")


def smooth_images(n: int, seed: int, size: tuple[int, int] = (16, 16)) -> torch.Tensor:
    """``(n, 3, H, W)`` smooth colour images in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear")


def heatmap(tmp_path):
    rng = np.random.default_rng(0)

    def run(mce):  # every error from 0 to 100, so every colour of the map has a number on it
        return {"errors": {c: list(rng.uniform(0, 100, 5)) for c in CORRUPTIONS}, "mce": mce,
                "cifar_c": "generated"}  # fmt: skip

    return cifar_c.heatmap_figure({"basic": run(50.0), "sncn": run(40.0)}, "cifar10 wrn")


def budget_curves(tmp_path):
    rng = np.random.default_rng(1)
    rungs = []
    for epochs, steps in ((1, 8), (2, 16), (4, 32)):
        grid = []
        for method in ("basic", "sn", "cn", "sncn"):
            seeds = [{"mce": rng.uniform(40, 60), "clean_error": rng.uniform(20, 40),
                      "errors": {c: list(rng.uniform(0, 100, 5)) for c in CORRUPTIONS},
                      "steps": steps, "mce_se": 0.8, "cifar_c": "generated"}
                     for _ in range(2)]  # fmt: skip
            grid.append(("cifar10", "wrn", method, seeds))
        rungs.append((epochs, grid))
    rows = cifar_c.curve_rows(rungs)
    return cifar_c.budget_figure(rows, "cifar10", "wrn", "CIFAR-C generated here", title="WRN-10-2")


def figure9(tmp_path, dataset="cifar100"):
    out = {}
    for study in ablations.FIG9_PANELS:
        arms = ablations.WRN_STUDIES[study]
        out[study] = [(a, [{"mce": 40.0 + i, "clean_error": 5.0, "cifar_c": "generated",
                            "dataset": dataset}]) for i, a in enumerate(arms)]  # fmt: skip
    return ablations.figure9(out, title="synthetic")


def figure4(tmp_path):
    runs = []
    for k, (variant, labels) in enumerate(
        itertools.product(("wa", "wa_cn_all", "ra", "ra_cn_all", "ra_cn_unlabelled"), (250, 4000))
    ):
        metrics = {"clean_error": 10.0 + k, "mce": 30.0 + 2 * k, "cifar_c": "generated"}
        runs.append((variant, labels, [metrics]))
    return semisupervised.figure(runs)


def sentiment_runs(same: bool = True):
    def fake(src, tgt, epochs=3):
        return {"source_acc": src, "target_acc": tgt,
                "history": [{"target_acc": tgt - e} for e in range(epochs)][::-1]}  # fmt: skip

    other = 66 if same else 70  # same: two methods reach the same SST-2 accuracy
    return [("baseline", [fake(80, 66), fake(80, 66)]), ("sn", [fake(81, other)]),
            ("cn", [fake(82, 68)]), ("sncn", [fake(83, 69)])]  # fmt: skip


def table4(tmp_path):
    return sentiment.figure(sentiment_runs())


def segmentation(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 8, 16), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 19, (2, 8, 16), generator=g)
    labels[:, 0] = 255
    info = {"dataset": "proxy", "target_name": "realistic scenes"}
    data = seg.SegmentationData((images, labels), (images, labels), (images, labels), info)
    runs = []
    for method in ("baseline", "sncn_crop"):
        name = f"seg-{method}"
        torch.save(torch.randint(0, 5, (2, 8, 16), generator=g),
                   results.run_dir(tmp_path, name) / "target_predictions.pt")  # fmt: skip
        runs.append((method, [{"run": name}]))
    return seg.prediction_figure(runs, tmp_path, data, images=2)


def style_exchange(tmp_path):
    content, style = smooth_images(2, 1), smooth_images(3, 2)
    versions = viz.exchange_grid(content[:1], style)[0]
    return viz.style_exchange_figure(content, style, versions, viz.adjust_stats(versions), "c")


def inversion(tmp_path, same=False):
    content, style = smooth_images(2, 1), smooth_images(3, 2)
    grid = viz.exchange_grid(content, style)
    head = grid.flip(-2)
    end = head.clone() if same else grid.flip(-1)  # same: a block of one cell
    panels = {"CN in image space": grid, viz.point_label("block1.head"): head,
              viz.point_label("block1.tail"): end}  # fmt: skip
    return viz.inversion_figure(panels, content, style, "caption")


def selfnorm(tmp_path):
    images = smooth_images(3, 3)
    g = torch.Generator().manual_seed(0)
    recal = {
        unit: {"inverted": images, **{f"{s}_spread_{w}": torch.rand(8, generator=g)
                                      for s in ("mean", "std") for w in ("before", "after")}}
        for unit in ("block1.layer.0.cnsn.selfnorm", "block1.layer.1.cnsn.selfnorm")
    }  # fmt: skip
    return viz.selfnorm_figure(images, ["clean", "fog", "snow"], recal, "caption")


def image_crossnorm(tmp_path):
    scenes = smooth_images(2, 4, size=(16, 32))
    outputs, _, boxes = viz.image_crossnorm(scenes, 2)
    return viz.image_crossnorm_figure(scenes, outputs, boxes, "caption")


FIGURES = {
    "cifar_c_heatmap": heatmap,
    "budget_curves": budget_curves,
    "fig9": figure9,
    "figure4": figure4,
    "table4": table4,
    "segmentation": segmentation,
    "fig1": style_exchange,
    "fig5": inversion,
    "fig6": selfnorm,
    "fig14": image_crossnorm,
}

#: what each title must name
NAMES = {"cifar_c_heatmap": "Table 1", "budget_curves": "training budget", "fig9": "Figure 9",
         "figure4": "Figure 4", "table4": "Table 4", "segmentation": "Table", "fig1": "Figure 1",
         "fig5": "Figure 5", "fig6": "Figure 6", "fig14": "Figure 14"}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(FIGURES))
def built(request, tmp_path_factory):
    """(name, figure) after saving into a ``smoke`` results folder, drawn."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    fig = FIGURES[request.param](tmp_path)
    results.save_figure(fig, request.param, tmp_path / "smoke")
    fig.canvas.draw()
    yield request.param, fig
    plt.close(fig)


def data_axes(fig):
    """Axes that show plotted data (not images, not colour bars)."""
    return [ax for ax in fig.get_axes()
            if ax.axison and not ax.get_images() and ax.get_label() != "<colorbar>"]  # fmt: skip


def legends(fig):
    found = [ax.get_legend() for ax in fig.get_axes() if ax.get_legend() is not None]
    for f in [fig, *fig.subfigs]:
        found += f.legends
    return found


def footer(fig):
    texts = [t for f in [fig, *fig.subfigs] for t in f.texts if t.get_gid() == results.FOOTER_GID]
    assert len(texts) == 1, "one footer"
    return texts[0].get_text()


def test_title_names_the_papers_figure(built):
    name, fig = built
    assert fig._suptitle is not None and NAMES[name] in fig._suptitle.get_text()


def test_axes_are_labelled(built):
    _, fig = built
    for ax in data_axes(fig):
        assert ax.get_xlabel(), ax.get_title()
        siblings = ax.get_shared_y_axes().get_siblings(ax)
        assert any(a.get_ylabel() for a in siblings), ax.get_title()
    for ax in fig.get_axes():
        if ax.get_images() and ax.axison:  # heatmaps: labelled too
            assert ax.get_xlabel()


def test_legends_do_not_cover_data(built):
    _, fig = built
    renderer = fig.canvas.get_renderer()
    for legend in legends(fig):
        box = legend.get_window_extent(renderer)
        for ax in fig.get_axes():
            if ax.get_label() == "<colorbar>":
                continue
            assert not box.overlaps(ax.get_window_extent(renderer)), legend.get_texts()[0]


def test_source_and_profile_are_on_the_figure(built):
    _, fig = built
    text = footer(fig)
    assert "Data: " in text and any(w in text.lower() for w in SOURCE_WORDS), text
    assert "profile: smoke" in text.lower()


def _colours(ax):
    """The colours of everything plotted in ``ax`` (bars, lines, markers), as hex."""
    found = []
    for patch in ax.patches:
        if patch.get_fill() and patch.get_facecolor()[3] > 0:
            found.append(patch.get_facecolor())
        if patch.get_linewidth() > 0 and patch.get_hatch():
            found.append(patch.get_edgecolor())
    for line in ax.lines:  # what is drawn: the line, its markers (error bar caps: markers only)
        if line.get_linestyle() not in ("None", "", " "):
            found.append(line.get_color())
        marker = MarkerStyle(line.get_marker())
        if marker.get_marker() not in ("None", "", " ", None):
            shown = (line.get_markerfacecolor(),) if marker.is_filled() else ()
            shown += (line.get_markeredgecolor(),)
            found += [c for c in shown if not (isinstance(c, str) and c == "none")]
    for collection in ax.collections:
        for c in (*collection.get_facecolors(), *collection.get_edgecolors()):
            if c[3] > 0:
                found.append(c)
    return {to_hex(c) for c in found}


def _neutral(colour: str) -> bool:
    r, g, b = to_rgb(colour)
    return r == g == b  # black, white and greys: reference lines, error bars


def test_colours_are_colour_blind_safe(built):
    _, fig = built
    palette = set(results.PALETTE)
    for ax in data_axes(fig):
        odd = {c for c in _colours(ax) if c not in palette and not _neutral(c)}
        assert not odd, (ax.get_title(), odd)
    for ax in fig.get_axes():
        for image in ax.get_images():
            if image.get_array().ndim == 2:  # a colour map, not an RGB picture
                assert image.get_cmap().name == results.HEATMAP_CMAP


def test_numbers_in_cells_are_readable(built):
    _, fig = built
    for ax in fig.get_axes():
        images = [im for im in ax.get_images() if im.get_array().ndim == 2]
        for image in images:
            array = image.get_array()
            for text in ax.texts:
                j, i = (round(v) for v in text.get_position())
                cell = image.cmap(image.norm(array[i, j]))
                assert results.contrast_ratio(text.get_color(), cell) >= 4.5, text.get_text()


def test_palette_is_seaborns_colorblind():
    sns = pytest.importorskip("seaborn")
    assert tuple(sns.color_palette("colorblind").as_hex()) == results.PALETTE


def test_contrast_ratio_and_text_colour():
    assert results.contrast_ratio("black", "white") == pytest.approx(21.0)
    assert results.contrast_ratio("#777777", "#777777") == pytest.approx(1.0)
    assert results.text_colour("yellow") == "black" and results.text_colour("navy") == "white"
    for value in np.linspace(0, 1, 101):  # every colour of the heatmap map gets >= 4.5
        cell = matplotlib.colormaps[results.HEATMAP_CMAP](value)
        assert results.contrast_ratio(results.text_colour(cell), cell) >= 4.5


def test_figure9_names_both_datasets_and_says_when_the_papers_bars_are_left_out(tmp_path):
    fig = figure9(tmp_path, "cifar100")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["ours (CIFAR-100-C)", "paper (CIFAR-100-C)"]
    plt.close(fig)
    fig = figure9(tmp_path, "cifar10")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["ours (CIFAR-10-C)"]
    assert "paper's bars (CIFAR-100-C) are left out" in footer(fig)
    plt.close(fig)


def test_sentiment_points_do_not_hide_each_other(tmp_path):
    """Two methods with the same SST-2 accuracy still show two markers."""
    fig = sentiment.figure(sentiment_runs(same=True))
    curves = fig.axes[1]
    points = [tuple(p) for line in curves.lines for p in line.get_xydata()]
    assert len(set(points)) == len(points)
    markers = {line.get_marker() for line in curves.lines}
    assert len(markers) == len(curves.lines)  # told apart without colour too
    plt.close(fig)


def test_segmentation_figure_names_its_classes_and_the_proxy(tmp_path):
    fig = segmentation(tmp_path)
    names = {t.get_text() for t in legends(fig)[0].get_texts()}
    assert {"road", "sidewalk", "ignored"} <= names
    assert "proxy" in fig._suptitle.get_text() and "PROXY" in footer(fig)
    plt.close(fig)


def test_identical_inversion_panels_are_explained(tmp_path):
    fig = inversion(tmp_path, same=False)
    assert "Identical" not in footer(fig)
    plt.close(fig)
    fig = inversion(tmp_path, same=True)
    text = footer(fig)
    assert "'CN at the start of block 1' and 'CN at the end of block 1'" in text
    assert "one cell" in text
    plt.close(fig)


def test_save_figure_writes_the_profile_once(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    results.figure_footer(fig, "generated numbers")
    for _ in range(2):
        results.save_figure(fig, "f", tmp_path / "quick")
    assert footer(fig).lower().count("profile: quick") == 1
    plt.close(fig)
    fig, _ = plt.subplots()
    results.save_figure(fig, "h", tmp_path / "elsewhere")  # not a profile folder: nothing added
    assert not [t for t in fig.texts if t.get_gid() == results.FOOTER_GID]
    plt.close(fig)
