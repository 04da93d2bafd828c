"""sncn.evaluate: robustness evaluation of any classifier, and the ``sncn evaluate`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from sncn import cli, corruptions
from sncn import evaluate as ev
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
