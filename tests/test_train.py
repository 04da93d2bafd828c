"""Trainers, schedules, the consistency loss and exact resume of the training loop."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sncn.layers import CNSN, CROP_MODES, CrossNorm, style_layers
from sncn.train import (
    AugMixTrainer,
    ConsistencyTrainer,
    Trainer,
    cosine_schedule,
    fit,
    jsd_consistency,
    loop,
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


def test_bfloat16_autocast_on_the_cpu_is_opt_in_and_trains():
    torch.manual_seed(0)
    model = tiny_net()
    plain = Trainer(model, sgd(model, 0.05))
    assert not plain.amp and not plain.scaler.is_enabled()  # float32 unless asked
    model = tiny_net()
    trainer = Trainer(model, sgd(model, 0.2), amp=True, channels_last=True)
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()  # no scaling
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    x, y = toy_data(32)
    losses = [trainer.update((x, y))["loss"] for _ in range(10)]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert trainer.state_dict()["scaler"] == {}
    logits = trainer.predict(x)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    fp16 = Trainer(tiny_net(), sgd(model, 0.05), amp=True, amp_dtype=torch.float16)
    assert fp16.scaler.is_enabled()  # float16 keeps its loss scaling
    with pytest.raises(ValueError, match="amp_dtype"):
        Trainer(model, sgd(model, 0.05), amp=True, amp_dtype=torch.float32)


def test_update_without_sync_returns_the_same_values_as_detached_tensors():
    for make in (Trainer, ConsistencyTrainer):
        values = []
        for sync in (True, False):
            torch.manual_seed(0)
            model = tiny_net()
            trainer = make(model, sgd(model, 0.05), cn_prob=0.5, active_num=1)
            values.append([trainer.update(toy_data(16, seed=k), sync=sync) for k in range(3)])
        for synced, lazy in zip(*values, strict=True):
            assert set(synced) == set(lazy)
            assert all(type(v) is float for v in synced.values())
            assert isinstance(lazy["loss"], torch.Tensor) and lazy["loss"].dim() == 0
            assert not lazy["loss"].requires_grad and type(lazy["lr"]) is float
            assert {k: float(v) for k, v in lazy.items()} == synced


def test_fit_asks_for_device_values_and_reads_them_once_per_epoch(monkeypatch):
    asked, reads = [], []
    trainer, batches = make_run()
    update = trainer.update

    def spy(batch, **kwargs):
        asked.append(kwargs)
        return update(batch, **kwargs)

    monkeypatch.setattr(trainer, "update", spy)
    read = loop._read_logs
    monkeypatch.setattr(loop, "_read_logs", lambda logs: reads.append(1) or read(logs))
    history = fit(trainer, batches, 2, progress=False)
    assert asked == [{"sync": False}] * 6 and len(reads) == 2
    assert all(type(r["loss"]) is float and math.isfinite(r["loss"]) for r in history)


def test_read_logs_gives_what_float_gives_and_keeps_numbers():
    loss = [torch.tensor(1 / 3), torch.tensor(2.5, dtype=torch.bfloat16), 0.0]
    logs = loop._read_logs({"loss": loss, "lr": [0.1, 0.1]})
    assert logs == {"loss": [float(loss[0]), 2.5, 0.0], "lr": [0.1, 0.1]}
    assert all(type(v) is float for v in logs["loss"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "crop, fast", [(crop, False) for crop in CROP_MODES] + [("both", True)],
    ids=[*CROP_MODES, "both-bf16-channels_last"],
)  # fmt: skip
def test_compiled_training_is_one_graph_for_every_switch_pattern(monkeypatch, crop, fast):
    """CrossNorm off, or on in either unit, in each crop mode (and with bfloat16 autocast and
    channels_last, the CUDA defaults, on the CPU): the style layers are inside the compiled
    graph and read their switch as a tensor, so after the first step nothing compiles again and
    no graph breaks; the numbers are those of the eager model run as traced (every unit
    restyles and the switch selects: the same random draws), and the switches end off."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    import sncn.layers
    import sncn.train.base

    def net() -> nn.Sequential:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), CNSN(8, crop=crop), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, stride=2), CNSN(8, crop=crop),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
        )  # fmt: skip

    reference, model = net(), net()
    keys = list(model.state_dict())
    options = {"active_num": 1, "amp": fast, "channels_last": fast}
    eager = Trainer(reference, sgd(reference, 0.05), **options)
    trainer = Trainer(model, sgd(model, 0.05), compile={"backend": "aot_eager"}, **options)
    tol = {"rel": 2e-2, "abs": 1e-3} if fast else {"rel": 1e-5, "abs": 1e-6}
    monkeypatch.setattr(sncn.layers, "_traced", lambda: True)  # the eager model as traced
    torch._dynamo.reset()
    counters.clear()
    on = []  # which units of `model` were on, step by step
    x, y = toy_data(16)

    def step(cn_prob: float) -> None:
        trainer.cn_prob = eager.cn_prob = cn_prob
        seed = int(torch.randint(1000, ()))
        torch.manual_seed(seed)  # the same switch and CrossNorm draws for both
        ours = trainer.update((x, y))
        torch.manual_seed(seed)
        theirs = eager.update((x, y))
        assert ours["loss"] == pytest.approx(theirs["loss"], **tol)

    switch = sncn.train.base.crossnorm_step

    @contextlib.contextmanager
    def recording(net, *args):  # the units each step of `model` switched on
        with switch(net, *args) as names:
            if net is model:
                on.append(tuple(names))
            yield names

    monkeypatch.setattr(sncn.train.base, "crossnorm_step", recording)
    torch.manual_seed(1)
    step(0.0)
    with torch._dynamo.config.patch(error_on_recompile=True):
        while len(set(on)) < 3 and len(on) < 24:  # until off and each unit alone have run
            step(0.6)
    assert set(on) == {(), ("1.crossnorm",), ("4.crossnorm",)}
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert list(model.state_dict()) == keys
    assert not any(layer.active or layer.switch for _, layer in style_layers(model))
    for (_, a), (_, b) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-2 if fast else 1e-4, atol=1e-3 if fast else 1e-6)


@pytest.mark.slow
def test_compiled_consistency_step_switches_between_its_forwards(monkeypatch):
    # three forwards (CrossNorm off, on, on) before one backward: each keeps the switch it saw
    # (the fixed slots), so the compiled step equals the eager one run as traced
    import torch._dynamo
    from torch._dynamo.utils import counters

    import sncn.layers

    monkeypatch.setattr(sncn.layers, "_traced", lambda: True)  # the eager model as traced
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = tiny_net()
    torch.manual_seed(0)
    reference = tiny_net()
    trainer = ConsistencyTrainer(model, sgd(model, 0.05), cn_prob=1.0,
                                 compile={"backend": "aot_eager"})  # fmt: skip
    eager = ConsistencyTrainer(reference, sgd(reference, 0.05), cn_prob=1.0)
    x, y = toy_data(8)
    for seed in range(5):
        torch.manual_seed(seed)
        ours = trainer.update((x, y))["loss"]
        torch.manual_seed(seed)
        assert ours == pytest.approx(eager.update((x, y))["loss"], rel=1e-5, abs=1e-6)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


def test_the_switch_moves_through_fixed_slots_in_step_across_units():
    # every setting writes the next of SWITCH_SLOTS fixed buffers (a pending backward keeps the
    # one its forward saw), and the switch step moves all units together: the forwards of any
    # number of steps see SWITCH_SLOTS / 2 sets of switch tensors, the bound on CUDA graphs
    from sncn.layers import SWITCH_SLOTS, crossnorm_step

    layer = CrossNorm(4)
    first = layer.switch
    layer.active = True
    assert layer.switch is not first and bool(layer.switch) and not bool(first)
    assert "switch" not in layer.state_dict() and len(list(layer.buffers())) == SWITCH_SLOTS
    layer.to(torch.float64)  # moved (here: kept) slots, the switch still one of them
    assert any(layer.switch is b for b in layer.buffers()) and bool(layer.switch)
    model = tiny_net()
    units = [m for _, m in style_layers(model)]
    seen = set()
    for _ in range(40):
        with crossnorm_step(model, 0.7, 1):
            seen.add(tuple(id(u.switch) for u in units))
            assert [bool(u.switch) for u in units] == [u.active for u in units]
    assert len(seen) == SWITCH_SLOTS // 2
    assert not any(bool(u.switch) for u in units)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_step_never_waits_and_an_epoch_waits_a_fixed_number_of_times():
    import warnings

    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1)]
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(8, 3)).cuda()
    trainer = Trainer(model, sgd(model, 0.05), amp=True, channels_last=True)  # bfloat16
    assert not trainer.scaler.is_enabled()
    x, y = (t.cuda() for t in toy_data(16))
    trainer.update((x, y), sync=False)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        logs = trainer.update((x, y), sync=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert logs["loss"].is_cuda and math.isfinite(float(logs["loss"]))

    def waits(steps: int) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                history = fit(trainer, lambda epoch, g: [(x, y)] * steps, 2, progress=False)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert all(math.isfinite(r["loss"]) for r in history)
        return sum("synchroniz" in str(w.message) for w in caught)

    waits(1)
    assert waits(2) == waits(6)  # per epoch, not per step


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_crossnorm_step_never_waits():
    # the switch (its slots), the pairing and the crop boxes all live on the device: steps of
    # the tiny net with both units on (one cropping "both") make no host synchronisation
    torch.manual_seed(0)
    model = tiny_net().cuda()
    trainer = Trainer(model, sgd(model, 0.05), cn_prob=1.0, active_num=2, amp=True,
                      channels_last=True)  # fmt: skip
    x, y = (t.cuda() for t in toy_data(16))
    trainer.update((x, y), sync=False)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            logs = trainer.update((x, y), sync=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isfinite(float(logs["loss"]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_compiled_crossnorm_step_is_one_graph_under_cuda_graphs():
    # inductor with CUDA graphs (mode "reduce-overhead"), bfloat16 and channels_last: switching
    # the units on and off step by step neither recompiles nor breaks the graph
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = tiny_net().cuda()
    trainer = Trainer(model, sgd(model, 0.05), cn_prob=0.6, active_num=1, amp=True,
                      channels_last=True, compile={"mode": "reduce-overhead"})  # fmt: skip
    x, y = (t.cuda() for t in toy_data(16))
    trainer.update((x, y))
    with torch._dynamo.config.patch(error_on_recompile=True):
        losses = [trainer.update((x, y))["loss"] for _ in range(10)]
    assert all(math.isfinite(loss) for loss in losses)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


def test_crossnorm_units_are_found_through_the_trainer_model():
    model = tiny_net()
    assert len([m for m in model.modules() if isinstance(m, CrossNorm)]) == 2
    x, y = toy_data(8)
    assert F.cross_entropy(model(x), y).isfinite()
