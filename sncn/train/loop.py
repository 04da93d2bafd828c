"""The training loop: epochs of ``trainer.update``, a checkpoint after each, exact resume."""

from __future__ import annotations

import functools
import inspect
import math
import os
import pickle
import statistics
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from sncn import results
from sncn.train.base import Trainer
from sncn.utils import PROGRESS, format_seconds, progress_bar, seed_everything, write_progress

CHECKPOINT = "checkpoint.pt"

#: Seconds between rewrites of a run's progress record during an epoch (:func:`fit`).
PROGRESS_INTERVAL = 2.0


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed every random draw of ``epoch`` derives from (data order, augmentation, CN)."""
    return seed * 100_003 + epoch


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _save_atomically(obj: dict, path: Path) -> None:
    tmp = results.temporary_path(path)  # unique: concurrent writers never share it
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _holding_run_dir(function: Callable) -> Callable:
    """``function`` run holding the lock of its ``run_dir`` (:func:`sncn.results.run_lock`) in
    the main process; without a ``run_dir``, or on the other ranks, it runs as it is."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        run_dir = signature.bind(*args, **kwargs).arguments.get("run_dir")
        if run_dir is None or not _is_main():
            return function(*args, **kwargs)
        with results.run_lock(run_dir):
            return function(*args, **kwargs)

    return wrapper


@_holding_run_dir
def fit(
    trainer: Trainer,
    batches: Callable[[int, torch.Generator], Iterable],
    epochs: int,
    run_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    evaluate: Callable[[Trainer], dict[str, float]] | None = None,
    progress: bool = True,
    description: str = "train",
    position: tuple[int, ...] | None = None,
) -> list[dict[str, float]]:
    """Train for ``epochs`` epochs, checkpointing after each into ``run_dir``.

    Every epoch starts by seeding everything from ``(seed, epoch)`` (:func:`epoch_seed`) and
    hands ``batches`` a generator seeded the same way, so an epoch's data order, augmentation and
    CrossNorm draws depend on nothing else. A run interrupted at any point and started again with
    the same arguments resumes after the last finished epoch and ends with exactly the numbers of
    an uninterrupted run (on the CPU; GPU kernels may be non-deterministic).

    The main process holds the lock of ``run_dir`` throughout (:func:`sncn.results.run_lock`):
    a second process given the same folder waits, then resumes from the finished checkpoint
    without training again. Checkpoints are written under unique temporary names and renamed into
    place, and record the code version; resuming a checkpoint made by other code prints a note.
    A checkpoint that cannot be read (truncated, corrupt) stops with an error naming it.

    Within an epoch nothing waits for the device: each step is ``trainer.update(batch,
    sync=False)``, whose logged values stay on the device until the epoch ends and are then read
    at once (one wait per epoch; the means are those of the per-step ``float`` values).

    For a person watching: with ``progress``, a tqdm bar per epoch and one printed line at the end
    of each epoch (``run 3/4 <description> epoch 1/2: loss 1.8302, lr 0.1 (250 steps, 4m12s)``).
    With a ``run_dir``, the main process also keeps ``<run_dir>/.progress.json``
    (:data:`sncn.utils.PROGRESS`, rewritten at most every :data:`PROGRESS_INTERVAL` seconds) with
    the run's place, epoch, step, loss and start time, which ``python -m sncn.pipeline`` shows
    while a notebook runs. The loss shown during an epoch is the step's on the CPU; on a GPU it
    is the newest one copied back without waiting (a step or so behind); at the end of an epoch,
    the record holds its last step's.

    Args:
        trainer: the trainer (its ``state_dict`` is what gets checkpointed).
        batches: ``batches(epoch, generator)`` -> iterable of training batches for that epoch.
        epochs: total number of epochs.
        run_dir: folder for ``checkpoint.pt``; None trains without checkpoints.
        seed: the run's seed.
        evaluate: called after each epoch; its values join the epoch's record.
        progress: show a tqdm bar per epoch (silenced by ``TQDM_DISABLE=1``) and print one line
            per epoch.
        description: the run's label in the bar, the epoch lines and the progress record.
        position: ``(k, n)``: this is run ``k`` of the ``n`` of a grid (shown; None: not shown);
            ``(k, n, K)`` when K of them train at once (the time left counts it).

    Returns:
        One record per epoch: ``epoch``, mean ``loss`` and other logged values, ``lr`` at the
        end, plus ``evaluate``'s values.
    """
    history: list[dict[str, float]] = []
    start = 0
    ckpt = None if run_dir is None else Path(run_dir) / CHECKPOINT
    if ckpt is not None and ckpt.exists():
        try:
            state = torch.load(ckpt, map_location=trainer.device, weights_only=False)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
            raise ValueError(
                f"cannot read the checkpoint {ckpt} ({type(e).__name__}: {e}); it is truncated or "
                f"corrupt (an interrupted copy, a full disk). Delete it to train this run from "
                f"the start, or put back a good copy; nothing else in {ckpt.parent} has to go."
            ) from e
        trainer.load_state_dict(state["trainer"])
        history, start = state["history"], state["epoch"]
        if state.get("code") != results.code_version()["sncn"]:
            print(f"{ckpt}: made by other code (sncn {state.get('code', 'unrecorded')}; this is "
                  f"{results.code_version()['sncn']}); resuming it with this code. Retrain to "
                  "start over with one code version.", flush=True)  # fmt: skip
        if start > epochs:
            raise ValueError(f"{ckpt} is at epoch {start}, beyond the requested {epochs} epochs.")
    label = f"run {position[0]}/{position[1]} {description}" if position else description
    shown = progress and _is_main()
    watch = None
    if run_dir is not None and _is_main():
        watch = _ProgressRecord(Path(run_dir) / PROGRESS, description, position, epochs, start)
    for epoch in range(start, epochs):
        seed_everything(epoch_seed(seed, epoch))
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        logs: dict[str, list[Tensor | float]] = {}
        latest = _LatestLoss()
        began = time.monotonic()
        loader = batches(epoch, generator)
        try:
            steps = len(loader)
        except TypeError:  # a generator, an iterable dataset: the step count is not known
            steps = None
        if watch is not None:
            watch.update(force=True, epoch=epoch + 1, step=0, steps=steps)
        bar = progress_bar(steps, shown, loader, desc=f"{label} {epoch + 1}/{epochs}",
                           leave=False)  # fmt: skip
        for step, batch in enumerate(bar, 1):
            for key, value in trainer.update(batch, sync=False).items():
                logs.setdefault(key, []).append(value)
            loss = latest.update(logs["loss"][-1])
            if loss is not None:
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            if watch is not None:
                watch.update(step=step, **({} if loss is None else {"loss": loss}))
        logs = _read_logs(logs)  # the epoch's one wait for the device
        if watch is not None and logs.get("loss"):
            watch.update(loss=logs["loss"][-1])
        record = {"epoch": epoch + 1}
        record.update({k: statistics.fmean(v) for k, v in logs.items() if k != "lr"})
        record["lr"] = logs["lr"][-1] if logs.get("lr") else float("nan")
        if evaluate is not None:
            record.update(evaluate(trainer))
        history.append(record)
        if shown:
            print(_epoch_line(label, epochs, record, len(logs.get("loss", [])),
                              time.monotonic() - began), flush=True)  # fmt: skip
        if ckpt is not None:
            if _is_main():
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                state = {"trainer": trainer.state_dict(), "history": history, "epoch": epoch + 1,
                         "code": results.code_version()["sncn"]}  # fmt: skip
                _save_atomically(state, ckpt)
            if dist.is_initialized():
                dist.barrier()
    if watch is not None:
        watch.update(force=True, state="trained")
    return history


def _read_logs(logs: dict[str, list[Tensor | float]]) -> dict[str, list[float]]:
    """The logged values as floats: the tensors among them read from the device at once (one
    stacked copy per dtype), each to the float ``float(tensor)`` gives."""
    tensors = [v for values in logs.values() for v in values if isinstance(v, Tensor)]
    read: dict[int, float] = {}
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        same = [t for t in tensors if t.dtype == dtype]
        read.update(zip(map(id, same), torch.stack(same).tolist(), strict=True))
    return {k: [read[id(v)] if isinstance(v, Tensor) else v for v in values]
            for k, values in logs.items()}  # fmt: skip


class _LatestLoss:
    """The newest step loss the host can know without waiting for the device, for display.

    A loss on the CPU is read at once. A loss on an accelerator is copied to pinned host memory
    without blocking, and shown once that copy has completed (an event, polled at later steps);
    meanwhile the previous value stays on display and no further copy is queued.
    """

    def __init__(self) -> None:
        self.value: float | None = None
        self.pending: tuple[Tensor, torch.Event] | None = None

    def update(self, loss: Tensor | float) -> float | None:
        """Offer this step's loss; return the newest one known on the host (None: none yet)."""
        if not isinstance(loss, Tensor) or loss.device.type == "cpu":
            self.value = float(loss)
            return self.value
        if self.pending is not None and self.pending[1].query():
            self.value, self.pending = float(self.pending[0]), None
        if self.pending is None:
            host = torch.empty((), dtype=loss.dtype, pin_memory=True)
            host.copy_(loss.detach(), non_blocking=True)
            done = torch.Event(loss.device)
            done.record()
            self.pending = (host, done)
        return self.value


def _epoch_line(
    label: str, epochs: int, record: dict[str, float], steps: int, seconds: float
) -> str:
    """``<label> epoch 1/2: loss 1.8302, lr 0.1, error 45.2 (250 steps, 4m12s)``."""
    shown = {k: v for k, v in record.items() if k != "epoch" and isinstance(v, int | float)}
    values = ", ".join(f"{k} {v:.4g}" for k, v in shown.items() if math.isfinite(v))
    return (
        f"{label} epoch {record['epoch']}/{epochs}: {values} "
        f"({steps} steps, {format_seconds(seconds)})"
    )


class _ProgressRecord:
    """A run's progress record (:func:`sncn.utils.write_progress`), rewritten at most every
    :data:`PROGRESS_INTERVAL` seconds (always when forced)."""

    def __init__(
        self,
        path: Path,
        run: str,
        position: tuple[int, ...] | None,
        epochs: int,
        start: int,
    ) -> None:
        self.path, self.last = path, -math.inf
        self.record = {
            "run": run,
            "position": list(position) if position else None,
            "epoch": start + 1,
            "epochs": epochs,
            "step": 0,
            "steps": None,
            "loss": None,
            "state": "training",
            "started": time.time(),
            "start_fraction": start / epochs if epochs else 0.0,
        }

    def update(self, force: bool = False, **values) -> None:
        self.record.update(values)
        now = time.monotonic()
        if force or now - self.last >= PROGRESS_INTERVAL:
            self.record["updated"] = time.time()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_progress(self.path, self.record)
            self.last = now
