"""sncn.evaluate: robustness evaluation of any classifier, and the ``sncn evaluate`` command."""

from __future__ import annotations

import csv
import json
import shutil
import urllib.error
from functools import partial

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from sncn import cli, corruptions, metrics
from sncn import evaluate as ev
from sncn.data import sample_root
from sncn.experiments import cifar_c

N = 40  # test images of the toy CIFAR-10


@pytest.fixture()
def toy_cifar(monkeypatch):
    """A 40-image 'CIFAR-10' test set (smooth random images, 4 per class), no official files."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (N, 4, 4, 3), dtype=np.uint8)
    images = np.ascontiguousarray(small.repeat(8, 1).repeat(8, 2))  # 32 x 32
    labels = np.arange(N) % 10
    monkeypatch.setattr(ev, "load_cifar", lambda *a, **k: (images, labels))
    monkeypatch.setattr(ev, "official_cifar_c", lambda *a, **k: None)
    return images, labels


class Recorder(nn.Module):
    """Predicts class 0 for everything and keeps every batch it sees."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.classes = classes
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        out = torch.zeros(len(x), self.classes)
        out[:, 0] = 1
        return out


def test_generated_on_the_fly_are_the_images_make_c_writes(toy_cifar, tmp_path):
    images, labels = toy_cifar
    names, severities = ["glass_blur", "fog"], [2, 5]
    model = Recorder()
    result = ev.evaluate(model, corruptions=names, severities=severities, batch_size=16,
                         device="cpu", seed=3, progress=False)  # fmt: skip
    folder = corruptions.make_c(images, labels, tmp_path / "c", corruptions=names,
                                severities=severities, batch_size=16, seed=3,
                                progress=False)  # fmt: skip
    seen = torch.cat(model.seen)  # clean first, then the cells in order, as floats in [0, 1]
    assert torch.equal(seen[:N], torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    k = N
    for name in names:
        written = np.load(folder / f"{name}.npy")
        for i, _ in enumerate(severities):
            expected = torch.from_numpy(written[i * N : (i + 1) * N]).permute(0, 3, 1, 2)
            assert torch.equal(seen[k : k + N], expected.float() / 255), name
            k += N
    assert result["source"] == "generated" and result["mce"] is None  # not all 75 cells
    assert result["clean_error"] == pytest.approx(100 * np.mean(labels != 0))
    assert result["c_images"] == N and result["c_cells"] == "shared"


def test_mce_and_its_standard_error_over_independent_draws(toy_cifar):
    _, labels = toy_cifar
    result = ev.evaluate(Recorder(), n_images=10, device="cpu", progress=False)
    assert result["c_images"] == 10 and result["c_cells"] == "independent"
    cells = cifar_c.cell_subsets(labels, 10, seed=0)
    expected = {c: [100 * np.mean(labels[cells[c, s]] != 0) for s in cifar_c.SEVERITIES]
                for c in cifar_c.CORRUPTIONS}  # fmt: skip
    assert all(result["errors"][c] == pytest.approx(e) for c, e in expected.items())
    assert result["mce"] == pytest.approx(90.0)  # one image of each class per cell: 9 of 10
    assert result["mce_se"] == pytest.approx(
        100 * np.sqrt(75 * (10 / 9) * 0.09 / 10) / 75
    )  # binomial, ddof 1
    assert result["images_per_second"] > 0


def test_evaluate_explains_bad_inputs(toy_cifar):
    with pytest.raises(ValueError, match=r"must return \(batch, 10\) logits"):
        ev.evaluate(Recorder(classes=1000), corruptions=["fog"], severities=[1], progress=False)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; expected one of"):
        ev.evaluate(Recorder(), "imagenet")
    with pytest.raises(ValueError, match="severity"):
        ev.evaluate(Recorder(), severities=[6])


def test_load_model_reads_torchvision_modules_and_files(tmp_path, monkeypatch):
    model = ev.load_model("torchvision:resnet18", num_classes=10)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10) and not model.training
    torch.save(model.state_dict(), tmp_path / "w.pt")
    again = ev.load_model("torchvision:resnet18", str(tmp_path / "w.pt"), num_classes=10)
    pairs = zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    (tmp_path / "mine.py").write_text(
        "import torch.nn as nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))\n"
    )
    from_file = ev.load_model(f"{tmp_path / 'mine.py'}:build", normalize="cifar")
    assert isinstance(from_file[0], ev.Normalize)  # the chosen normalisation in front
    x = torch.rand(1, 3, 32, 32)
    mean, std = ev.NORMALISATIONS["cifar"]
    by_hand = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(from_file(x), from_file[1](by_hand))
    monkeypatch.chdir(tmp_path)
    assert isinstance(ev.load_model("mine:build"), nn.Sequential)  # a module of the cwd
    with pytest.raises(ValueError, match="torchvision:NAME, timm:NAME or module:function"):
        ev.load_model("resnet18")
    with pytest.raises(ValueError, match="has no function 'nope'"):
        ev.load_model("mine:nope")
    with pytest.raises(ValueError, match="unknown normalisation"):
        ev.load_model("mine:build", normalize="zca")


def test_sncn_evaluate_command_writes_json_csv_and_heatmap(toy_cifar, tmp_path, capsys):
    (tmp_path / "mine.py").write_text(
        "import torch.nn as nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))\n"
    )
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", f"{tmp_path / 'mine.py'}:build", "--n-images", "10",
            "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "on cifar10-c (generated, 10 images a cell): clean error" in text and "mCE" in text
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["model"].endswith("mine.py:build") and len(saved["errors"]) == 15
    rows = (out / "evaluation.csv").read_text().splitlines()
    assert rows[0] == "corruption,severity,error" and len(rows) == 1 + 75 + 2
    assert rows[-1].startswith("mCE,,") and (out / "evaluation_heatmap.png").stat().st_size > 0
    assert cli.main(["evaluate", "--model", "nothing"]) == 1
    assert "sncn evaluate: error: model must be" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# ImageNet-C


@pytest.fixture()
def imagenet_root(tmp_path):
    """A data root holding a copy of the embedded 6-image ImageNet sample (256 x 256 JPEGs, the
    standard labels), and nothing else: no ImageNet validation folder, no ImageNet-C."""
    root = tmp_path / "data"
    shutil.copytree(sample_root() / "imagenet_sample", root / "imagenet_sample")
    return root


def _sample(root):
    """(file names, labels, uint8 (N, 224, 224, 3) centre crops) of a sample, in labels.csv order,
    cropped here by hand: the 256-px images need no resize, so the crop is pixels 16..239."""
    with open(root / "imagenet_sample" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = [r["filename"] for r in rows]
    images = [Image.open(root / "imagenet_sample" / "images" / n).convert("RGB") for n in names]
    crops = np.stack([np.asarray(image)[16:240, 16:240] for image in images])
    return names, np.array([int(r["class_index"]) for r in rows]), crops


class Nearest(nn.Module):
    """Predicts the ImageNet label of the nearest reference image (uint8 (K, 224, 224, 3)), and
    keeps every batch it sees (as uint8): a model whose errors under corruption vary."""

    def __init__(self, references: np.ndarray, labels: np.ndarray) -> None:
        super().__init__()
        refs = torch.from_numpy(references).permute(0, 3, 1, 2).float().div(255)
        self.register_buffer("refs", refs.flatten(1))
        self.labels = torch.as_tensor(labels)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.mul(255).round().to(torch.uint8))
        nearest = torch.cdist(x.flatten(1).double(), self.refs.double()).argmin(1)
        out = torch.zeros(len(x), 1000)
        out[torch.arange(len(x)), self.labels[nearest]] = 1
        return out


def test_imagenet_c_generated_from_the_sample(imagenet_root, tmp_path):
    names, labels, crops = _sample(imagenet_root)
    model = Nearest(crops, labels)
    result = ev.evaluate(model, "imagenet-c", n_images=3, batch_size=2, device="cpu",
                         root=imagenet_root, seed=1, progress=False, workers=0,
                         imagenet_c_geometry="stored")  # fmt: skip
    data = result["data"]
    assert data["clean"] == "imagenet-sample" and data["corrupted"] == "generated"
    assert data["clean_images"] == 3 and data["clean_available"] == 6
    assert data["corruption_table"] == "imagenet" and data["corrupted_folder"] is None
    assert "clean: ImageNet sample, 3 of 6 images; corrupted: generated" in data["description"]
    assert result["source"] == "generated" and result["c_cells"] == "shared"
    assert result["clean_images"] == result["c_images"] == 3
    assert result["clean_error"] == 0.0  # every clean crop is its own nearest reference
    errors = result["errors"]
    assert list(errors) == list(corruptions.CORRUPTIONS)
    shares = 100 * np.arange(4) / 3  # 0, 1, 2 or 3 of the 3 images wrong
    assert all(len(v) == 5 and all(np.isclose(e, shares).any() for e in v) for v in errors.values())
    # the AlexNet-normalised CE, mCE and relative mCE of the returned per-cell errors
    alexnet = metrics.ALEXNET_ERRORS
    ce = {c: 100 * np.mean(errors[c]) / (100 * alexnet[c]) for c in corruptions.CORRUPTIONS}
    gap = {c: 100 * (alexnet[c] - metrics.ALEXNET_CLEAN_ERROR) for c in alexnet}  # AlexNet's
    rce = {c: 100 * (np.mean(errors[c]) - result["clean_error"]) / gap[c] for c in errors}
    assert result["ce"] == pytest.approx(ce) and result["relative_ce"] == pytest.approx(rce)
    assert result["mce"] == pytest.approx(np.mean(list(ce.values())))
    assert result["relative_mce"] == pytest.approx(np.mean(list(rce.values())))
    assert result["mce_normalisation"] == "alexnet" and result["mce_se"] >= 0
    # the model saw the drawn crops in [0, 1], unnormalised, then make_c's images of each cell
    keep = ev.imagenet_subset(labels, 3, seed=1)
    assert len(set(labels[keep])) == 3  # one image of each of 3 classes
    clean = torch.cat([model.seen[0], model.seen[76]])  # batches of 2 and 1, each + 75 cells
    assert torch.equal(clean, torch.from_numpy(crops[keep]).permute(0, 3, 1, 2))
    cells = [(c, s) for c in corruptions.CORRUPTIONS for s in corruptions.SEVERITIES]
    picked = {("gaussian_noise", 3), ("motion_blur", 5)}
    folder = corruptions.make_c(crops[keep], labels[keep], tmp_path / "c", table="imagenet",
                                seed=1, corruptions=["gaussian_noise", "motion_blur"],
                                severities=[3, 5], batch_size=2, progress=False)  # fmt: skip
    for j, (c, s) in enumerate(cells):
        if (c, s) in picked:
            seen = torch.cat([model.seen[1 + j], model.seen[77 + j]]).permute(0, 2, 3, 1)
            written = np.load(folder / f"{c}.npy")[[3, 5].index(s) * 3 :][:3]
            assert torch.equal(seen, torch.from_numpy(written)), (c, s)
    # by default (as released) the corrupted crops go through Resize(256) + CenterCrop(224) again
    model.seen.clear()
    ev.evaluate(model, "imagenet-c", n_images=3, batch_size=2, device="cpu", root=imagenet_root,
                seed=1, progress=False, workers=0, corruptions=["gaussian_noise"],
                severities=[3])  # fmt: skip
    written = torch.from_numpy(np.load(folder / "gaussian_noise.npy")[:3]).permute(0, 3, 1, 2)
    again = ev._reframe(written)
    assert again.shape == written.shape and not torch.equal(again, written)
    assert torch.equal(torch.cat([model.seen[1], model.seen[3]]), again)


def _jpeg(array: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)


def test_imagenet_c_reads_the_official_folder(imagenet_root):
    names, labels, crops = _sample(imagenet_root)
    names, labels, crops = names[:3], labels[:3], crops[:3]
    for k, name in enumerate(names):
        stem, wnid = name.removesuffix(".jpg"), name.removesuffix(".jpg").split("_", 1)[1]
        full = np.asarray(Image.open(imagenet_root / "imagenet_sample" / "images" / name))
        _jpeg(full, imagenet_root / "imagenet" / "val" / wnid / f"{stem}.JPEG")
        c = imagenet_root / "ImageNet-C" / "fog"
        _jpeg(crops[k], c / "1" / wnid / f"{stem}.JPEG")  # the image itself: right
        _jpeg(crops[(k + 1) % 3], c / "2" / wnid / f"{stem}.JPEG")  # another class's: wrong
        _jpeg(full, c / "3" / wnid / f"{stem}.JPEG")  # not a 224-px ImageNet-C image
    model = Nearest(crops, labels)
    run = partial(ev.evaluate, model, "imagenet-c", corruptions=["fog"], severities=[1, 2],
                  device="cpu", root=imagenet_root, progress=False, workers=0)  # fmt: skip
    result = run()
    data = result["data"]
    assert data["clean"] == "imagenet-val" and data["corrupted"] == "official"
    assert data["corrupted_folder"] == str(imagenet_root / "ImageNet-C") and data["subset"] is None
    words = "clean: ImageNet validation set, 3 images; corrupted: official ImageNet-C"
    assert data["description"].startswith(words)
    assert result["source"] == "official" and result["clean_error"] == 0.0
    assert result["errors"] == {"fog": [0.0, 100.0]} and result["c_images"] == 3
    assert result["mce"] is None and result["ce"] is None  # not all corruptions, severities
    drawn = run(n_images=2)
    assert drawn["clean_images"] == drawn["c_images"] == 2 and drawn["errors"]["fog"][0] == 0
    with pytest.raises(FileNotFoundError, match=r"lacks 2 of the 4 .*\(e\.g\. snow/1\)"):
        run(corruptions=["fog", "snow"])
    with pytest.raises(ValueError, match="ImageNet-C images are 224 x 224 px"):
        run(severities=[3])
    wnid = names[0].removesuffix(".jpg").split("_", 1)[1]
    _jpeg(crops[0], imagenet_root / "ImageNet-C" / "fog" / "1" / wnid / "extra.JPEG")
    with pytest.raises(ValueError, match=r"hold different numbers of images \(3 to 4"):
        run()


def test_imagenet_subset_is_class_balanced_with_random_classes():
    labels = np.repeat(np.arange(1000), 3)  # 3 images of each of 1,000 classes
    ten = ev.imagenet_subset(labels, 10, seed=0)
    assert len(set(labels[ten])) == 10 and labels[ten].max() > 9  # not the first ten classes
    assert np.array_equal(ten, ev.imagenet_subset(labels, 10, seed=0)) and np.all(np.diff(ten) > 0)
    assert not np.array_equal(ten, ev.imagenet_subset(labels, 10, seed=1))
    counts = np.bincount(labels[ev.imagenet_subset(labels, 2500, seed=0)], minlength=1000)
    assert sorted(counts) == [2] * 500 + [3] * 500  # 2 of each class, 3 of 500 random ones
    assert np.array_equal(ev.imagenet_subset(labels, None), np.arange(3000))
    assert np.array_equal(ev.imagenet_subset(labels, 5000), np.arange(3000))
    with pytest.raises(ValueError, match="n must be >= 1"):
        ev.imagenet_subset(labels, 0)


def test_sncn_evaluate_imagenet_c_command(imagenet_root, tmp_path, capsys):
    (tmp_path / "tiny.py").write_text(
        "import torch.nn as nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 1000))\n"
    )
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", f"{tmp_path / 'tiny.py'}:build", "--weights", "none",
            "--dataset", "imagenet-c", "--data", str(imagenet_root), "--n-images", "1",
            "--workers", "0", "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "on imagenet-c (clean: ImageNet sample, 1 of 6 images; corrupted: generated" in text
    assert "mCE" in text and "relative mCE" in text and "(AlexNet = 100)" in text
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["data"]["clean_images"] == 1 and len(saved["errors"]) == 15
    rows = (out / "evaluation.csv").read_text().splitlines()
    assert len(rows) == 1 + 75 + 3 and rows[-2].startswith("mCE,,")
    assert rows[-1].startswith("relative mCE,,") and (out / "evaluation_heatmap.png").is_file()
    # no ImageNet validation set and no sample: one line saying where they go
    argv = ["evaluate", "--model", f"{tmp_path / 'tiny.py'}:build", "--dataset", "imagenet-c",
            "--data", str(tmp_path / "empty"), "--workers", "0"]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no ImageNet validation set" in err
    assert "imagenet/val/<wnid>/*.JPEG" in err and "imagenet_sample/labels.csv" in err


def test_torchvision_weights_none_and_offline(monkeypatch, capsys):
    plain = ev.load_model("torchvision:resnet18", "none")  # random weights, no Normalize
    assert isinstance(plain, torchvision.models.ResNet) and not plain.training

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    argv = ["evaluate", "--model", "torchvision:resnet18", "--weights", "DEFAULT",
            "--dataset", "imagenet-c"]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot get the DEFAULT weights of torchvision's" in err
    assert "resnet18-f37072fd.pth" in err and "--weights PATH" in err
    with pytest.raises(ValueError, match="has no weights 'DEFALT'.*IMAGENET1K_V1"):
        ev.load_model("torchvision:resnet18", "DEFALT")
