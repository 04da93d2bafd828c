"""Small helpers shared across sncn: seeding, devices, progress records and running calls in
worker processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) in one place.

    Args:
        seed: the run's seed.

    Returns:
        A fresh CPU ``torch.Generator`` seeded with ``seed``, for code that takes an explicit
        generator (the CrossNorm switch, samplers).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds third-party code using the legacy API
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def device_generator(generator: torch.Generator, device: str | torch.device) -> torch.Generator:
    """A generator on ``device`` for random draws made there, derived from ``generator``.

    ``generator`` itself when it already lives on ``device`` (a CPU generator for a CPU pipeline:
    the draws are exactly those of ``generator``); otherwise a new generator on ``device``, seeded
    with one draw of ``generator`` (made on ``generator``'s device: no wait for ``device``). Draws
    from the result then happen on ``device`` without copies to it, so a GPU data pipeline
    seeded per epoch never synchronises with the host.

    Args:
        generator: the source of randomness (e.g. the epoch's CPU generator).
        device: where the random draws are needed.

    Returns:
        A ``torch.Generator`` on ``device``.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if generator.device == device:
        return generator
    seed = int(torch.randint(0, 2**63 - 1, (), generator=generator, device=generator.device))
    return torch.Generator(device=device).manual_seed(seed)


def resolve_device(device: str | None = None) -> torch.device:
    """``device`` as a ``torch.device``; None means CUDA when available, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


# ----------------------------------------------------------------------------------------------
# Progress records: what a training run is doing, for a person watching from another process

#: File name of the progress record :func:`sncn.train.fit` keeps in its run folder.
PROGRESS = ".progress.json"


def write_progress(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write a progress record as JSON, atomically (a temporary file, then a rename).

    Progress is for display only: a write that fails (a full disk, a vanished folder) is
    skipped silently rather than stopping training.

    Args:
        path: the record's file, e.g. ``<run folder>/.progress.json``.
        record: JSON-serialisable values (see :func:`progress_line` for the keys it reads).
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def read_progress(path: str | os.PathLike) -> dict[str, Any] | None:
    """The progress record in ``path``, or None when it is missing or unreadable."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def format_seconds(seconds: float) -> str:
    """``seconds`` as ``42s``, ``4m12s`` or ``1h05m``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def run_fraction(record: dict[str, Any]) -> float | None:
    """How much of a run's training is done, in [0, 1], from its record; None if unknown."""
    epochs, epoch = record.get("epochs") or 0, record.get("epoch") or 0
    if record.get("state") == "trained":
        return 1.0
    if not epochs or not epoch:
        return None
    steps, step = record.get("steps"), record.get("step") or 0
    within = step / steps if steps else 0.0
    return min(1.0, (epoch - 1 + within) / epochs)


def progress_line(
    record: dict[str, Any], elapsed: float | None = None, now: float | None = None
) -> str:
    """One line that says where a run is, e.g.
    ``run 3/4 cifar10-wrn-cn: epoch 1/2 step 120/250 loss 1.830 | 4m12s elapsed, ~9m left``.

    The time left is estimated at the run's own pace since it (re)started: the rest of this run's
    training, plus, with its place in a grid (``position`` ``[k, n]``), as long again for each of
    the ``n - k`` runs after it, shared out among the ``K`` runs trained at once where
    ``position`` is ``[k, n, K]``. Evaluation is not counted.

    Args:
        record: a progress record (:func:`write_progress`): ``run``, ``position`` (``[k, n]``,
            ``[k, n, K]`` or None), ``epoch``, ``epochs``, ``step``, ``steps`` (None when
            unknown), ``loss``,
            ``state`` (``"training"`` or ``"trained"``), ``started`` (``time.time()`` when this
            process began the run), ``start_fraction`` (the share of the run done then: a resumed
            run's) and ``updated`` (``time.time()`` of the record).
        elapsed: the seconds to show as elapsed (e.g. since the notebook began); None: the run's.
        now: the current ``time.time()`` (default: now).

    Returns:
        The line, without a newline.
    """
    now = time.time() if now is None else now
    head = record.get("run", "?")
    position = record.get("position")
    if position:
        head = f"run {position[0]}/{position[1]} {head}"
    trained = record.get("state") == "trained"
    if trained:
        body = "trained, evaluating"
    else:
        steps = record.get("steps")
        body = f"epoch {record.get('epoch', '?')}/{record.get('epochs', '?')}"
        body += f" step {record.get('step', 0)}" + (f"/{steps}" if steps else "")
        if record.get("loss") is not None:
            body += f" loss {record['loss']:.3f}"
    run_elapsed = (record.get("updated", now) if trained else now) - record.get("started", now)
    tail = f"{format_seconds(run_elapsed if elapsed is None else elapsed)} elapsed"
    fraction, first = run_fraction(record), record.get("start_fraction", 0.0)
    if fraction is not None and fraction - first > 0.005:
        total = run_elapsed / (fraction - first)  # the whole run's training at this pace
        left = total * (1 - fraction)
        if position:  # the runs after this one, K at a time
            left += total * (position[1] - position[0]) / (position[2] if position[2:] else 1)
        if left > 0 or not trained:
            tail += f", ~{format_seconds(left)} left" + ("" if position else " in this run")
    return f"{head}: {body} | {tail}"


class _NoBar:
    """What callers use of a tqdm bar, doing nothing (iterating passes ``iterable`` through)."""

    def __init__(self, iterable: Any = None) -> None:
        self.iterable = () if iterable is None else iterable

    def __iter__(self) -> Any:
        return iter(self.iterable)

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *_exc: object) -> None: ...

    def set_description(self, _text: str) -> None: ...

    def set_postfix(self, **_values: Any) -> None: ...

    def update(self, _n: int) -> None: ...

    def close(self) -> None: ...


def bars_off() -> bool:
    """Whether ``$TQDM_DISABLE`` asks for no progress bars (any value but empty, 0, false, no),
    read at the call: tqdm reads it once, when it is imported, and not at all for a bar given
    ``disable=``, so every bar of sncn is made by :func:`progress_bar`, which asks here."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def progress_bar(
    total: int | None = None, show: bool = True, iterable: Any = None, **kwargs: Any
) -> Any:
    """A tqdm bar (``tqdm(iterable, total=total, **kwargs)``) when ``show``, tqdm is installed
    and :func:`bars_off` is False, else a silent stand-in with the same iteration,
    ``update``, ``set_description``, ``set_postfix``, ``close`` and ``with``: the library
    (layers, models, corruptions, evaluation) needs only torch, torchvision and numpy."""
    if show and not bars_off():
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return _NoBar(iterable)
        # disable=False: not tqdm's own reading of $TQDM_DISABLE, made once at its import
        return tqdm(iterable, total=total, **{"disable": False, **kwargs})
    return _NoBar(iterable)


# ----------------------------------------------------------------------------------------------
# Several calls at once, in worker processes (several small runs sharing one GPU)

T = TypeVar("T")


def run_concurrently(
    function: Callable[..., T],
    calls: Sequence[Mapping[str, Any]],
    workers: int,
    labels: Sequence[str] | None = None,
    failure_notes: Sequence[str] | None = None,
) -> list[T]:
    """``[function(**kwargs) for kwargs in calls]``, computed by ``workers`` processes at once.

    The processes are started with the ``spawn`` method (safe with CUDA and threads; each
    imports torch afresh, a few seconds) and each takes the next call as soon as it has finished
    one. Each limits torch's CPU threads to ``os.cpu_count() // workers`` (at least 1), so that
    the workers do not oversubscribe the CPU; on CUDA they all share the default GPU. Nothing but
    ``kwargs`` reaches a call: ``function`` must be importable by name (a module-level function)
    and must seed what it draws itself, so its result does not depend on the process it runs
    in. One line per finished call is printed: ``<label>: done in 4m12s``.

    If a call raises, the calls not yet started are cancelled and the running ones are stopped
    (their processes terminated: a training run resumes from its last checkpoint next time);
    then :class:`RuntimeError` names the call, from the call's own exception (whose cause holds
    the worker's traceback). An interrupt (``KeyboardInterrupt``) stops the workers the same
    way. No worker outlives the function.

    Args:
        function: a module-level function called as ``function(**kwargs)``.
        calls: the keyword arguments of each call (picklable).
        workers: processes at once (at most ``len(calls)`` are started).
        labels: what to call each call in the printed lines and errors (default ``call k/n``).
        failure_notes: said after the error of a failed call, one per call (e.g. where its
            files are).

    Returns:
        The results, in the order of ``calls``.

    Raises:
        ValueError: ``workers`` is below 1.
        RuntimeError: a call raised (the message names it; the cause is its exception).
    """
    if workers < 1:
        raise ValueError(f"workers must be 1 or more (1: one call at a time), got {workers}")
    labels = labels or [f"call {k}/{len(calls)}" for k in range(1, len(calls) + 1)]
    if len(labels) != len(calls) or (failure_notes and len(failure_notes) != len(calls)):
        raise ValueError("labels and failure_notes need one entry per call")
    if not calls:
        return []
    workers = min(workers, len(calls))
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=torch.set_num_threads, initargs=(threads,))  # fmt: skip
    out: list[Any] = [None] * len(calls)
    try:
        futures: dict[Future, int] = {
            pool.submit(_timed_call, function, dict(kw)): k for k, kw in enumerate(calls)
        }
        for future in as_completed(futures):
            k = futures[future]
            error = future.exception()
            if error is not None:
                note = f" {failure_notes[k]}" if failure_notes else ""
                raise RuntimeError(f"{labels[k]} failed ({type(error).__name__}: {error})."
                                   f"{note}") from error  # fmt: skip
            out[k], seconds = future.result()
            print(f"{labels[k]}: done in {format_seconds(seconds)}", flush=True)
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    return out


def _timed_call(function: Callable[..., T], kwargs: dict[str, Any]) -> tuple[T, float]:
    """``function(**kwargs)`` and the seconds it took (what a worker of
    :func:`run_concurrently` runs)."""
    start = time.perf_counter()
    return function(**kwargs), time.perf_counter() - start


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the pool's waiting calls, terminate its workers and wait for them to exit."""
    # the executor's own processes (a private attribute; Python 3.14 adds terminate_workers)
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + 30
    for process in processes:
        process.join()
        # the pool's own thread may have reaped it first: its exit code then shows a moment later
        while process.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.01)
    pool.shutdown(wait=True)
