"""Progress a person can follow: fit's epoch lines and progress record, the pipeline's live line,
run k of n through the experiment grids, and a clear error for an unreadable checkpoint."""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import nbformat
import pytest
import torch
from torch import nn

from sncn.experiments import ablations, cifar_c, segmentation, semisupervised, sentiment
from sncn.pipeline import latest_progress, run_pipeline, show_progress
from sncn.train import Trainer, cosine_schedule, fit, loop, sgd
from sncn.utils import PROGRESS, format_seconds, progress_line, read_progress, write_progress


def tiny_run(steps: int = 4, delay: float = 0.0):
    """A linear classifier on random data: ``(trainer, batches)`` with ``steps`` batches."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    opt = sgd(model, lr=0.1, momentum=0.9, weight_decay=0.0)
    trainer = Trainer(model, opt, cosine_schedule(opt, 100))

    def batches(epoch, generator):
        x = torch.randn(steps * 4, 3, 2, 2, generator=generator)
        y = torch.randint(0, 3, (steps * 4,), generator=generator)
        out = []
        for i in range(steps):
            out.append((x[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4]))
        if delay:
            return _Slow(out, delay)
        return out

    return trainer, batches


class _Slow(list):
    """A list of batches that takes ``delay`` seconds to hand out each."""

    def __init__(self, items, delay):
        super().__init__(items)
        self.delay = delay

    def __iter__(self):
        for item in super().__iter__():
            time.sleep(self.delay)
            yield item


# ----------------------------------------------------------------------------------------------
# fit


def test_fit_prints_one_line_per_epoch_and_keeps_a_progress_record(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    trainer, batches = tiny_run(steps=5)
    run = tmp_path / "runs" / "cifar10-wrn-cn"
    history = fit(trainer, batches, 2, run, description="cifar10-wrn-cn", position=(3, 4))
    printed = capsys.readouterr()
    lines = printed.out.strip().splitlines()
    assert len(lines) == 2
    for epoch, (line, record) in enumerate(zip(lines, history, strict=True), 1):
        assert line.startswith(f"run 3/4 cifar10-wrn-cn epoch {epoch}/2: loss ")
        assert f"loss {record['loss']:.4g}, lr {record['lr']:.4g}" in line
        assert line.endswith("s)") and "(5 steps, " in line
    assert printed.err == ""  # TQDM_DISABLE=1 silences the bar even though progress=True
    record = read_progress(run / PROGRESS)
    assert record["run"] == "cifar10-wrn-cn" and record["position"] == [3, 4]
    assert (record["epoch"], record["epochs"], record["step"], record["steps"]) == (2, 2, 5, 5)
    assert record["state"] == "trained" and math.isfinite(record["loss"])  # the last step's
    assert record["started"] <= record["updated"] <= time.time()


def test_fit_without_progress_prints_nothing_but_still_records(tmp_path, capsys):
    trainer, batches = tiny_run()
    fit(trainer, batches, 1, tmp_path, progress=False)
    assert capsys.readouterr().out == ""
    assert read_progress(tmp_path / PROGRESS)["state"] == "trained"


def test_fit_records_progress_while_training(tmp_path, monkeypatch):
    """The record is rewritten during an epoch (at most every PROGRESS_INTERVAL s)."""
    trainer, batches = tiny_run(steps=3)
    seen = []

    def watching(epoch, generator):
        for batch in batches(epoch, generator):
            seen.append(read_progress(tmp_path / PROGRESS))
            yield batch

    fit(trainer, watching, 2, tmp_path, progress=False, description="r")
    # at the start of each epoch, then not again within 2 s
    assert [(r["epoch"], r["step"]) for r in seen] == [(1, 0)] * 3 + [(2, 0)] * 3
    monkeypatch.setattr(loop, "PROGRESS_INTERVAL", 0.0)
    seen.clear()
    fit(trainer, watching, 4, tmp_path, progress=False, description="r")  # epochs 3 and 4
    assert [(r["epoch"], r["step"]) for r in seen] == [(3, 0), (3, 1), (3, 2), (4, 0), (4, 1),
                                                       (4, 2)]  # fmt: skip
    assert seen[0]["steps"] is None and seen[0]["start_fraction"] == 0.5  # a generator; resumed


def test_truncated_checkpoint_names_the_file_and_what_to_do(tmp_path):
    trainer, batches = tiny_run()
    fit(trainer, batches, 1, tmp_path, progress=False)
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    trainer, batches = tiny_run()
    with pytest.raises(ValueError, match=r"cannot read the checkpoint .*checkpoint.pt .*truncated "
                       r"or corrupt.*Delete it to train this run from the start"):  # fmt: skip
        fit(trainer, batches, 2, tmp_path, progress=False)
    ckpt.write_bytes(b"")
    with pytest.raises(ValueError, match="checkpoint.pt"):
        fit(trainer, batches, 2, tmp_path, progress=False)


# ----------------------------------------------------------------------------------------------
# the line


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 42.4, 252, 3900)] == ["0s", "42s", "4m12s", "1h05m"]


def test_progress_line_estimates_the_time_left_at_the_run_pace():
    now = 1000.0
    record = {"run": "cifar10-wrn-cn", "position": [3, 4], "epoch": 2, "epochs": 2, "step": 50,
              "steps": 100, "loss": 1.8302, "state": "training", "started": now - 90,
              "start_fraction": 0.0, "updated": now}  # fmt: skip
    # 3/4 of the run in 90 s: 30 s more for it, 120 s for run 4
    line = progress_line(record, elapsed=400, now=now)
    assert line == (
        "run 3/4 cifar10-wrn-cn: epoch 2/2 step 50/100 loss 1.830 | 6m40s elapsed, ~2m30s left"
    )
    alone = {**record, "position": None, "start_fraction": 0.5}  # resumed half-way
    assert progress_line(alone, now=now).endswith("| 1m30s elapsed, ~1m30s left in this run")
    done = {**record, "state": "trained", "step": 100, "updated": now - 10}
    assert progress_line(done, now=now) == (
        "run 3/4 cifar10-wrn-cn: trained, evaluating | 1m20s elapsed, ~1m20s left"
    )
    shared = {**record, "position": [3, 7, 2]}  # 4 runs after it, trained 2 at a time
    assert progress_line(shared, now=now).startswith("run 3/7 cifar10-wrn-cn: epoch 2/2 ")
    assert progress_line(shared, now=now).endswith("| 1m30s elapsed, ~4m30s left")
    unknown = {"run": "x", "epoch": 1, "epochs": 3, "step": 7, "steps": None, "started": now}
    assert progress_line(unknown, now=now) == "x: epoch 1/3 step 7 | 0s elapsed"


def test_write_and_read_progress(tmp_path):
    write_progress(tmp_path / PROGRESS, {"run": "a", "epoch": 1})
    assert read_progress(tmp_path / PROGRESS) == {"run": "a", "epoch": 1}
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "bad.json").write_text("{not json")
    assert read_progress(tmp_path / "bad.json") is None
    assert read_progress(tmp_path / "missing.json") is None
    write_progress(tmp_path / "gone" / PROGRESS, {"run": "a"})  # no folder: skipped quietly


# ----------------------------------------------------------------------------------------------
# the pipeline's live line


def _record(out, name, **values):
    folder = out / "runs" / name
    folder.mkdir(parents=True, exist_ok=True)
    record = {"run": name, "position": [1, 2], "epoch": 1, "epochs": 3, "step": 5, "steps": 10,
              "loss": 1.5, "state": "training", "started": time.time(), "start_fraction": 0.0,
              **values}  # fmt: skip
    write_progress(folder / PROGRESS, record)


def test_latest_progress_is_the_newest_record_since_the_start(tmp_path):
    _record(tmp_path, "old")
    since = time.time() + 0.01
    assert latest_progress(tmp_path, since + 10) is None
    time.sleep(0.05)
    _record(tmp_path, "new")
    assert latest_progress(tmp_path, since)["run"] == "new"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_show_progress_prints_lines_in_a_log_and_rewrites_one_on_a_terminal(tmp_path):
    log = io.StringIO()
    with show_progress(tmp_path, "01_cifar_c", stream=log, interval=0.05):
        time.sleep(0.15)  # nothing yet: nothing shown
        _record(tmp_path, "cifar10-wrn-basic")
        time.sleep(0.3)
        _record(tmp_path, "cifar10-wrn-basic", epoch=2, step=1)
        time.sleep(0.3)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2  # one per epoch in a log, not one per look
    assert lines[0].startswith("[01_cifar_c] run 1/2 cifar10-wrn-basic: epoch 1/3 step 5/10 "
                               "loss 1.500 | 0s elapsed, ~")  # fmt: skip
    assert "epoch 2/3 step 1/10" in lines[1]

    screen = _Terminal()
    with show_progress(tmp_path, "01_cifar_c", stream=screen, interval=0.05):
        _record(tmp_path, "cifar10-wrn-sn")
        time.sleep(0.3)
    text = screen.getvalue()
    assert "\n" not in text and text.count("\r\x1b[K[01_cifar_c] run 1/2 cifar10-wrn-sn") >= 2
    assert text.endswith("\r\x1b[K")  # cleared at the end


@pytest.mark.slow
def test_pipeline_shows_progress_and_executed_copy_keeps_epoch_lines(tmp_path, capsys, monkeypatch):
    for name in ("TQDM_DISABLE", "PYTHONWARNINGS"):  # the pipeline sets what its kernels need
        monkeypatch.delenv(name, raising=False)
    notebooks, results = tmp_path / "notebooks", tmp_path / "results"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE: str = "smoke"\nRESULTS: str = "."')
    params.metadata["tags"] = ["parameters"]
    body = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from pathlib import Path\n"
        "from sncn.train import fit\n"
        "from test_progress import tiny_run\n"
        "trainer, batches = tiny_run(steps=6, delay=0.5)\n"
        "history = fit(trainer, batches, 2, Path(RESULTS) / 'runs' / 'tiny', description='tiny',\n"
        "              position=(1, 1))"
    )
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}  # fmt: skip
    nbformat.write(nb, notebooks / "01_train.ipynb")
    assert run_pipeline("smoke", notebooks, results) == 0
    printed = capsys.readouterr().out
    assert "[01_train] run 1/1 tiny: epoch " in printed, printed
    executed = nbformat.read(results / "smoke" / "notebooks" / "01_train.ipynb", as_version=4)
    (cell,) = [c for c in executed.cells if "history = fit(" in c.source]
    outputs = cell.outputs
    text = "".join(o.get("text", "") for o in outputs)
    assert {o.name for o in outputs} == {"stdout"}  # no progress bars, no warnings on stderr
    lines = text.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "run 1/1 tiny epoch 1/2",
        "run 1/1 tiny epoch 2/2",
    ]
    record = json.loads((results / "smoke" / "runs" / "tiny" / PROGRESS).read_text())
    assert record["state"] == "trained"


# ----------------------------------------------------------------------------------------------
# run k of n through the grids


@pytest.fixture
def positions(monkeypatch):
    seen = []

    def fake_run(*args, position=None, **kwargs):
        seen.append(tuple(position))
        return {"mce": 30.0, "clean_error": 5.0, "cifar_c": "generated"}

    for module in (cifar_c, semisupervised, segmentation, sentiment):
        monkeypatch.setattr(module, "run", fake_run)
    return seen


def test_grids_number_their_runs(positions, tmp_path):
    cifar_c.run_grid(["cifar10"], ["wrn"], ["basic", "sn"], [0, 1], tmp_path)
    assert positions == [(1, 4), (2, 4), (3, 4), (4, 4)]
    positions.clear()
    semisupervised.run_grid(["ra", "ra_cn_all"], [250], [0], tmp_path)
    assert positions == [(1, 2), (2, 2)]
    positions.clear()
    segmentation.run_grid(["baseline", "sn", "cn"], [0], tmp_path, data=None)
    assert positions == [(1, 3), (2, 3), (3, 3)]
    positions.clear()
    sentiment.run_grid(["baseline"], [0, 1], tmp_path, data=None)
    assert positions == [(1, 2), (2, 2)]


def test_ablations_number_their_runs_across_studies_and_backbone_tables(positions, tmp_path):
    ablations.run_all(["table5_order"], ["allconv"], "cifar10", "wrn", [0], tmp_path)
    n = len(ablations.WRN_STUDIES["table5_order"]) + sum(
        len(arms) for arms in ablations.backbone_studies(["allconv"], "cifar10").values()
    )
    assert positions == [(k, n) for k in range(1, n + 1)]


def test_bars_follow_tqdm_disable_set_after_tqdm_was_imported(monkeypatch, capsys):
    # tqdm reads $TQDM_DISABLE once, at import; sncn's bars read it at each call
    from sncn.utils import _NoBar, bars_off, progress_bar

    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert bars_off() and isinstance(progress_bar(3), _NoBar)
    for value in ("", "0", "false", "No"):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert not bars_off()
    monkeypatch.delenv("TQDM_DISABLE")
    bar = progress_bar(3, desc="shown")
    assert not isinstance(bar, _NoBar)
    bar.close()
    assert "shown" in capsys.readouterr().err
