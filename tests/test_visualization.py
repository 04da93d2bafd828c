"""Visualisations: statistics exchange and adjustment, feature points, inversion, figures."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sncn import results
from sncn.data import data_root, sample_root
from sncn.experiments import visualization as viz
from sncn.hparams import cifar_setting
from sncn.layers import crossnorm, instance_stats
from sncn.models import create_model

matplotlib.use("Agg")


def smooth_images(n: int, seed: int, size: tuple[int, int] = (32, 32)) -> torch.Tensor:
    """``(n, 3, H, W)`` images in [0, 1] with image-like low-frequency content and colour casts."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    x = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    x = x + 0.05 * torch.randn(n, 3, *size, generator=g)
    cast = 0.5 * torch.rand(n, 3, 1, 1, generator=g)
    return (0.3 + 0.6 * x * cast / cast.mean()).clamp(0, 1)


def tiny_model(cnsn_type: str | None = "cn", depth: int = 10, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("wrn", depth=depth, widen_factor=1, cnsn_type=cnsn_type).eval()


def hook_counts(model: torch.nn.Module) -> list[tuple[int, int]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


# --------------------------------------------------------------------------------------------
# Figure 1: statistics exchange and adjustment
# --------------------------------------------------------------------------------------------


def test_exchange_stats_is_crossnorm_on_a_pair():
    x = smooth_images(2, seed=1)
    swapped = crossnorm(x, instances=2, pairing="derangement")  # the partner is the other one
    torch.testing.assert_close(viz.exchange_stats(x[:1], x[1:]), swapped[:1])
    torch.testing.assert_close(viz.exchange_stats(x[1:], x[:1]), swapped[1:])


def test_exchange_grid_has_the_style_statistics_and_keeps_the_content():
    content, style = smooth_images(2, seed=2), smooth_images(3, seed=3)
    grid = viz.exchange_grid(content, style, eps=0.0)
    assert grid.shape == (2, 3, 3, 32, 32)
    style_mean, style_std = instance_stats(style, eps=0.0)
    content_mean, content_std = instance_stats(content, eps=0.0)
    for i in range(2):
        mean, std = instance_stats(grid[i], eps=0.0)  # (Ns, 3) each: row i in every style
        torch.testing.assert_close(mean, style_mean)
        torch.testing.assert_close(std, style_std, rtol=1e-4, atol=1e-4)
        for j in range(3):  # the standardised content is unchanged
            standard = (grid[i, j] - mean[j, :, None, None]) / std[j, :, None, None]
            original = (content[i] - content_mean[i, :, None, None]) / content_std[i, :, None, None]
            torch.testing.assert_close(standard, original, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        viz.exchange_grid(style, style).diagonal().permute(3, 0, 1, 2), style
    )


def test_adjust_stats_pulls_the_versions_to_a_common_style():
    versions = viz.exchange_grid(smooth_images(1, seed=4), smooth_images(4, seed=5))[0]
    mean, std = instance_stats(versions, eps=0.0)
    full = instance_stats(viz.adjust_stats(versions, 1.0, eps=0.0), eps=0.0)
    torch.testing.assert_close(full[0], mean.mean(0).expand_as(mean))  # every version: one style
    torch.testing.assert_close(full[1], std.log().mean(0).exp().expand_as(std), rtol=1e-4, atol=0)
    torch.testing.assert_close(viz.adjust_stats(versions, 0.0), versions)
    half = instance_stats(viz.adjust_stats(versions, 0.5, eps=0.0), eps=0.0)[0]
    torch.testing.assert_close(half, (mean + mean.mean(0)) / 2)
    assert half.std(0).mean() < mean.std(0).mean()
    with pytest.raises(ValueError, match="strength"):
        viz.adjust_stats(versions, 1.5)


# --------------------------------------------------------------------------------------------
# Feature points and inversion
# --------------------------------------------------------------------------------------------


def test_features_at_block_heads_tails_and_module_inputs():
    model = tiny_model("cnsn", depth=16)  # two cells per block
    x = torch.randn(2, 3, 32, 32)
    hooks = hook_counts(model)
    grabbed = {}
    sn = model.block1.layer[1].cnsn.selfnorm
    handles = [
        model.block1.layer[0].register_forward_hook(lambda m, i, o: grabbed.setdefault("head", o)),
        model.block2.register_forward_hook(lambda m, i, o: grabbed.setdefault("tail", o)),
        sn.register_forward_pre_hook(lambda m, i: grabbed.setdefault("sn_in", i[0])),
    ]
    with torch.no_grad():
        model(x)
        head = viz.features(model, x, "block1.head")
        tail = viz.features(model, x, "block2.tail")
        sn_in = viz.features(model, x, "block1.layer.1.cnsn.selfnorm:input")
        sn_out = viz.features(model, x, "block1.layer.1.cnsn.selfnorm")
    torch.testing.assert_close(head, grabbed["head"])
    torch.testing.assert_close(tail, grabbed["tail"])
    torch.testing.assert_close(sn_in, grabbed["sn_in"])
    torch.testing.assert_close(sn_out, sn(sn_in))
    assert tail.shape == (2, 32, 16, 16)
    for handle in handles:
        handle.remove()
    assert hook_counts(model) == hooks  # the points' own hooks are gone
    with pytest.raises(ValueError, match="no module"):
        viz.features(model, x, "block4.head")
    with pytest.raises(ValueError, match=":input"):
        viz.features(model, x, "block1:output")


def test_inversion_loss_is_the_normalised_feature_error():
    target = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(viz.inversion_loss(target, target), torch.zeros(3))
    torch.testing.assert_close(viz.inversion_loss(torch.zeros_like(target), target), torch.ones(3))
    torch.testing.assert_close(viz.inversion_loss(2 * target, target), torch.ones(3))


@pytest.mark.parametrize("point", ["block1.head", "block2.tail"])
def test_crossnorm_inversion_loss_decreases_and_leaves_the_model_alone(point):
    model = tiny_model("cn").train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    content, style = smooth_images(2, seed=6), smooth_images(2, seed=7)
    grid, losses = viz.crossnorm_inversion(
        model, point, content, style, iterations=30, lr_step=10, lr=1e4, loss_weight=1e-3
    )
    assert grid.shape == (2, 2, 3, 32, 32) and losses.shape == (31, 4)
    assert 0 <= grid.min() and grid.max() <= 1
    assert losses[-1].mean() < 0.7 * losses[0].mean()
    assert (losses[-1] < losses[0]).all()
    assert model.training  # restored
    for key, value in model.state_dict().items():  # eval mode: no running-statistics update
        torch.testing.assert_close(value, state[key])
    assert all(p.grad is None for p in model.parameters())


def test_invert_reconstructs_features_of_another_image():
    model = tiny_model(None)
    target_image, start = smooth_images(1, seed=8), smooth_images(1, seed=9)
    with torch.no_grad():
        target = viz.features(model, (target_image - 0.5) / 0.5, "block1.tail")
    images, losses = viz.invert(model, "block1.tail", target, start, iterations=40, lr_step=15)
    assert losses[-1, 0] < 0.5 * losses[0, 0]
    assert (images - target_image).abs().mean() < (start - target_image).abs().mean()


def test_inversion_defaults_are_the_papers():
    assert viz.INVERSION_DEFAULTS["iterations"] == 200
    assert viz.INVERSION_DEFAULTS["lr"] == 1e4 and viz.INVERSION_DEFAULTS["momentum"] == 0.9
    assert (viz.INVERSION_DEFAULTS["lr_step"], viz.INVERSION_DEFAULTS["lr_gamma"]) == (40, 0.1)
    assert viz.point_label("block1.head") == "CN at the start of block 1"
    assert viz.point_label("block3.tail", "SN") == "SN at the end of block 3"


# --------------------------------------------------------------------------------------------
# SelfNorm's recalibration
# --------------------------------------------------------------------------------------------


def test_selfnorm_units_default_to_the_start_and_end_of_block1():
    assert viz.selfnorm_units(tiny_model("cnsn")) == ["block1.layer.0.cnsn.selfnorm"]
    deep = tiny_model("sn", depth=16)
    assert viz.selfnorm_units(deep) == [
        "block1.layer.0.cnsn.selfnorm",
        "block1.layer.1.cnsn.selfnorm",
    ]
    assert viz.selfnorm_units(deep, ["block2.layer.0.cnsn.selfnorm"]) == [
        "block2.layer.0.cnsn.selfnorm"
    ]
    with pytest.raises(ValueError, match="not SelfNorm units"):
        viz.selfnorm_units(deep, ["block1.layer.0"])
    with pytest.raises(ValueError, match="no SelfNorm"):
        viz.selfnorm_units(tiny_model("cn"))


def test_spreads_ignore_a_common_rescaling():
    g = torch.Generator().manual_seed(0)
    scale = 0.5 + torch.rand(4, 6, 1, 1, generator=g)  # channel stds in [0.5, 1.5]
    feats = torch.randn(4, 6, 8, 8, generator=g) * scale + torch.randn(4, 6, 1, 1, generator=g)
    for a, b in zip(viz._spreads(feats), viz._spreads(2.0 * feats), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)  # up to the variance epsilon


def test_selfnorm_recalibration_reports_both_sides_of_the_unit():
    model = tiny_model("cnsn")
    unit = "block1.layer.0.cnsn.selfnorm"
    versions = smooth_images(3, seed=10)
    out = viz.selfnorm_recalibration(model, versions, unit, iterations=5, lr_step=2)
    for key in ("mean_spread_before", "mean_spread_after", "std_spread_before", "std_spread_after"):
        assert out[key].shape == (16,) and torch.isfinite(out[key]).all()
    assert out["g"].shape == (3, 16) and 0 < out["g"].min() and out["g"].max() < 1
    assert out["inverted"].shape == versions.shape and out["losses"].shape == (6, 3)
    (row,) = viz.selfnorm_rows({unit: out})
    assert row["SelfNorm unit"] == unit and 0 <= row["channels narrowed (std, %)"] <= 100
    with pytest.raises(ValueError, match="not a SelfNorm"):
        viz.selfnorm_recalibration(model, versions, "block1.layer.0.cnsn")


# --------------------------------------------------------------------------------------------
# Figure 14: image-level CrossNorm with style crops
# --------------------------------------------------------------------------------------------


def test_image_crossnorm_takes_the_partners_box_statistics():
    images = torch.rand(2, 3, 16, 32, generator=torch.Generator().manual_seed(11))
    outputs, partners, boxes = viz.image_crossnorm(
        images, 3, generator=torch.Generator().manual_seed(0)
    )
    assert outputs.shape == (3, 2, 3, 16, 32) and partners.tolist() == [[1, 0]] * 3
    for d in range(3):
        rows, cols = boxes[d]
        box_mean, box_std = instance_stats(images[:, :, rows, cols])
        mean, std = instance_stats(outputs[d])
        torch.testing.assert_close(mean, box_mean[partners[d]])
        torch.testing.assert_close(std, box_std[partners[d]], rtol=1e-3, atol=0)  # eps 1e-5
    again = viz.image_crossnorm(images, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again[0], outputs)
    assert viz.image_crossnorm(images, 1, crop="neither")[2] == [None]


def write_png(path, size, colour):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_street_scenes_prefer_gta5_and_say_what_they_used(tmp_path):
    write_png(tmp_path / "cityscapes_sample/leftImg8bit/val/x/a_leftImg8bit.png", (256, 128), "red")
    write_png(tmp_path / "imagenet_sample/images/829_n04335435.jpg", (500, 375), "blue")
    images, paths = viz.street_scenes(tmp_path)
    assert images.shape == (2, 3, 128, 256) and 0 <= images.min() and images.max() <= 1
    assert paths[1] == "imagenet_sample/images/829_n04335435.jpg"
    caption = viz.scene_caption(paths, tmp_path)
    assert "Cityscapes frame a_leftImg8bit.png" in caption and "only one Cityscapes" in caption
    write_png(tmp_path / "gta5/images/00001.png", (1914, 1052), "green")
    write_png(tmp_path / "gta5/images/00002.png", (1914, 1052), "gray")
    images, paths = viz.street_scenes(tmp_path, size=(64, 128))
    assert images.shape == (2, 3, 64, 128) and paths[0].startswith("gta5/")
    assert "GTA5 is not" not in viz.scene_caption(paths, tmp_path)
    with pytest.raises(FileNotFoundError, match="two street scenes"):
        viz.street_scenes(tmp_path, paths=["gta5/images/00001.png", "missing.png"])


# --------------------------------------------------------------------------------------------
# Models and figures
# --------------------------------------------------------------------------------------------


def fake_run(results_dir, name, epochs, method="cn"):
    model = tiny_model("cn", seed=5)
    folder = results.run_dir(results_dir, name)
    torch.save({"trainer": {"model": model.state_dict()}}, folder / "checkpoint.pt")
    params = {"backbone": "wrn", "dataset": "cifar10", "method": method, "epochs": epochs,
              "train_images": 64, "model": cifar_setting("cifar10", "wrn", method)["model"],
              "model_kwargs": {"depth": 10, "widen_factor": 1}}  # fmt: skip
    results.save_run(folder, params, {})
    return model


def test_model_for_reuses_a_finished_run_of_the_wanted_length(tmp_path, monkeypatch):
    from sncn.experiments import cifar_c

    saved = fake_run(tmp_path, "cifar10-wrn-cn-aaaa0001-seed0", epochs=1)
    model, name = viz.model_for(tmp_path, "cn", epochs=1)
    assert not model.training and "WRN-10-1 'cn'" in name and "cn-aaaa0001-seed0" in name
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)

    calls = []

    def fake_train(dataset, backbone, method, results_dir, **kwargs):
        calls.append(kwargs)
        fake_run(results_dir, f"{dataset}-{backbone}-{method}-bbbb0002-seed0", kwargs["epochs"])

    monkeypatch.setattr(cifar_c, "run", fake_train)
    model, name = viz.model_for(tmp_path, "cn", epochs=3, train_subset=64)
    assert calls == [{"seed": 0, "epochs": 3, "train_subset": 64}]
    assert "bbbb0002" in name and "trained by this notebook" in name
    viz.model_for(tmp_path, "cn", epochs=3)  # now found, not trained again
    assert len(calls) == 1
    params = json.loads((tmp_path / "runs/cifar10-wrn-cn-bbbb0002-seed0/params.json").read_text())
    assert params["epochs"] == 3


def test_figures_are_written_as_png_and_pdf(tmp_path):
    import matplotlib.pyplot as plt

    content, style = smooth_images(2, seed=12), smooth_images(3, seed=13)
    versions = viz.exchange_grid(content[:1], style)[0]
    figures = {
        "fig1_style_exchange": viz.style_exchange_figure(
            content, style, versions, viz.adjust_stats(versions), title="caption"
        ),
        "fig5_crossnorm_inversion_block1": viz.inversion_figure(
            {"CN in image space": viz.exchange_grid(content, style)}, content, style, "caption"
        ),
    }
    model = tiny_model("cnsn")
    unit = "block1.layer.0.cnsn.selfnorm"
    recal = {unit: viz.selfnorm_recalibration(model, style, unit, iterations=2)}
    figures["selfnorm_recalibration"] = viz.selfnorm_figure(style, ["a", "b", "c"], recal, "m")
    scenes = smooth_images(2, seed=14, size=(16, 32))
    outputs, _, boxes = viz.image_crossnorm(scenes, 2)
    figures["fig14_image_crossnorm"] = viz.image_crossnorm_figure(scenes, outputs, boxes, "c")
    for name, fig in figures.items():
        png = results.save_figure(fig, name, tmp_path)
        plt.close(fig)
        assert png.stat().st_size > 1000 and png.with_suffix(".pdf").stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(
        f"{n}.{ext}" for n in figures for ext in ("pdf", "png")
    )


def test_cifar_images_are_of_distinct_classes():
    if not (data_root() / "cifar10").is_dir() and sample_root() is None:
        pytest.skip("CIFAR-10 is not in the data root, and there is no embedded sample")
    images, labels = viz.cifar_images("cifar10", "test", 5, seed=3)
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.float32
    assert len(set(labels.tolist())) == 5 and 0 <= images.min() and images.max() <= 1
    assert np.array_equal(viz.cifar_images("cifar10", "test", 5, seed=3)[1], labels)
