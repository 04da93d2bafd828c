"""The CIFAR-C experiment recipe: subsets, settings, the paper column, table rows, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import fake_cifar

from sncn.data.vision import normalize
from sncn.experiments import cifar_c
from sncn.hparams import CIFAR_BACKBONES, CIFAR_METHODS, FIXMATCH, cifar_setting
from sncn.metrics import cifar_mce, group_errors


def test_subset_is_class_balanced_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    images = np.arange(500)[:, None, None, None].repeat(2, 1).astype(np.uint8)
    x, y = cifar_c.subset(images, labels, 95, seed=1)
    counts = np.bincount(y, minlength=10)
    assert len(y) == 95 and counts.max() - counts.min() <= 1
    assert np.array_equal(cifar_c.subset(images, labels, 95, seed=1)[1], y)
    assert cifar_c.subset(images, labels, None, seed=1)[0] is images


def test_cell_subsets_are_independent_class_balanced_draws_with_one_label_sequence():
    labels = np.repeat(np.arange(10), 100)[np.random.default_rng(0).permutation(1000)]
    cells = cifar_c.cell_subsets(labels, 25, seed=0)
    assert len(cells) == 75
    first = labels[cells["gaussian_noise", 1]]
    assert np.bincount(first, minlength=10).tolist() == [3] * 5 + [2] * 5
    assert all(np.array_equal(labels[idx], first) for idx in cells.values())  # one labels.npy
    assert all(len(np.unique(idx)) == 25 for idx in cells.values())  # no repeats in a cell
    # different images in different cells, the same for every call (every method)
    assert not np.array_equal(cells["gaussian_noise", 1], cells["gaussian_noise", 2])
    assert not np.array_equal(cells["gaussian_noise", 1], cells["shot_noise", 1])
    again = cifar_c.cell_subsets(labels, 25, seed=0)
    assert all(np.array_equal(again[k], v) for k, v in cells.items())
    other = cifar_c.cell_subsets(labels, 25, seed=1)
    assert not np.array_equal(other["fog", 3], cells["fog", 3])
    with pytest.raises(ValueError, match="fewer than 11 test images"):
        cifar_c.cell_subsets(np.repeat(np.arange(10), [5] + [200] * 9), 101)
    with pytest.raises(ValueError, match="between 1 and the 1000 test images"):
        cifar_c.cell_subsets(labels, 0)
    assert cifar_c.independent_cells(25, 1000) and not cifar_c.independent_cells(None, 1000)
    assert not cifar_c.independent_cells(1000, 1000) and not cifar_c.independent_cells(0, 1000)


def test_official_cifar_c_is_read_per_cell_from_the_draws_a_generated_set_is_made_of(tmp_path):
    n_images, labels = 40, np.arange(40) % 4
    for name in cifar_c.CORRUPTIONS:  # pixel value = the test image's index
        ids = np.tile(np.arange(n_images), 5)
        np.save(tmp_path / f"{name}.npy", ids[:, None, None, None].repeat(3, 3).astype(np.uint8))
    np.save(tmp_path / "labels.npy", np.tile(labels, 5))

    class Seen:
        device = torch.device("cpu")
        batches: list[np.ndarray] = []

        def predict(self, x):
            self.batches.append(x[:, 0, 0, 0].numpy())
            return torch.zeros(len(x), 4)

    probe = Seen()
    wrong = cifar_c.corruption_wrong(probe, tmp_path, 8, mean=(0, 0, 0), std=(1 / 255,) * 3)
    cells = cifar_c.cell_subsets(labels, 8, seed=0)
    seen = [np.rint(b).astype(int) for b in probe.batches]
    expected = [cells[c, s] for c in cifar_c.CORRUPTIONS for s in cifar_c.SEVERITIES]
    assert len(seen) == 75 and all(
        np.array_equal(a, b) for a, b in zip(seen, expected, strict=True)
    )
    assert [w.tolist() for w in wrong["fog"]] == [(labels[cells["fog", s]] != 0).tolist()
                                                  for s in cifar_c.SEVERITIES]  # fmt: skip


def test_settings_follow_the_released_scripts():
    wrn = cifar_setting("cifar10", "wrn", "sncn_consistency")
    assert wrn["model"] == {"cnsn_type": "cnsn", "pos": "post", "crop": "both", "beta": 1.0}
    assert (wrn["cn_prob"], wrn["active_num"], wrn["consist_wt"]) == (0.75, 2, 10.0)
    assert wrn["trainer"] == "consistency" and wrn["epochs"] == 100
    assert cifar_setting("cifar10", "densenet", "basic")["weight_decay"] == 1e-4
    assert cifar_setting("cifar10", "resnext", "augmix")["model"] == {"cnsn_type": None}
    for backbone in CIFAR_BACKBONES:
        for method in CIFAR_METHODS:
            assert cifar_c.paper_number("cifar10", backbone, method) is not None
    with pytest.raises(ValueError, match="method must be one of"):
        cifar_setting("cifar10", "wrn", "mixup")


def test_overrides():
    base = cifar_setting("cifar10", "wrn", "sncn")
    out = cifar_c.apply_overrides(base, {"model": {"pos": "pre", "crop": None}, "cn_prob": 0.5})
    assert out["model"] == {"cnsn_type": "cnsn", "pos": "pre", "beta": 1.0}
    assert out["cn_prob"] == 0.5 and base["cn_prob"] == 0.25  # the registry is not modified
    with pytest.raises(ValueError, match="unknown setting"):
        cifar_c.apply_overrides(base, {"lr_max": 1})
    budget = {"train_subset": 0, "test_subset": 0, "model_kwargs": {}}
    name = cifar_c.run_name("cifar10", "wrn", "sncn", 0, base, budget)
    assert name.startswith("cifar10-wrn-sncn-") and name.endswith("-seed0")
    assert cifar_c.run_name("cifar10", "wrn", "sncn", 0, dict(base), dict(budget)) == name
    assert cifar_c.run_name("cifar10", "wrn", "sncn", 0, out, budget) != name
    assert cifar_c.run_name("cifar10", "wrn", "sncn", 0, base, {**budget, "test_subset": 9}) != name


def test_the_cifar_trainer_is_float32_on_the_cpu_and_compiles_on_request():
    setting = cifar_setting("cifar10", "wrn", "sncn")
    cpu = torch.device("cpu")
    trainer = cifar_c.build_trainer(setting, torch.nn.Linear(4, 10), 10, cpu)
    assert not trainer.amp and not trainer.channels_last and trainer.compiled is None
    assert trainer.amp_dtype == torch.bfloat16  # what CUDA runs autocast to
    assert (trainer.cn_prob, trainer.active_num) == (setting["cn_prob"], setting["active_num"])
    compiled = cifar_c.build_trainer(setting, torch.nn.Linear(4, 10), 10, cpu,
                                     compile={"backend": "eager"})  # fmt: skip
    assert compiled.compiled is not None


def test_compile_reaches_the_trainer_and_params_but_not_the_run_name(tmp_path, monkeypatch):
    made_on = fake_cifar(monkeypatch, tmp_path / "c")
    asked = []
    build = cifar_c.build_trainer

    def spy(*args, compile=False):
        asked.append(compile)
        return build(*args)  # eager: the plumbing is what is tested here

    monkeypatch.setattr(cifar_c, "build_trainer", spy)
    tiny = {"depth": 10, "widen_factor": 1}
    budget = dict(epochs=1, train_subset=20, test_subset=10, batch_size=10, root=tmp_path,
                  model_kwargs=tiny, device="cpu", progress=False)  # fmt: skip
    first = cifar_c.run("cifar10", "wrn", "basic", tmp_path / "out", compile={"mode": "default"},
                        **budget)  # fmt: skip
    (folder,) = (tmp_path / "out" / "runs").iterdir()
    params = json.loads((folder / "params.json").read_text())
    assert asked == [{"mode": "default"}] and params["compile"] == {"mode": "default"}
    assert made_on == ["cpu"]  # the CIFAR-C is made on the training device
    assert cifar_c.run("cifar10", "wrn", "basic", tmp_path / "out", **budget) == first  # read back
    assert asked == [{"mode": "default"}]


def test_table_rows():
    errors = {c: [10.0, 20.0, 30.0, 40.0, 50.0] for c in cifar_c.CORRUPTIONS}
    seeds = [
        {"mce": 30.0, "clean_error": 5.0, "cifar_c": "generated", "errors": errors},
        {"mce": 32.0, "clean_error": 7.0, "cifar_c": "generated", "errors": errors},
    ]
    (row,) = cifar_c.table_rows([("cifar10", "wrn", "basic", seeds)])
    assert row["mCE"] == 31.0 and row["clean error"] == 6.0
    assert row["mCE std"] == pytest.approx(np.std([30.0, 32.0], ddof=1))
    assert row["paper mCE"] == 26.9 and row["ours - paper"] == pytest.approx(4.1)
    assert row["CIFAR-C"] == "generated"
    # relative robustness: the corruption gap over seeds (25, 25) and each group's mean error
    assert row["mCE - clean"] == 25.0 and row["mCE - clean std"] == 0.0
    assert [row[f"{g} error"] for g in ("noise", "blur", "weather", "digital")] == [30.0] * 4


def test_group_errors_average_each_category_over_its_corruptions_and_severities():
    errors = {c: [float(i)] * 5 for i, c in enumerate(cifar_c.CORRUPTIONS)}
    errors["snow"] = [0.0, 0.0, 0.0, 0.0, 10.0]
    groups = group_errors(errors)
    assert groups == {"noise": 1.0, "blur": 4.5, "weather": (2.0 + 8.0 + 9.0) / 3, "digital": 12.0}
    no_errors = cifar_c.robustness_columns([{"mce": 30.0, "clean_error": 10.0}])
    assert no_errors["mCE - clean"] == 20.0 and no_errors["noise error"] is None


class LinearProbe:
    """A trainer stand-in: a fixed random linear classifier of the normalised pixels."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.weight = torch.randn(10, 3 * 8 * 8, generator=torch.Generator().manual_seed(0))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


def test_evaluation_normalises_test_images_with_the_given_mean_and_std(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5 * 40, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 5 * 40)
    probe = LinearProbe()

    def by_hand(x: np.ndarray, y: np.ndarray, mean, std) -> float:
        inputs = normalize(torch.from_numpy(x).permute(0, 3, 1, 2), mean, std)
        return 100.0 * float((probe.predict(inputs).argmax(1).numpy() != y).mean())

    half = ((0.5,) * 3, (0.5,) * 3)  # the paper's CIFAR normalisation, the default
    theirs = (FIXMATCH["mean"], FIXMATCH["std"])  # FixMatch-pytorch's
    assert by_hand(images, labels, *half) != by_hand(images, labels, *theirs)  # tells them apart
    clean_x, clean_y = images[:40], labels[:40]
    assert cifar_c.evaluate_error(probe, clean_x, clean_y) == by_hand(clean_x, clean_y, *half)
    assert cifar_c.evaluate_error(probe, clean_x, clean_y, mean=theirs[0], std=theirs[1]) == (
        by_hand(clean_x, clean_y, *theirs)
    )
    for name in cifar_c.CORRUPTIONS:  # a CIFAR-C folder: 5 severities of 40 images per file
        np.save(tmp_path / f"{name}.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    for mean, std in (half, theirs):
        out = cifar_c.robustness_metrics(probe, clean_x, clean_y, tmp_path, "generated",
                                         mean=mean, std=std)  # fmt: skip
        assert out["clean_error"] == by_hand(clean_x, clean_y, mean, std)
        expected = [by_hand(images[k * 40 : (k + 1) * 40], labels[k * 40 : (k + 1) * 40],
                            mean, std) for k in range(5)]  # fmt: skip
        assert all(out["errors"][name] == expected for name in cifar_c.CORRUPTIONS)


def test_mce_standard_error_is_the_spread_of_a_new_draw_of_test_images():
    rng = np.random.default_rng(0)
    n = 400
    hardness = rng.uniform(0, 1, n)  # per image: the same images are hard under every corruption
    wrong = {c: [rng.uniform(0, 1, n) < hardness * (0.5 + 0.1 * s) for s in range(5)]
             for c in cifar_c.CORRUPTIONS}  # fmt: skip
    se = cifar_c.mce_standard_error(wrong, independent=False)
    # the same quantity by brute force: the mCE (cifar_mce of the 75 errors) over bootstrap
    # resamples of the n images, the model fixed
    draws = []
    for _ in range(2000):
        take = rng.integers(0, n, n)
        errors = {c: [100.0 * w[take].mean() for w in ws] for c, ws in wrong.items()}
        draws.append(cifar_mce(errors))
    assert se == pytest.approx(np.std(draws), rel=0.08)
    # correlated cells: far above the error of 75 x n independent predictions
    assert se > 3 * 100 * np.sqrt(0.25 / (75 * n))
    uneven = {**wrong, "snow": [w[:-1] for w in wrong["snow"]]}
    assert cifar_c.mce_standard_error(uneven, independent=False) is None


def test_mce_standard_error_of_independent_cells_is_the_spread_over_new_draws():
    rng = np.random.default_rng(1)
    n = 100
    rates = {c: [rng.uniform(0.1, 0.9) for _ in range(5)] for c in cifar_c.CORRUPTIONS}

    def draw():  # each cell: its own n images, wrong with the cell's rate
        return {c: [rng.uniform(0, 1, n) < p for p in ps] for c, ps in rates.items()}

    wrong = draw()
    se = cifar_c.mce_standard_error(wrong)
    mces = [cifar_mce({c: [100.0 * w.mean() for w in ws] for c, ws in draw().items()})
            for _ in range(2000)]  # fmt: skip
    assert se == pytest.approx(np.std(mces), rel=0.08)
    # the binomial formula: sqrt(sum p (1 - p) / n) / 75, here about 0.5 points
    exact = 100 * np.sqrt(sum(p * (1 - p) / n for ps in rates.values() for p in ps)) / 75
    assert se == pytest.approx(exact, rel=0.05) and se < 1
    assert cifar_c.mce_standard_error({**wrong, "fog": [w[:1] for w in wrong["fog"]]}) is None


def test_curve_rows_pair_each_method_with_the_reference_seed_by_seed():
    errors = {c: [10.0] * 5 for c in cifar_c.CORRUPTIONS}

    def seeds(clean, mce, steps):
        return [{"clean_error": c, "mce": m, "steps": steps, "errors": errors, "mce_se": 0.5,
                 "cifar_c": "generated"} for c, m in zip(clean, mce, strict=True)]  # fmt: skip

    rungs = [
        (4, [("cifar10", "wrn", "basic", seeds([40, 44], [50, 56], 64)),
             ("cifar10", "wrn", "cn", seeds([42, 47], [49, 54], 64))]),
        (1, [("cifar10", "wrn", "basic", seeds([60, 61], [65, 66], 16)),
             ("cifar10", "wrn", "cn", seeds([70, 72], [72, 75], 16))]),
    ]  # fmt: skip
    rows = cifar_c.curve_rows(rungs)
    assert [(r["method"], r["steps"]) for r in rows] == [
        ("basic", 16),
        ("basic", 64),
        ("cn", 16),
        ("cn", 64),
    ]
    cn = rows[3]
    assert cn["epochs"] == 4 and cn["seeds"] == 2 and cn["mCE"] == 51.5
    assert cn["mCE - basic"] == -1.5
    assert cn["mCE - basic std"] == pytest.approx(np.std([-1, -2], ddof=1))
    assert cn["clean - basic"] == 2.5
    assert cn["mCE - clean"] == pytest.approx(np.mean([7, 7])) and cn["gap - basic"] == -4.0
    assert cn["mCE SE (images)"] == 0.5 and rows[1]["mCE - basic"] == 0.0
    assert len(rows.codes) == 8  # every run behind the rows (for the stale note)
    old = [("cifar10", "wrn", "basic", [{k: v for k, v in s.items() if k != "steps"}
                                         for s in seeds([1], [2], 0)])]  # fmt: skip
    with pytest.raises(ValueError, match="retrain stale"):
        cifar_c.curve_rows([(1, old)])
    with pytest.raises(TypeError, match="ladder"):
        cifar_c.run_ladder(["cifar10"], ["wrn"], ["basic"], [1], [0], ".", epochs=3)
