"""Several CIFAR runs trained at once by worker processes (run_grid(concurrent=K)): the same
numbers, in the same order, as one after another; a failing run named with its folder; no worker
left behind."""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch

from sncn import utils
from sncn.experiments import cifar_c
from sncn.utils import PROGRESS, read_progress

#: A seconds-long run on the embedded sample (the budget of the GPU check's --smoke).
TINY = dict(epochs=1, batch_size=16, train_subset=64, test_subset=2, device="cpu",
            progress=False, model_kwargs={"depth": 10, "widen_factor": 1})  # fmt: skip


@pytest.fixture
def sample(monkeypatch, tmp_path):
    """The embedded sample as the data (inherited by the workers: they read the environment),
    with its caches and generated CIFAR-C under ``tmp_path``."""
    monkeypatch.setenv("SNCN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SNCN_SAMPLE", "1")
    monkeypatch.delenv("SNCN_CACHE", raising=False)


def test_concurrent_must_be_one_or_more(tmp_path):
    grid = (["cifar10"], ["wrn"], ["basic"], [0], tmp_path)
    with pytest.raises(ValueError, match=r"concurrent must be 1 \(one run at a time\) or more"):
        cifar_c.run_grid(*grid, concurrent=0, **TINY)
    with pytest.raises(ValueError, match="concurrent must be 1"):
        cifar_c.run_ladder(["cifar10"], ["wrn"], ["basic"], [1], [0], tmp_path, concurrent=-1)
    with pytest.raises(ValueError, match="workers must be 1 or more"):
        utils.run_concurrently(print, [{}], 0)
    assert utils.run_concurrently(print, [], 2) == []  # nothing to do: no process started
    assert not (tmp_path / "runs").exists()


def test_run_folder_is_the_folder_run_trains_into(sample, tmp_path):
    budget = {**TINY, "seed": 3, "retrain": True, "position": (1, 2), "compile": False}
    folder = cifar_c.run_folder("cifar10", "wrn", "cn", tmp_path, **budget)
    assert folder.parent == tmp_path / "runs" and folder.name.startswith("cifar10-wrn-cn-")
    assert folder.name.endswith("-seed3") and folder.is_dir()
    assert cifar_c.run_folder("cifar10", "wrn", "cn", tmp_path, **TINY) != folder  # seed 0


@pytest.mark.slow
def test_runs_trained_at_once_equal_the_runs_trained_one_after_another(sample, tmp_path, capsys):
    grid = (["cifar10"], ["wrn"], ["basic", "cn"], [0, 1])
    together = cifar_c.run_grid(*grid, tmp_path / "together", concurrent=2, **TINY)
    assert not multiprocessing.active_children()
    lines = capsys.readouterr().out.splitlines()
    finished = sorted(line.split(": done in ")[0] for line in lines if ": done in " in line)
    assert finished == [
        "run 1/4 cifar10 wrn basic seed 0",
        "run 2/4 cifar10 wrn basic seed 1",
        "run 3/4 cifar10 wrn cn seed 0",
        "run 4/4 cifar10 wrn cn seed 1",
    ]
    # one after another in this process, with the workers' CPU threads: on the CPU a run's sums
    # depend on torch's thread count (how reductions are split), not on the process or on K
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        alone = cifar_c.run_grid(*grid, tmp_path / "alone", **TINY)
    finally:
        torch.set_num_threads(threads)
    assert [cell[:3] for cell in together] == [cell[:3] for cell in alone] == [
        ("cifar10", "wrn", "basic"), ("cifar10", "wrn", "cn")]  # fmt: skip
    keys = ("clean_error", "mce", "mce_se", "errors", "history", "steps", "data_sample")
    for (*_, ours), (*_, theirs) in zip(together, alone, strict=True):
        assert len(ours) == len(theirs) == 2
        for a, b in zip(ours, theirs, strict=True):
            assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert ours[0]["history"] != ours[1]["history"]  # the two seeds are different runs
    # the workers' runs are finished runs of the folders run_folder names: read back at once
    folder = cifar_c.run_folder("cifar10", "wrn", "cn", tmp_path / "together", seed=1, **TINY)
    assert (folder / "done").is_file()
    # its progress record counts the runs after it as trained two at a time
    assert read_progress(folder / PROGRESS)["position"] == [4, 4, 2]
    again = cifar_c.run_grid(*grid, tmp_path / "together", **TINY)
    assert [[m["history"] for m in seeds] for *_, seeds in again] == [
        [m["history"] for m in seeds] for *_, seeds in together]  # fmt: skip


@pytest.mark.slow
def test_a_failing_run_is_named_with_its_folder_and_stops_the_others(sample, tmp_path):
    # the tiny WRN's depth and widen_factor are not AllConvNet arguments: that run fails
    with pytest.raises(RuntimeError, match=r"run 2/2 cifar10 allconv basic seed 0 failed "
                       r"\(TypeError: .*unexpected keyword argument") as failure:  # fmt: skip
        cifar_c.run_grid(["cifar10"], ["wrn", "allconv"], ["basic"], [0], tmp_path,
                         concurrent=2, **TINY)  # fmt: skip
    folder = cifar_c.run_folder("cifar10", "allconv", "basic", tmp_path, **TINY)
    assert f"Its run folder: {folder}" in str(failure.value)
    assert isinstance(failure.value.__cause__, TypeError)  # the worker's own exception
    assert not multiprocessing.active_children()  # the wrn run's worker is gone too
