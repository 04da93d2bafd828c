"""FixMatch: pseudo-labels and mask, the loss, EMA, schedule, label sampling, augmentation, CN
separation of labelled and unlabelled images, resume, and an end-to-end run on a toy data root."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sncn.data.semisup import (
    RAND_AUGMENT_OPS,
    SemiSupervisedBatches,
    rand_augment,
    sample_labelled,
    split_labelled,
    weak_augment,
)
from sncn.data.vision import random_crop_flip
from sncn.experiments import semisupervised
from sncn.layers import CrossNorm, crossnorm, crossnorm_groups, grouped_partner
from sncn.train import fit
from sncn.train.fixmatch import (
    FixMatchTrainer,
    ModelEMA,
    cn_groups,
    fixmatch_schedule,
    fixmatch_sgd,
    pseudo_labels,
)

# ---------------------------------------------------------------------------------------------
# Pseudo-labels, the loss


def test_pseudo_labels_and_confidence_mask():
    p = torch.tensor([[0.96, 0.02, 0.02], [0.5, 0.3, 0.2], [0.01, 0.01, 0.98], [0.2, 0.75, 0.05]])
    targets, mask = pseudo_labels(p.log(), threshold=0.95)
    assert targets.tolist() == [0, 0, 2, 1]
    assert mask.tolist() == [1.0, 0.0, 1.0, 0.0]
    # a lower threshold admits the 0.75 prediction; a temperature < 1 sharpens the 0.5 one
    assert pseudo_labels(p.log(), threshold=0.7)[1].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert pseudo_labels(p.log(), threshold=0.95, temperature=0.1)[1][1] == 1.0
    with pytest.raises(ValueError, match="must be"):
        pseudo_labels(torch.zeros(3))


class Lookup(nn.Module):
    """Logits looked up by the index written in each image's first pixel (a crafted model)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0, 0, 0].long()]


def images_with_index(index: list[int]) -> torch.Tensor:
    x = torch.zeros(len(index), 3, 4, 4)
    x[:, 0, 0, 0] = torch.tensor(index, dtype=torch.float)
    return x


def test_fixmatch_loss_on_a_crafted_batch():
    table = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 9.0], [1.0, 1.2, 0.0], [0.0, 0.0, 0.0],
                          [0.0, 2.0, 0.0], [3.0, 0.0, 1.0]])  # fmt: skip
    model = Lookup(table)
    trainer = FixMatchTrainer(model, torch.optim.SGD(model.parameters(), 0.1), threshold=0.95,
                              lambda_u=2.0)  # fmt: skip
    x, y = images_with_index([0, 3]), torch.tensor([0, 1])
    u_weak, u_strong = images_with_index([1, 2]), images_with_index([4, 5])
    u_labels = torch.tensor([2, 0])
    loss, logs = trainer.loss((x, y, u_weak, u_strong, u_labels))
    # weak row 1 is confident (class 2), row 2 is not: only strong row 4 counts, against class 2
    expected_x = F.cross_entropy(table[[0, 3]], y)
    expected_u = F.cross_entropy(table[[4]], torch.tensor([2])) / 2  # mean over both
    assert logs["mask"] == 0.5 and logs["pseudo_acc"] == 1.0
    assert float(loss.detach()) == pytest.approx(float(expected_x + 2.0 * expected_u), rel=1e-6)
    assert logs["loss_x"] == pytest.approx(float(expected_x))
    with pytest.raises(ValueError, match="expects batches"):
        trainer.loss((x, y))


# ---------------------------------------------------------------------------------------------
# EMA, optimiser, schedule


def test_ema_update_averages_parameters_and_copies_buffers():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 3))  # changes the BatchNorm running statistics
    ema.update(model)
    for e, b, p in zip(ema.module.parameters(), before, model.parameters(), strict=True):
        assert torch.allclose(e, 0.9 * b + 0.1 * p)
    for e, b in zip(ema.module.buffers(), model.buffers(), strict=True):
        assert torch.equal(e, b)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, 1.0)


def test_trainer_predicts_with_the_ema_and_checkpoints_it():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    trainer = FixMatchTrainer(model, torch.optim.SGD(model.parameters(), 0.5), ema_decay=0.5)
    x = torch.randn(4, 3, 4, 4)
    batch = (x, torch.tensor([0, 1, 2, 0]), torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4))
    trainer.update(batch)
    assert torch.allclose(trainer.predict(x), trainer.ema.module(x))
    assert not torch.allclose(trainer.predict(x), model(x))
    state = trainer.state_dict()
    other = FixMatchTrainer(
        nn.Sequential(nn.Flatten(), nn.Linear(48, 3)), torch.optim.SGD(model.parameters(), 0.5)
    )
    other.load_state_dict(state)
    assert torch.allclose(other.predict(x), trainer.predict(x))


def test_schedule_is_cosine_of_seven_sixteenths():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.03)
    sched = fixmatch_schedule(opt, 100)
    lrs = []
    for _ in range(101):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.03)
    assert lrs[50] == pytest.approx(0.03 * math.cos(7 * math.pi * 50 / 1600))
    assert lrs[100] == pytest.approx(0.03 * math.cos(7 * math.pi / 16))
    warm = fixmatch_schedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 10, 5)
    assert warm.get_last_lr()[0] == 0.0
    with pytest.raises(ValueError):
        fixmatch_schedule(opt, 10, warmup=10)


def test_sgd_has_no_weight_decay_on_biases_and_batchnorm():
    model = semisupervised.build_model("ra", semisupervised.resolve_setting(), depth=10)
    opt = fixmatch_sgd(model, weight_decay=5e-4)
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("bias" not in names[id(p)] and "bn" not in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {"fc.bias", "bn1.weight"}
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9


# ---------------------------------------------------------------------------------------------
# Labelled subsets and augmentation


def test_labels_are_sampled_per_class_with_a_fixed_seed():
    labels = np.repeat(np.arange(10), 100)
    np.random.default_rng(0).shuffle(labels)
    chosen = sample_labelled(labels, 250, seed=1)
    assert len(chosen) == 250 == len(set(chosen.tolist()))
    assert np.bincount(labels[chosen], minlength=10).tolist() == [25] * 10
    assert np.array_equal(sample_labelled(labels, 250, seed=1), chosen)
    assert not np.array_equal(sample_labelled(labels, 250, seed=2), chosen)
    labelled, rest = split_labelled(labels, 40, seed=1, unlabelled="rest")
    assert len(np.intersect1d(labelled, rest)) == 0 and len(labelled) + len(rest) == 1000
    assert len(split_labelled(labels, 40, seed=1)[1]) == 1000  # "all": FixMatch's default
    with pytest.raises(ValueError, match="multiple of the 10 classes"):
        sample_labelled(labels, 255, seed=1)
    with pytest.raises(ValueError, match="fewer than"):
        sample_labelled(labels, 2000, seed=1)


def test_reflect_padding_crop_takes_every_pixel_from_the_image():
    images = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)  # no zeros anywhere
    zero = random_crop_flip(images, torch.Generator().manual_seed(0), padding=4)
    reflect = weak_augment(images, torch.Generator().manual_seed(0))
    assert (zero == 0).any() and not (reflect == 0).any()
    # a row-constant image stays row-constant in each column under reflection of the columns
    ramp = torch.arange(8, dtype=torch.uint8).view(1, 1, 1, 8).expand(1, 3, 8, 8).contiguous()
    out = random_crop_flip(ramp, torch.Generator().manual_seed(3), padding_mode="reflect")
    assert (out == out[:, :, :1]).all()
    with pytest.raises(ValueError, match="padding_mode"):
        random_crop_flip(ramp, torch.Generator(), padding_mode="edge")


def test_rand_augment_is_seeded_and_keeps_uint8():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    a = rand_augment(images, torch.Generator().manual_seed(0))
    b = rand_augment(images, torch.Generator().manual_seed(0))
    assert a.dtype == torch.uint8 and a.shape == images.shape and torch.equal(a, b)
    assert ((a == 127).all(1).flatten(1).sum(1) >= 64).all()  # a 16x16 cutout, clipped >= 8x8
    for name, op in RAND_AUGMENT_OPS.items():
        for v in (1, 9):
            out = op(images[0], v, torch.Generator().manual_seed(v))
            assert out.shape == (3, 32, 32) and out.dtype == torch.uint8, name
    with pytest.raises(ValueError, match="uint8"):
        rand_augment(images.float(), torch.Generator())


def test_semi_supervised_batches():
    rng = np.random.default_rng(0)
    lab = (rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.arange(20) % 10)
    unl = (rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), np.arange(50) % 10)
    batches = list(SemiSupervisedBatches(lab, unl, 8, 3, 4, torch.Generator().manual_seed(0)))
    assert len(batches) == 4
    x, y, uw, us, uy = batches[0]
    assert x.shape == (8, 3, 32, 32) and uw.shape == us.shape == (24, 3, 32, 32)
    assert x.dtype == torch.float32 and y.shape == (8,) and uy.shape == (24,)
    again = list(SemiSupervisedBatches(lab, unl, 8, 3, 4, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches[3], again[3], strict=True))
    with pytest.raises(ValueError, match="strong"):
        SemiSupervisedBatches(lab, unl, 8, 3, 4, torch.Generator(), strong="autoaugment")


# ---------------------------------------------------------------------------------------------
# CrossNorm keeps labelled and unlabelled images apart


def test_grouped_partner_never_crosses_groups():
    groups = torch.tensor([0] * 5 + [1] * 8 + [-1] * 3 + [2])
    for seed in range(20):
        partner = grouped_partner(groups, torch.Generator().manual_seed(seed))
        assert torch.equal(groups[partner], groups)
        moved = groups >= 0
        moved[-1] = False  # alone in its group
        assert (partner[moved] != torch.nonzero(moved).flatten()).all()
        assert torch.equal(partner[~moved], torch.nonzero(~moved).flatten())
    with pytest.raises(ValueError, match="integer"):
        grouped_partner(torch.zeros(3))


def two_regimes(n_l: int = 4, n_u: int = 6) -> torch.Tensor:
    """Labelled maps with means ~ +50, unlabelled ones with means ~ -50."""
    x = torch.randn(n_l + n_u, 3, 8, 8)
    x[:n_l] += 50
    x[n_l:] -= 50
    return x


@pytest.mark.parametrize("crop", ["neither", "both"])
def test_crossnorm_with_groups_pairs_within_each_part(crop):
    x = two_regimes()
    groups = cn_groups(4, 6, "all")
    out = crossnorm(x, crop=crop, generator=torch.Generator().manual_seed(0), groups=groups)
    means = out.mean(dim=(2, 3))
    assert (means[:4] > 40).all() and (means[4:] < -40).all()
    mixed = crossnorm(
        x, generator=torch.Generator().manual_seed(0), groups=cn_groups(4, 6, "mixed")
    )
    assert (mixed.mean(dim=(2, 3))[:4] < 0).any()  # one group: pairs can cross
    only_u = crossnorm(x, crop=crop, generator=torch.Generator().manual_seed(0),
                       groups=cn_groups(4, 6, "unlabelled"))  # fmt: skip
    assert torch.equal(only_u[:4], x[:4]) and not torch.allclose(only_u[4:], x[4:])
    with pytest.raises(ValueError, match="groups must have shape"):
        crossnorm(x, groups=torch.zeros(3, dtype=torch.long))


def test_crossnorm_layer_groups_are_set_from_outside_and_restored():
    layer = CrossNorm(3).train()
    layer.active = True
    model = nn.Sequential(layer)
    x = two_regimes()
    with crossnorm_groups(model, cn_groups(4, 6, "unlabelled")):
        assert layer.groups is not None
        out = model(x)
    assert layer.groups is None
    assert torch.equal(out[:4], x[:4])


class Recorder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return x


@pytest.mark.parametrize("cn_data", ["all", "unlabelled"])
def test_trainer_keeps_labelled_and_unlabelled_apart_under_crossnorm(cn_data):
    torch.manual_seed(0)
    recorder = Recorder()
    model = nn.Sequential(CrossNorm(3), recorder, nn.Flatten(), nn.Linear(192, 3))
    trainer = FixMatchTrainer(model, torch.optim.SGD(model.parameters(), 0.0), cn_prob=1.0,
                              cn_data=cn_data)  # fmt: skip
    x = two_regimes(4, 6)
    batch = (x[:4], torch.tensor([0, 1, 2, 0]), x[4:7], x[7:])
    for _ in range(5):
        logs = trainer.update(batch)
        assert logs["cn"] == 1.0
        means = recorder.seen.mean(dim=(2, 3))
        assert (means[:4] > 40).all() and (means[4:] < -40).all()
        if cn_data == "unlabelled":
            assert torch.equal(recorder.seen[:4], x[:4])
    assert model[0].groups is None and not model[0].active


# ---------------------------------------------------------------------------------------------
# Resume and an end-to-end run


def toy_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """10 classes told apart by colour, with noise: easy to learn from few labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    colours = np.random.default_rng(99).integers(20, 236, (10, 3))
    images = colours[labels][:, None, None, :] + rng.normal(0, 12, (n, 32, 32, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def make_fixmatch(seed: int = 0):
    torch.manual_seed(seed)
    model = semisupervised.build_model("wa_cn_all", semisupervised.resolve_setting(), depth=10,
                                       widen_factor=1)  # fmt: skip
    opt = fixmatch_sgd(model)
    trainer = FixMatchTrainer(model, opt, fixmatch_schedule(opt, 6), cn_prob=0.5, ema_decay=0.9)
    lab, unl = toy_images(20, 0), toy_images(40, 1)

    def batches(epoch, generator):
        return SemiSupervisedBatches(lab, unl, 4, 2, 2, generator, strong="ra")

    return trainer, batches


def test_fit_resumes_fixmatch_exactly(tmp_path):
    straight, batches = make_fixmatch()
    fit(straight, batches, 3, tmp_path / "a", progress=False)
    first, batches = make_fixmatch()
    fit(first, batches, 1, tmp_path / "b", progress=False)
    resumed, batches = make_fixmatch()
    history = fit(resumed, batches, 3, tmp_path / "b", progress=False)
    assert len(history) == 3 and resumed.step == 6
    for a, b in zip(straight.state_dict()["ema"].values(), resumed.state_dict()["ema"].values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.fixture
def toy_root(tmp_path):
    root = tmp_path / "data"
    (root / "cifar10").mkdir(parents=True)
    for split, n, seed in (("train", 300, 0), ("test", 40, 1)):
        images, labels = toy_images(n, seed)
        np.savez(root / "cifar10" / f"cache-{split}.npz", images=images, labels=labels,
                 source=np.array("toy"))  # fmt: skip
    return root


def test_run_learns_over_chance_and_is_read_back(toy_root, tmp_path):
    overrides = {"epochs": 2, "eval_step": 15, "batch_size": 10, "mu": 2, "ema_decay": 0.9,
                 "lr": 0.05}  # fmt: skip
    kwargs = dict(overrides=overrides, model_kwargs={"depth": 10, "widen_factor": 1},
                  test_subset=20, device="cpu", root=toy_root, progress=False)  # fmt: skip
    runs = semisupervised.run_grid(["ra", "ra_cn_unlabelled"], [20], [0], tmp_path / "res",
                                   **kwargs)  # fmt: skip
    for _, _, (metrics,) in runs:
        assert metrics["clean_error"] < 50.0  # chance: 90%
        assert metrics["cifar_c"] == "generated" and len(metrics["errors"]) == 15
        assert metrics["steps"] == 30 and len(metrics["history"]) == 2
        assert 0.0 <= metrics["history"][-1]["mask"] <= 1.0
    again = semisupervised.run("ra", 20, tmp_path / "res", **kwargs)
    assert again["clean_error"] == runs[0][2][0]["clean_error"]
    rows = semisupervised.table_rows(runs)
    assert [r["method"] for r in rows] == ["FixMatch", "FixMatch + CN (unlabelled)"]
    assert rows[0]["clean change"] == 0.0
    assert rows[1]["corruption change"] == pytest.approx(
        runs[1][2][0]["mce"] - runs[0][2][0]["mce"]
    )
    assert semisupervised.best_cn(runs) == {("ra", 20): "ra_cn_unlabelled"}
    semisupervised.figure(runs)
    with pytest.raises(ValueError, match="unknown variant"):
        semisupervised.run("fixmatch", 20, tmp_path / "res")
    with pytest.raises(ValueError, match="unknown setting"):
        semisupervised.resolve_setting({"learning_rate": 0.1})
