"""The ImageNet-C experiment: methods, paper tables, data folders, training, evaluation paths."""

from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
import torch
from helpers import TINY_IMAGENET, random_state, tiny_imagenet_folder
from PIL import Image
from torchvision.models.resnet import Bottleneck
from torchvision.models.resnet import ResNet as TorchvisionResNet

from sncn.data import data_root, sample_root
from sncn.experiments import imagenet_c
from sncn.layers import style_layers
from sncn.metrics import CORRUPTIONS, relative_mce
from sncn.train import ImageCrossNormAugMixTrainer, step_schedule


@pytest.fixture
def root(tmp_path):
    """A data root holding links to the project's CIFAR-10 and ImageNet sample (else those of the
    embedded sample) and frost images (else the package's are used)."""
    real, sample = data_root(), sample_root()
    for name in ("cifar10", "imagenet_sample", "frost"):
        if (real / name).exists():
            (tmp_path / name).symlink_to(real / name)
        elif sample is not None and (sample / name).exists():
            (tmp_path / name).symlink_to(sample / name)
        elif name != "frost":
            pytest.skip(f"{real / name} is missing (lay out the data mirror)")
    return tmp_path


def test_every_method_builds_with_the_released_settings():
    setting = {**imagenet_c.SETTING, **TINY_IMAGENET}
    for method, spec in imagenet_c.METHODS.items():
        model = imagenet_c.build_model(method, 3, setting)
        cn_layers = [n for n, _ in style_layers(model)]
        if spec["model"].get("image_cn"):
            assert "image_cnsn.crossnorm" in cn_layers, method
        assert spec["trainer"] in ("supervised", "consistency", "augmix")
    assert imagenet_c.METHODS["ibn_b_sncn_augmix"]["model"]["pos"] == "residual"
    with pytest.raises(ValueError, match="unknown method"):
        imagenet_c.check_method("mixup")


def test_batch_and_peak_lr_follow_each_methods_released_script():
    """run-sn/cn/cnsn/cnsn-consist.sh: batch 128, so lr 0.1 x 128 / 256 = 0.05 (the released
    adjust_learning_rate); run-cnsn-augmix.sh: 256, lr 0.1. Other methods: the script they
    derive from, the AugMix ones the AugMix script's."""
    assert imagenet_c.SETTING["batch_size"] == "released"
    assert set(imagenet_c.RELEASED_SCRIPT) == set(imagenet_c.METHODS)
    augmix = {m for m, spec in imagenet_c.METHODS.items() if spec["trainer"] == "augmix"}
    assert augmix == {"augmix", "sncn_augmix", "ibn_a_cn_augmix", "ibn_b_sn_augmix",
                      "ibn_b_sncn_augmix"}  # fmt: skip
    for method in imagenet_c.METHODS:
        setting = imagenet_c.resolve_setting(method)
        batch = 256 if method in augmix else 128
        assert setting["batch_size"] == batch, method
        assert imagenet_c.peak_lr(setting) == pytest.approx(0.1 * batch / 256), method
    released = {"sn": 0.05, "cn_finetune": 0.05, "sncn": 0.05, "sncn_consistency": 0.05,
                "ibn_b_sncn_augmix": 0.1}  # fmt: skip
    for method, lr in released.items():
        assert imagenet_c.peak_lr(imagenet_c.resolve_setting(method)) == pytest.approx(lr)
    for method in ("sn", "ibn_b_sncn_augmix"):  # one global batch for every method, if asked
        setting = imagenet_c.resolve_setting(method, {"batch_size": 64})
        assert setting["batch_size"] == 64
        assert imagenet_c.peak_lr(setting) == pytest.approx(0.025)
        for same in (0, "released", imagenet_c.released_batch_size(method)):
            resolved = imagenet_c.resolve_setting(method, {"batch_size": same})
            assert resolved == imagenet_c.resolve_setting(method)  # the same run name
    with pytest.raises(ValueError, match="batch_size"):
        imagenet_c.resolve_setting("sn", {"batch_size": "paper"})
    with pytest.raises(ValueError, match="unknown setting"):
        imagenet_c.resolve_setting("sn", {"batch": 64})


def test_paper_tables_are_consistent():
    """Each transcribed Table 2 row's CEs average to its printed mCE (entries are rounded)."""
    for label, row in imagenet_c.PAPER_TABLE2.items():
        assert len(row) == 17
        assert abs(np.mean(row[1:16]) - row[16]) < 0.5, label
    assert imagenet_c.PAPER_TABLE19["sncn"] == (23.3, imagenet_c.PAPER_TABLE2["SNCN"][16])
    assert imagenet_c.PAPER_TABLE16["basic"] == (23.9, 80.6)
    fake = {"errors": {c: [50.0] * 5 for c in CORRUPTIONS}, "clean_error": 30.0}
    fake.update(ce={c: 60.0 for c in CORRUPTIONS}, mce=60.0)
    rows = imagenet_c.table2_rows({"sncn": fake})
    assert rows[0]["source"] == "ours" and rows[0]["mCE"] == 60.0
    assert [r["method"] for r in rows[1:]] == list(imagenet_c.PAPER_TABLE2)
    ablation = imagenet_c.ablation_rows("table19", {"sncn": fake, "other": fake})
    assert ablation == [
        {
            "method": "sncn",
            "clean err": 30.0,
            "mCE": 60.0,
            "relative mCE": pytest.approx(relative_mce(fake["errors"], 30.0)),
            "paper clean err": 23.3,
            "paper mCE": 70.4,
        }
    ]


def test_seeded_items_do_not_depend_on_order():
    from torchvision import transforms

    data = [(torch.rand(3, 16, 16), 0) for _ in range(4)]

    class Augmented(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return transforms.RandomResizedCrop(8)(data[i][0]), 0

    seeded = imagenet_c._SeededItems(Augmented(), seed=5)
    forward = [seeded[i][0] for i in range(4)]
    backward = [seeded[i][0] for i in reversed(range(4))][::-1]
    for a, b in zip(forward, backward, strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.equal(imagenet_c._SeededItems(Augmented(), seed=6)[0][0], forward[0])


def test_image_crossnorm_augmix_trainer_switches_the_input_crossnorm():
    torch.manual_seed(0)
    model = imagenet_c.build_model("sncn_augmix", 2, {**imagenet_c.SETTING, **TINY_IMAGENET})
    seen = []
    model.image_cnsn.crossnorm.register_forward_hook(lambda m, i, o: seen.append(m.active))
    optimizer = torch.optim.SGD(model.parameters(), 0.1)
    trainer = ImageCrossNormAugMixTrainer(model, optimizer, cn_prob=1.0)
    views = tuple(torch.randn(4, 3, 32, 32) for _ in range(3))
    logs = trainer.update((views, torch.tensor([0, 1, 0, 1])))
    assert seen == [True] and logs["jsd"] > 0  # one pass over the 3 stacked views, CN on
    trainer.cn_prob = 0.0
    trainer.update((views, torch.tensor([0, 1, 0, 1])))
    assert seen == [True, False]
    with pytest.raises(ValueError, match="views"):
        trainer.update((views[:2], torch.tensor([0, 1, 0, 1])))


def test_run_trains_evaluates_generated_c_and_reads_back(tmp_path, monkeypatch):
    (tmp_path / "root").mkdir()  # no frost photographs here: the package's are used
    monkeypatch.setenv("SNCN_DATA", str(tmp_path / "root"))
    data = tiny_imagenet_folder(tmp_path / "data", per_class=8)
    metrics = imagenet_c.run(
        "sncn",
        tmp_path / "results",
        data,
        overrides=TINY_IMAGENET,
        evaluation="generated",
        c_subset=4,
        progress=False,
    )
    assert metrics["evaluation"] == "generated"
    assert set(metrics["errors"]) == set(CORRUPTIONS)
    assert all(len(v) == 5 and all(0 <= e <= 100 for e in v) for v in metrics["errors"].values())
    assert np.isfinite(metrics["mce"]) and 0 <= metrics["clean_error"] <= 100
    assert (tmp_path / "root" / "generated" / "data-val-C-32px-n4-seed0" / "fog.npy").is_file()
    again = imagenet_c.run(
        "sncn",
        tmp_path / "results",
        data,
        overrides=TINY_IMAGENET,
        evaluation="generated",
        c_subset=4,
    )
    # 1 epoch: the released rule puts both lr steps at epoch 0, so the run is at lr / 100
    assert metrics["history"][0]["lr"] == pytest.approx(0.1 * 8 / 256 * 0.01)
    params = json.loads(
        (tmp_path / "results" / "runs" / metrics["run"] / "params.json").read_text()
    )
    assert params["milestones"] == "released" and params["milestone_epochs"] == [0, 0]
    assert params["batch_size"] == 8  # TINY_IMAGENET's global batch, not the released 128
    assert again == metrics  # finished runs are read back
    assert len(list((tmp_path / "results" / "runs").iterdir())) == 1
    model = imagenet_c.load_trained(tmp_path / "results", again["run"])
    assert model.fc.out_features == 2 and not model.training
    with pytest.raises(ValueError, match="unknown setting"):
        imagenet_c.run("basic", tmp_path / "r2", data, overrides={"epoch": 1})


def test_cifar_folder_and_sample_c_end_to_end(root):
    folder = imagenet_c.build_cifar_folder(32, 2, 1, root=root, progress=False)
    assert folder.name == "imagenet-format-cifar10-37px-2-1"
    assert len(list((folder / "train").rglob("*.png"))) == 20
    assert Image.open(next((folder / "val").rglob("*.png"))).size == (37, 37)
    c_dir = imagenet_c.make_sample_c(2, root=root, progress=False)
    assert len(list(c_dir.rglob("*.JPEG"))) == 2 * 75
    torch.manual_seed(0)
    small = imagenet_c.build_model("sn", 10, {**imagenet_c.SETTING, **TINY_IMAGENET}).eval()
    check = imagenet_c.sample_check(small, c_dir, 32, root=root)
    assert check["kind"] == "flip" and check["images"] == 2 and "mce" not in check
    full = imagenet_c.build_model("basic", 1000, {**imagenet_c.SETTING, **TINY_IMAGENET}).eval()
    check = imagenet_c.sample_check(full, c_dir, 32, root=root)
    assert check["kind"] == "error" and np.isfinite(check["mce"])
    rows = imagenet_c.sample_rows({"basic": check})
    assert rows[0]["mCE"] == check["mce"] and rows[0]["images"] == 2


# ----------------------------------------------------------------------------------------------
# The learning-rate steps and fine-tuning from torchvision's weights


def released_lr(lr: float, epochs: int, epoch: int) -> float:
    """The released ``imagenet.py``'s ``adjust_learning_rate`` (batch scaling left out)."""
    k = epochs // 3
    return lr * (1.0 if epoch < k else 0.1 if epoch < 2 * k else 0.01)


def test_lr_steps_follow_the_released_rule():
    assert imagenet_c.SETTING["milestones"] == "released"
    assert imagenet_c.lr_milestones("released", 90) == (30, 60)  # §4.1's epochs 30 and 60
    assert imagenet_c.lr_milestones("released", 6) == (2, 4)  # the quick profile
    assert imagenet_c.lr_milestones("released", 8) == (2, 4)  # 2 * (8 // 3), not 2 * 8 // 3
    assert imagenet_c.lr_milestones([30, 60], 6) == (30, 60)  # fixed steps stay an option
    with pytest.raises(ValueError, match="released"):
        imagenet_c.lr_milestones("paper", 90)
    for epochs in (1, 2, 3, 4, 5, 6, 7, 8, 11, 90):
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([param], lr=0.05)
        scheduler = step_schedule(optimizer, 3, imagenet_c.lr_milestones("released", epochs))
        seen = []
        for epoch in range(epochs):
            for _ in range(3):  # constant within an epoch, as the released per-epoch update
                seen.append(optimizer.param_groups[0]["lr"])
                assert seen[-1] == pytest.approx(released_lr(0.05, epochs, epoch)), (epochs, epoch)
                optimizer.step()
                scheduler.step()
        if epochs >= 3:
            assert seen[-1] == pytest.approx(0.05 * 0.01)  # a shortened run decays to lr / 100


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """torch's hub cache in ``tmp_path`` (``TORCH_HOME``), downloads failing as offline."""

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_pretrained_torchvision_weights_fine_tune(tmp_path, hub_dir, monkeypatch):
    setting = {**imagenet_c.SETTING, **TINY_IMAGENET, "width": 64, "pretrained": "torchvision"}
    with pytest.raises(FileNotFoundError) as error:  # nothing in the cache, no network
        imagenet_c.build_model("cn", 1000, setting)
    assert str(hub_dir / "resnet50-0676ba61.pth") in str(error.value)
    assert "`pretrained`" in str(error.value)

    # torchvision's key names and layout (one bottleneck per stage to stay small)
    source = TorchvisionResNet(Bottleneck, [1, 1, 1, 1])
    source.load_state_dict(random_state({k: v.shape for k, v in source.state_dict().items()}))
    source = source.eval()
    hub_dir.mkdir(parents=True, exist_ok=True)
    torch.save(source.state_dict(), hub_dir / "resnet50-0676ba61.pth")
    tuned = imagenet_c.build_model("cn", 1000, setting).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tuned(x), source(x))

    # SN units (absent from the file) and a 2-class fc keep their initialisation
    torch.manual_seed(3)
    fresh = imagenet_c.build_model("sncn", 2, {**setting, "pretrained": ""}).state_dict()
    torch.manual_seed(3)
    tuned = imagenet_c.build_model("sncn", 2, setting).state_dict()
    theirs = source.state_dict()
    assert any(".cnsn." in k for k in tuned) and tuned["fc.weight"].shape == (2, 2048)
    for key, value in tuned.items():
        shared = key in theirs and not key.startswith("fc.")
        assert torch.equal(value, theirs[key] if shared else fresh[key]), key

    # the method of run-cn.sh fine-tunes; a 1-epoch run stays at lr / 100, near the weights
    monkeypatch.setenv("SNCN_DATA", str(tmp_path / "root"))
    data = tiny_imagenet_folder(tmp_path / "data", per_class=4)
    overrides = {**TINY_IMAGENET, "width": 64}
    metrics = imagenet_c.run(
        "cn_finetune", tmp_path / "results", data, overrides=overrides, evaluation="none"
    )
    params = json.loads(
        (tmp_path / "results" / "runs" / metrics["run"] / "params.json").read_text()
    )
    assert params["pretrained"] == "torchvision"
    trained = imagenet_c.load_trained(tmp_path / "results", metrics["run"])
    torch.testing.assert_close(trained.conv1.weight, theirs["conv1.weight"], atol=1e-3, rtol=0)
    assert imagenet_c.METHODS["cn"].get("pretrained", "") == ""  # the same CN, from scratch
