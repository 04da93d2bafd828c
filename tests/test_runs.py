"""Runs a user can trust: identity (setting, data), code version and stale runs, retraining, and
processes sharing a results folder (locks, unique temporary names)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest
import torch
from helpers import fake_cifar

from sncn import results
from sncn.experiments import cifar_c
from sncn.pipeline import main, run_pipeline
from sncn.train import Trainer, fit, sgd

REPO = Path(__file__).resolve().parent.parent
OTHER_CODE = {"sncn": "0123456789ab", "git": None}


def other_code(monkeypatch) -> None:
    """From here on, this process runs 'other code' than the runs written so far."""
    monkeypatch.setattr(results, "code_version", lambda: dict(OTHER_CODE))


# --------------------------------------------------------------------------------------------
# code version


def test_code_version_changes_with_any_source_file(tmp_path):
    package = tmp_path / "sncn"
    shutil.copytree(results.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = results.source_hash(package)
    assert len(before) == 12 and before == results.source_hash(package)
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__" / "notes.txt").write_text("not a source")
    assert results.source_hash(package) == before  # only .py files count
    layers = package / "layers.py"
    layers.write_text(layers.read_text() + "\n# an edit\n")
    edited = results.source_hash(package)
    assert edited != before
    (package / "extra.py").write_text("X = 1\n")
    assert results.source_hash(package) not in (before, edited)
    version = results.code_version()
    assert set(version) == {"sncn", "git"} and len(version["sncn"]) == 12
    assert results.code_version() == version and results.code_version() is not version


# --------------------------------------------------------------------------------------------
# stale runs, retraining, listing


def finished_run(results_dir: Path, name: str, value: float = 1.0) -> Path:
    folder = results.run_dir(results_dir, name)
    (folder / "checkpoint.pt").write_bytes(b"weights")
    results.save_run(folder, {"lr": 0.1}, {"clean_error": value})
    return folder


def test_a_run_made_by_other_code_is_stale_reused_with_a_note_and_retrained_on_request(
    tmp_path, monkeypatch, capsys
):
    folder = finished_run(tmp_path, "cifar10-wrn-cn-00000000-seed0", 12.5)
    made = results.code_version()["sncn"]
    metrics = results.load_metrics(folder)
    assert metrics["code"] == results.code_version() and not results.is_stale(metrics)
    with results.run_lock(folder):
        assert results.reuse(folder) == metrics
    assert "STALE" not in capsys.readouterr().out
    assert [(r.name, r.status) for r in results.list_runs(tmp_path)] == [(folder.name, "fresh")]

    other_code(monkeypatch)
    assert results.is_stale(metrics) and results.is_stale({"clean_error": 1.0})  # unrecorded
    with results.run_lock(folder):
        assert results.reuse(folder) == metrics  # reused as it is ...
    printed = capsys.readouterr().out
    assert f"{folder.name}: STALE" in printed and "--retrain stale" in printed  # ... loudly
    (status,) = results.list_runs(tmp_path)
    assert (status.status, status.code) == ("stale", made)

    with results.run_lock(folder):
        assert results.reuse(folder, retrain=True) is None  # to be trained again, from scratch
    assert sorted(p.name for p in folder.iterdir()) == [results.LOCK]
    assert results.list_runs(tmp_path)[0].status == "incomplete"


def test_retrain_requests_cover_stale_runs_or_all_runs_finished_before(tmp_path, monkeypatch):
    old = finished_run(tmp_path, "old-seed0")
    other_code(monkeypatch)
    new = finished_run(tmp_path, "new-seed0")
    assert [r.status for r in results.list_runs(tmp_path)] == ["fresh", "stale"]

    with results.retrain_request(tmp_path, "stale") as request:
        assert request["runs"] == "stale" and results.requested(tmp_path) == request
        assert results.requested(tmp_path / "elsewhere") == {}  # other results folders: none
        assert results.reuse(new) is not None  # fresh: read back
        assert results.reuse(old) is None and not results.is_done(old)  # stale: cleared
    assert results.requested(tmp_path) == {}  # the request ends with the block

    finished_run(tmp_path, "old-seed0")
    with results.retrain_request(tmp_path, "all"):
        assert results.reuse(new) is None  # finished before the request
        again = finished_run(tmp_path, "new-seed0")  # retrained meanwhile
        assert results.reuse(again) is not None  # a second notebook reads it back
    with pytest.raises(ValueError, match="stale"):
        with results.retrain_request(tmp_path, "some"):
            pass


def test_tables_say_when_runs_behind_them_are_stale(tmp_path, monkeypatch):
    errors = {c: [10.0, 20.0, 30.0, 40.0, 50.0] for c in cifar_c.CORRUPTIONS}
    fresh = {"mce": 30.0, "clean_error": 5.0, "cifar_c": "generated", "errors": errors}
    fresh = results.save_run(results.run_dir(tmp_path, "a-seed0"), {}, fresh)
    rows = cifar_c.table_rows([("cifar10", "wrn", "basic", [fresh])])
    assert "STALE" not in results.save_table(rows, "t", tmp_path).read_text()

    other_code(monkeypatch)
    older = {**fresh, "code": {"sncn": "fedcba987654", "git": None}}
    rows = cifar_c.table_rows([("cifar10", "wrn", "basic", [fresh, older])])
    text = results.save_table(rows, "t", tmp_path, notes=["a note"]).read_text()
    assert "- a note\n" in text
    assert "STALE: 2 of the 2 runs" in text and "fedcba987654" in text and "--retrain" in text
    assert "STALE" not in (tmp_path / "tables" / "t.csv").read_text()
    plain = [dict(r) for r in rows]  # rows that do not know their runs: no note
    assert "STALE" not in results.save_table(plain, "t", tmp_path).read_text()


# --------------------------------------------------------------------------------------------
# identity: the CIFAR-C evaluated on names the run


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (tiny convolutions are slowest on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_adding_the_official_cifar_c_makes_a_new_run(tmp_path, monkeypatch, one_thread):
    root, out = tmp_path / "data", tmp_path / "results"
    fake_cifar(monkeypatch, tmp_path / "c")
    assert cifar_c.corrupted_test_data("cifar10", 10, root) == {
        "cifar_c": "generated", "images": 10, "seed": 0, "cells": "independent"
    }  # fmt: skip
    tiny = {"depth": 10, "widen_factor": 1}
    budget = dict(epochs=1, train_subset=20, test_subset=10, batch_size=10, root=root,
                  model_kwargs=tiny, device="cpu", progress=False)  # fmt: skip
    generated = cifar_c.run("cifar10", "wrn", "basic", out, **budget)
    assert generated["cifar_c"] == "generated"
    assert cifar_c.run("cifar10", "wrn", "basic", out, **budget) == generated  # read back

    shutil.copytree(tmp_path / "c", root / "CIFAR-10-C")  # the official files arrive
    official = cifar_c.corrupted_test_data("cifar10", 10, root)
    assert official["cifar_c"] == "official"
    metrics = cifar_c.run("cifar10", "wrn", "basic", out, **budget)
    assert metrics["cifar_c"] == "official"  # trained and evaluated again, in a new folder
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 2 and all(r.startswith("cifar10-wrn-basic-") for r in runs)
    params = [json.loads((out / "runs" / r / "params.json").read_text()) for r in runs]
    assert sorted(p["data"]["cifar_c"] for p in params) == ["generated", "official"]

    (folder,) = [
        out / "runs" / r for r, p in zip(runs, params, strict=True) if p["data"] == official
    ]
    before = (folder / "done").read_text()
    assert cifar_c.run("cifar10", "wrn", "basic", out, **budget, retrain=True) != metrics
    after = (folder / "done").read_text()  # trained again in its folder
    assert after != before and len(list((out / "runs").iterdir())) == 2
    cifar_c.run("cifar10", "wrn", "basic", out, **budget)
    assert (folder / "done").read_text() == after  # and read back since

    with open(root / "CIFAR-10-C" / "fog.npy", "r+b") as f:  # another (e.g. truncated) file
        f.truncate(1000)
    assert cifar_c.corrupted_test_data("cifar10", 10, root)["files"] != official["files"]


# --------------------------------------------------------------------------------------------
# concurrency


def test_a_locked_run_folder_waits_for_its_holder_or_names_it(tmp_path, capsys):
    folder = tmp_path / "runs" / "r-seed0"
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with results.run_lock(folder):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    assert f"pid {os.getpid()}" in results.lock_holder(folder)
    with pytest.raises(results.RunLocked, match=f"locked by pid {os.getpid()} on "):
        with results.run_lock(folder, timeout=0.2, poll=0.05):
            pass
    threading.Timer(0.3, release.set).start()
    with results.run_lock(folder, poll=0.05):  # waits for the holder, then holds it
        with results.run_lock(folder):  # the same thread may nest
            assert results.lock_holder(folder) is not None
    holder.join()
    assert "r-seed0: locked by pid" in capsys.readouterr().out
    assert results.lock_holder(folder) is None


@pytest.mark.parametrize("error", [PermissionError(errno.EACCES, "Permission denied"),
                                   OSError(errno.EROFS, "Read-only file system")])  # fmt: skip
def test_finished_runs_are_read_back_from_a_read_only_results_folder(tmp_path, monkeypatch, error):
    folder = finished_run(tmp_path, "r-seed0")
    (folder / results.LOCK).unlink()
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if Path(path).name == results.LOCK:
            raise error
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)  # no lock file can be made (as root, chmod can't)
    with results.run_lock(folder):
        assert results.reuse(folder) == results.load_metrics(folder)
    assert results.lock_holder(folder) is None


def test_a_run_folder_removed_while_waited_for_is_made_and_locked_again(tmp_path):
    folder = tmp_path / "runs" / "r-seed0"
    held, release = threading.Event(), threading.Event()

    def hold_and_remove() -> None:  # as remove_stale does
        with results.run_lock(folder):
            held.set()
            release.wait(10)
            shutil.rmtree(folder)

    holder = threading.Thread(target=hold_and_remove)
    holder.start()
    held.wait(10)
    threading.Timer(0.3, release.set).start()
    with results.run_lock(folder, timeout=10, poll=0.05):  # waits, then locks the new folder
        assert (folder / results.LOCK).is_file()
        assert f"pid {os.getpid()}" in results.lock_holder(folder)
    holder.join()
    assert results.lock_holder(folder) is None


HOLD_SCRIPT = """
import sys, time
from sncn import results

with results.run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(300)
"""


def test_the_lock_of_a_killed_holder_is_released(tmp_path):
    folder, script = tmp_path / "runs" / "r-seed0", tmp_path / "hold.py"
    script.write_text(HOLD_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, str(script), str(folder)], env=env,
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert process.stdout.readline() == "held\n"
        assert f"locked by pid {process.pid} on " in f"locked by {results.lock_holder(folder)}"
        with pytest.raises(results.RunLocked, match=f"locked by pid {process.pid} on "):
            with results.run_lock(folder, timeout=0):
                pass
    finally:
        process.kill()
        process.communicate()
    assert (folder / results.HOLDER).is_file()  # its record stays behind, but names nobody:
    assert results.lock_holder(folder) is None
    with results.run_lock(folder, timeout=0):
        assert f"pid {os.getpid()}" in results.lock_holder(folder)
    assert sorted(p.name for p in folder.iterdir()) == [results.LOCK]


FIT_SCRIPT = """
import json, sys, time
from pathlib import Path
import torch
from torch import nn
from sncn.train import Trainer, fit, sgd

run_dir, log = sys.argv[1], Path(sys.argv[2])
torch.manual_seed(0)
model = nn.Linear(4, 2)
trainer = Trainer(model, sgd(model, 0.1))

def batches(epoch, generator):
    deadline = time.monotonic() + 120  # both processes are about to call fit
    while len(list(log.parent.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(log, "a") as f:
        f.write(f"epoch {epoch}\\n")
    time.sleep(1.0)  # the other process reaches the lock meanwhile, even on a loaded machine
    x = torch.randn(8, 4, generator=generator)
    return [(x, (x[:, 0] > 0).long())]

(log.parent / f"ready-{sys.argv[3]}").touch()
print(json.dumps(fit(trainer, batches, 4, run_dir, seed=0, progress=False)))
"""


@pytest.mark.slow
def test_two_processes_on_one_run_folder_train_it_once(tmp_path):
    script, log, run = tmp_path / "fit.py", tmp_path / "epochs.log", tmp_path / "run"
    script.write_text(FIT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen([sys.executable, str(script), str(run), str(log), str(k)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    histories = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert histories[0] == histories[1] and [r["epoch"] for r in histories[0]] == [1, 2, 3, 4]
    assert log.read_text().splitlines() == [f"epoch {e}" for e in range(4)]  # trained once
    assert "run: locked by pid" in "".join(out for out, _ in outputs)  # the second one waited
    assert (run / "checkpoint.pt").is_file() and not list(run.glob("*.tmp"))


def test_writers_use_unique_temporary_names(tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace

    def replace(src, dst):
        replaced.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    run = results.run_dir(tmp_path, "r-seed0")
    results.save_run(run, {}, {"a": 1.0})
    results.save_run(run, {}, {"a": 2.0})
    results.save_table([{"a": 1}], "t", tmp_path)
    model = torch.nn.Linear(2, 2)
    batch = (torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))
    fit(Trainer(model, sgd(model, 0.1)), lambda e, g: [batch], 2, run, progress=False)
    ours = {"params.json", "metrics.json", "done", "t.csv", "t.md", "checkpoint.pt"}
    sources = [src for src, dst in replaced if dst in ours]
    assert {dst for _, dst in replaced} >= ours
    assert len(sources) == len(set(sources)) == 10  # 2 x 3 run files, 2 tables, 2 checkpoints
    assert all(src.startswith(f".{dst}.{os.getpid()}.") for src, dst in replaced if dst in ours)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


# --------------------------------------------------------------------------------------------
# the pipeline


def write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE: str = "smoke"\nRESULTS: str = "."')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(1)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}  # fmt: skip
    nbformat.write(nb, path)


def test_pipeline_lists_removes_and_retrains_stale_runs(tmp_path, monkeypatch, capsys):
    import papermill

    notebooks, root = tmp_path / "notebooks", tmp_path / "results"
    out = root / "smoke"
    notebooks.mkdir()
    write_notebook(notebooks / "01_first.ipynb")
    requests = []

    def execute_notebook(source, executed, parameters, **kwargs):
        # what a kernel started now would inherit
        requests.append(results.requested(parameters["RESULTS"]).get("runs"))
        Path(executed).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    stale = finished_run(out, "cifar10-wrn-cn-11111111-seed0")
    made = results.code_version()["sncn"]
    results.run_dir(out, "cifar10-wrn-sn-22222222-seed0")  # interrupted
    args = ["--profile", "smoke", "--notebooks", str(notebooks), "--results", str(root)]

    assert main(args) == 0
    assert "up to date" not in capsys.readouterr().out
    assert main(args) == 0
    assert "up to date, skipped" in capsys.readouterr().out
    assert requests == [None]

    other_code(monkeypatch)  # the code changed: its runs are stale, its notebooks out of date
    fresh = finished_run(out, "cifar10-wrn-basic-33333333-seed0")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "1 finished runs" in printed and "STALE" in printed and "up to date" not in printed

    assert main([*args, "--runs"]) == 0
    listed = capsys.readouterr().out
    assert "1 fresh, 1 stale, 1 incomplete" in listed
    assert f"stale      {stale.name}  sncn {made}, finished " in listed
    assert f"fresh      {fresh.name}  sncn {OTHER_CODE['sncn']}" in listed

    assert main([*args, "--retrain", "stale"]) == 0  # runs the notebook, the request on
    assert requests[-1] == "stale" and results.requested(out) == {}
    assert "retraining 1 stale runs" in capsys.readouterr().out

    assert main([*args, "--remove-stale"]) == 0
    assert "removed 1 stale runs" in capsys.readouterr().out
    assert not stale.exists() and fresh.exists()
    assert [r.status for r in results.list_runs(out)] == ["fresh", "incomplete"]
    assert main([*args, "--retrain", "stale"]) == 0  # nothing stale: an ordinary run
    printed = capsys.readouterr().out
    assert "no stale runs to retrain" in printed and "up to date, skipped" in printed
    assert run_pipeline("smoke", notebooks, root, retrain="all") == 0
    assert requests[-1] == "all"


def test_a_retrain_request_reaches_child_processes_only(tmp_path):
    """Kernels the pipeline starts inherit the request; a process it did not start (another
    pipeline on the same results folder) does not see it."""
    import subprocess
    import sys

    code = "from sncn import results; import sys; print(results.requested(sys.argv[1]))"
    outside = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(0); {code}",
                                str(tmp_path)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    with results.retrain_request(tmp_path, "stale"):
        child = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                               text=True, check=True)  # fmt: skip
    assert "'runs': 'stale'" in child.stdout
    assert outside.communicate()[0].strip() == "{}"
