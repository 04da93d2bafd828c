"""Trainers, schedules, the consistency loss and exact resume of the training loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sncn.layers import CNSN, CrossNorm, style_layers
from sncn.train import (
    AugMixTrainer,
    ConsistencyTrainer,
    Trainer,
    cosine_schedule,
    fit,
    jsd_consistency,
    sgd,
    step_schedule,
)


def tiny_net(classes: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        CNSN(8, crop="both"),
        nn.Conv2d(8, 8, 3, padding=1, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        CNSN(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    )


def toy_data(n: int = 64, classes: int = 3, seed: int = 0):
    """Images whose class is where a bright square is (content, not style: CrossNorm keeps it)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, 3, 8, 8, generator=g) * 0.5
    for k in range(classes):
        x[y == k, :, 4 * (k // 2) : 4 * (k // 2) + 4, 4 * (k % 2) : 4 * (k % 2) + 4] += 2.0
    return x, y


def test_jsd_consistency():
    z = torch.randn(5, 4)
    assert jsd_consistency([z, z, z]).abs() < 1e-6
    p = torch.tensor([[0.9, 0.1]])
    q = torch.tensor([[0.2, 0.8]])
    m = (p + q) / 2
    expected = 0.5 * ((p * (p / m).log()).sum() + (q * (q / m).log()).sum())
    torch.testing.assert_close(jsd_consistency([p.log(), q.log()]), expected)


def test_schedules():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = cosine_schedule(opt, total_steps=100, lr_min_ratio=1e-5)
    lrs = []
    for _ in range(101):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[50] == pytest.approx(0.1 * (1e-5 + (1 - 1e-5) * 0.5))
    assert lrs[100] == pytest.approx(1e-6)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = step_schedule(opt, steps_per_epoch=10, milestones=(3, 6))
    lrs = []
    for _ in range(70):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[29] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.01)
    assert lrs[60] == pytest.approx(0.001)


def record_active(model: nn.Module) -> list[bool]:
    """Record, at each CrossNorm forward, whether the layer was on."""
    seen: list[bool] = []
    for _, layer in style_layers(model):
        layer.register_forward_pre_hook(lambda m, args: seen.append(m.active))
    return seen


def test_trainer_learns():
    torch.manual_seed(0)
    model = tiny_net()
    x, y = toy_data()
    trainer = Trainer(model, sgd(model, 0.2), cn_prob=0.0)
    first = trainer.update((x, y))
    assert set(first) == {"loss", "lr"} and first["lr"] == 0.2
    for _ in range(30):
        last = trainer.update((x, y))
    assert last["loss"] < first["loss"] * 0.2
    logits = trainer.predict(x)
    assert not model.training and logits.shape == (64, 3)
    assert (logits.argmax(1) == y).float().mean() > 0.9


def test_trainer_switches_crossnorm_each_step():
    model = tiny_net()
    seen = record_active(model)
    trainer = Trainer(model, sgd(model, 0.05), cn_prob=1.0, active_num=1)
    for _ in range(5):
        trainer.update(toy_data(16))
    assert len(seen) == 10 and sum(seen) == 5  # exactly one of the two units on in each step
    assert not any(m.active for _, m in style_layers(model))


def test_trainer_without_crossnorm_never_switches():
    model = tiny_net()
    seen = record_active(model)
    trainer = Trainer(model, sgd(model, 0.05), cn_prob=0.0)
    trainer.update(toy_data())
    assert seen and not any(seen)


def test_consistency_trainer_views():
    torch.manual_seed(0)
    model = tiny_net()
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    trainer = ConsistencyTrainer(model, sgd(model, 0.05), cn_prob=1.0, consist_wt=10.0)
    logs = trainer.update(toy_data(16))
    assert len(calls) == 3  # clean + two CrossNorm views
    assert logs["consistency"] > 0
    assert logs["loss"] == pytest.approx(logs["ce"] + 10.0 * logs["consistency"], rel=1e-5)
    calls.clear()
    trainer.cn_prob = 0.0
    logs = trainer.update(toy_data(16))
    assert len(calls) == 1 and logs["consistency"] == 0.0


def test_augmix_trainer():
    torch.manual_seed(0)
    model = tiny_net()
    x, y = toy_data(16)
    views = (x, x + 0.1 * torch.randn_like(x), x.flip(3))
    trainer = AugMixTrainer(model, sgd(model, 0.05), cn_prob=1.0)
    logs = trainer.update((views, y))
    assert logs["jsd"] > 0 and logs["consistency"] > 0
    expected = logs["ce"] + 12 * logs["jsd"] + 10 * logs["consistency"]
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="AugMixViews"):
        trainer.update(((x, x), y))


def make_run(seed: int = 0):
    torch.manual_seed(seed)
    model = tiny_net()
    opt = sgd(model, 0.05)
    x, y = toy_data(48)
    steps_per_epoch = 3

    def batches(epoch: int, g: torch.Generator):
        order = torch.randperm(len(y), generator=g)
        for i in range(steps_per_epoch):
            idx = order[i * 16 : (i + 1) * 16]
            yield x[idx], y[idx]

    trainer = Trainer(
        model, opt, cosine_schedule(opt, 4 * steps_per_epoch), cn_prob=0.5, active_num=1
    )
    return trainer, batches


def test_fit_resumes_exactly(tmp_path):
    trainer, batches = make_run()
    full = fit(trainer, batches, 4, tmp_path / "full", seed=3, progress=False)
    reference = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    class Interrupt(Exception):
        pass

    trainer, batches = make_run()

    def interrupted(epoch, g):
        for i, batch in enumerate(batches(epoch, g)):
            if epoch == 2 and i == 1:
                raise Interrupt
            yield batch

    with pytest.raises(Interrupt):
        fit(trainer, interrupted, 4, tmp_path / "resumed", seed=3, progress=False)
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    trainer, batches = make_run(seed=99)  # fresh objects, different init: the checkpoint wins
    resumed = fit(trainer, batches, 4, tmp_path / "resumed", seed=3, progress=False)
    assert resumed == full
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert [r["epoch"] for r in full] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in full)


def test_fit_evaluates_each_epoch():
    trainer, batches = make_run()
    x, y = toy_data(32, seed=1)
    history = fit(
        trainer,
        batches,
        2,
        seed=0,
        progress=False,
        evaluate=lambda t: {"error": float((t.predict(x).argmax(1) != y).float().mean())},
    )
    assert len(history) == 2 and all("error" in r for r in history)


def test_amp_on_cpu_runs_in_bfloat16():
    model = tiny_net()
    trainer = Trainer(model, sgd(model, 0.05), cn_prob=1.0, amp=True, channels_last=True)
    logs = trainer.update(toy_data(16))
    assert math.isfinite(logs["loss"])
    assert trainer.predict(toy_data(4)[0]).dtype == torch.float32


def test_crossnorm_units_are_found_through_the_trainer_model():
    model = tiny_net()
    assert len([m for m in model.modules() if isinstance(m, CrossNorm)]) == 2
    x, y = toy_data(8)
    assert F.cross_entropy(model(x), y).isfinite()
