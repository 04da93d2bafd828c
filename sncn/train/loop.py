"""The training loop: epochs of ``trainer.update``, a checkpoint after each, exact resume."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from sncn.train.base import Trainer
from sncn.utils import seed_everything

CHECKPOINT = "checkpoint.pt"


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed every random draw of ``epoch`` derives from (data order, augmentation, CN)."""
    return seed * 100_003 + epoch


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _save_atomically(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
) -> list[dict[str, float]]:
    """Train for ``epochs`` epochs, checkpointing after each into ``run_dir``.

    Every epoch starts by seeding everything from ``(seed, epoch)`` (:func:`epoch_seed`) and
    hands ``batches`` a generator seeded the same way, so an epoch's data order, augmentation and
    CrossNorm draws depend on nothing else. A run interrupted at any point and started again with
    the same arguments resumes after the last finished epoch and ends with exactly the numbers of
    an uninterrupted run (on the CPU; GPU kernels may be non-deterministic).

    Args:
        trainer: the trainer (its ``state_dict`` is what gets checkpointed).
        batches: ``batches(epoch, generator)`` -> iterable of training batches for that epoch.
        epochs: total number of epochs.
        run_dir: folder for ``checkpoint.pt``; None trains without checkpoints.
        seed: the run's seed.
        evaluate: called after each epoch; its values join the epoch's record.
        progress: show a tqdm bar per epoch (silenced by ``TQDM_DISABLE=1``).
        description: label of the progress bar.

    Returns:
        One record per epoch: ``epoch``, mean ``loss`` and other logged values, ``lr`` at the
        end, plus ``evaluate``'s values.
    """
    history: list[dict[str, float]] = []
    start = 0
    ckpt = None if run_dir is None else Path(run_dir) / CHECKPOINT
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=trainer.device, weights_only=False)
        trainer.load_state_dict(state["trainer"])
        history, start = state["history"], state["epoch"]
        if start > epochs:
            raise ValueError(f"{ckpt} is at epoch {start}, beyond the requested {epochs} epochs.")
    for epoch in range(start, epochs):
        seed_everything(epoch_seed(seed, epoch))
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        logs: dict[str, list[float]] = {}
        bar = tqdm(
            batches(epoch, generator),
            desc=f"{description} {epoch + 1}/{epochs}",
            disable=not progress or not _is_main(),
            leave=False,
        )
        for batch in bar:
            for key, value in trainer.update(batch).items():
                logs.setdefault(key, []).append(value)
            bar.set_postfix(loss=f"{logs['loss'][-1]:.3f}", refresh=False)
        record = {"epoch": epoch + 1}
        record.update({k: statistics.fmean(v) for k, v in logs.items() if k != "lr"})
        record["lr"] = logs["lr"][-1] if logs.get("lr") else float("nan")
        if evaluate is not None:
            record.update(evaluate(trainer))
        history.append(record)
        if ckpt is not None:
            if _is_main():
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                state = {"trainer": trainer.state_dict(), "history": history, "epoch": epoch + 1}
                _save_atomically(state, ckpt)
            if dist.is_initialized():
                dist.barrier()
    return history
