"""Results on disk: run folders, tables (csv + markdown), figures, and the paper's numbers.

Layout under a profile's results folder (``results/<profile>/``)::

    tables/<name>.csv, tables/<name>.md     one table, ours next to the paper's
    figures/<name>.png (+ .pdf)             one figure, named after the paper's figure
    runs/<run>/params.json, metrics.json    one training/evaluation run; ``done`` when finished
    runs/<run>/.lock, .lock.holder          held by the process working on the run; who that is

Notebooks share state only through these files (and a ``--retrain`` request, which the pipeline
passes to its kernels in the environment: :func:`retrain_request`).

A run's metrics record the code version that made them (``code``: :func:`code_version`); a
finished run made by other code is *stale*: it is read back with a printed note, the tables made
from it say so (:class:`Rows`, :func:`save_table`), and it is trained again on request
(:func:`reuse`'s ``retrain``, :func:`retrain_request`, ``python -m sncn.pipeline --retrain``).
Every file is written under a unique temporary name and renamed into place, and one process at a
time works on a run folder (:func:`run_lock`), so concurrent processes neither crash nor train a
run twice.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock

from sncn.data import SAMPLE_ENV, SAMPLE_LABEL, samples_used

Row = Mapping[str, Any]

#: The package whose sources make the code version.
PACKAGE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------
# code version, atomic writes, locks
# ---------------------------------------------------------------------------------------------


def source_hash(package: str | os.PathLike = PACKAGE) -> str:
    """A content hash of a package's sources: the first 12 hex digits of a SHA-256 over its
    ``.py`` files (their sorted relative paths and bytes).

    For ``sncn`` this covers the whole package, not only what a run imports: an edit anywhere
    (layers, models, trainers, data, corruptions, metrics, but also tables or the pipeline) changes
    it. That is conservative and needs no import graph; it works without git and in an installed
    package.

    Args:
        package: the package folder (default: ``sncn``).
    """
    package = Path(package)
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py"), key=lambda p: p.relative_to(package).as_posix()):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _git_commit(folder: Path) -> str | None:
    """The git commit checked out at ``folder``, or None (no git, not a checkout)."""
    if not (folder / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def code_version() -> dict[str, str | None]:
    """The code this process runs: ``{"sncn": source_hash(), "git": commit or None}``.

    Computed once per process (the sources are hashed when :mod:`sncn.results` is imported), so
    files edited while a process runs do not change what it records. ``sncn`` decides whether a
    run is stale (:func:`is_stale`); ``git`` is recorded for the reader (the commit alone misses
    uncommitted edits).
    """
    return {"sncn": _SOURCES, "git": _commit()}


_SOURCES = source_hash()


@functools.cache
def _commit() -> str | None:
    return _git_commit(PACKAGE.parent)


def environment() -> dict[str, str | None]:
    """The software a run ran with, for the reader: Python, the versions of torch, torchvision
    and numpy installed (None when one is not), torch's CUDA build (None for a CPU build or when
    torch is not imported) and the machine's architecture. Not part of staleness."""
    import sys
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    torch = sys.modules.get("torch")
    return {
        "python": platform.python_version(),
        "torch": version("torch"),
        "torchvision": version("torchvision"),
        "numpy": version("numpy"),
        "cuda": getattr(getattr(torch, "version", None), "cuda", None),
        "machine": platform.machine(),
    }


def made_by(metrics: Mapping[str, Any]) -> str | None:
    """The ``sncn`` code version recorded in a run's metrics (None when there is none)."""
    code = metrics.get("code")
    return code.get("sncn") if isinstance(code, Mapping) else None


def is_stale(metrics: Mapping[str, Any]) -> bool:
    """Whether a run's metrics were made by other code than this process runs (their ``code``
    differs from :func:`code_version`, or they record none: made before versions were kept)."""
    return made_by(metrics) != code_version()["sncn"]


def temporary_path(path: str | os.PathLike) -> Path:
    """A unique temporary name beside ``path`` (``.<name>.<pid>.<random>.tmp``) to write to and
    then ``os.replace`` onto ``path``: processes and threads writing the same file never share
    it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (folders created) through a unique temporary file renamed into
    place: a reader sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "x") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: The lock file of a folder (:func:`run_lock`).
LOCK = ".lock"

#: The record of who holds the lock of a folder (:func:`run_lock`), beside the lock file.
HOLDER = ".lock.holder"


class RunLocked(TimeoutError):
    """A folder stayed locked by another process (or thread) for longer than the timeout."""


def _file_lock(folder: Path) -> filelock.BaseFileLock:
    """The lock of ``folder``: one instance per lock file in this process (``is_singleton``)
    whose holds count per thread (``thread_local``, the default), so a thread may nest blocks
    while another thread contends through a descriptor of its own, as another process would.
    Never downgraded to a :class:`filelock.SoftFileLock` (``fallback_to_soft=False``): a lock
    that outlives its holder's crash would leave the folder locked."""
    path = os.path.abspath(folder / LOCK)
    return filelock.FileLock(path, is_singleton=True, fallback_to_soft=False)


def _describe_holder(folder: Path) -> str:
    """The holder of ``folder``'s lock as its record (:data:`HOLDER`) names it. Call it only
    while the lock is held: a record left by a holder that died names nobody."""
    try:
        info = json.loads((folder / HOLDER).read_text())
    except (OSError, ValueError):  # not written yet, or gone meanwhile
        info = None
    if not isinstance(info, dict) or not info:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} (since {info.get('since')})"


def lock_holder(folder: str | os.PathLike) -> str | None:
    """Who holds the lock of ``folder`` (pid, host, since when), or None when nobody does.

    It asks the lock itself, through a descriptor of its own (so it sees a hold of this very
    thread too), and reads the holder's record only if the lock is taken. The lock file is not
    created: a folder without one, or one this process cannot open it in, is not locked.
    """
    folder = Path(folder)
    if not (folder / LOCK).is_file():
        return None
    probe = filelock.FileLock(os.path.abspath(folder / LOCK), fallback_to_soft=False)
    try:
        probe.acquire(timeout=0)
    except filelock.Timeout:
        return _describe_holder(folder)
    except OSError:  # cannot open the lock file (a read-only folder), or it went away
        return None
    probe.release()
    return None


def _read_only(error: OSError) -> bool:
    """Whether ``error`` says the lock file cannot be made or opened for writing here."""
    return isinstance(error, PermissionError) or error.errno == errno.EROFS


def _acquire(lock: filelock.BaseFileLock, folder: Path, timeout: float | None, poll: float) -> bool:
    """Take ``lock`` (the lock of ``folder``); wait (printing the holder once) if needed.

    Returns:
        False when the lock file cannot be made (a read-only folder: nobody can write there,
        there is nothing to guard), else True.
    """
    start, told = time.monotonic(), False
    while True:
        folder.mkdir(parents=True, exist_ok=True)  # again when removed meanwhile (remove_stale)
        waited = time.monotonic() - start
        wait = 0.0 if not told else -1.0 if timeout is None else max(0.0, timeout - waited)
        try:
            lock.acquire(timeout=wait, poll_interval=poll)
            return True
        except filelock.Timeout:  # (a TimeoutError, so an OSError: caught first)
            pass
        except FileNotFoundError:  # the folder was removed while we waited: make it again
            continue
        except OSError as error:
            if _read_only(error):
                return False
            raise
        holder = _describe_holder(folder)
        if timeout is not None and time.monotonic() - start >= timeout:
            raise RunLocked(
                f"{folder} is locked by {holder}, which is working on it; gave up after "
                f"{timeout:g} s. Wait for it to finish, or end that process."
            )
        if not told:
            print(f"{folder.name}: locked by {holder}, which is working on it; waiting for it "
                  "to finish ...", flush=True)  # fmt: skip
            told = True


@contextlib.contextmanager
def run_lock(
    folder: str | os.PathLike, *, timeout: float | None = None, poll: float = 1.0
) -> Iterator[Path]:
    """Hold the lock of a run folder (any folder) for the block: one process at a time.

    The lock is a :class:`filelock.FileLock` on ``<folder>/.lock``: an exclusive ``flock`` on
    POSIX, a ``LockFileEx`` lock on Windows (so Windows is locked too). The
    operating system releases it when the holder exits, however it ends, so a crashed process
    never leaves a folder locked. The holder records itself (pid, host, start time) in a file
    beside it, ``<folder>/.lock.holder`` (:data:`HOLDER`), written (renamed into place) once the
    lock is taken and removed before it is let go: the lock file is the lock's alone (on Windows
    its locked bytes cannot even be read by others), and a record left by a killed holder is
    harmless, as it is read only while the lock is taken (:func:`lock_holder`) and the next
    holder replaces it.

    A process that finds the folder locked prints the holder once and waits for it to finish
    (then it usually finds the run done and reads it back); with ``timeout`` it gives up after
    that many seconds with :class:`RunLocked`, naming the holder. The same thread may nest
    blocks on one folder (an experiment's run holds its folder while :func:`sncn.train.fit`
    checkpoints into it); other threads of the process wait like other processes. A folder
    removed while waiting for it (:func:`remove_stale`) is made again and locked anew. Not
    locked in a folder where the lock file cannot be made (read-only: finished runs can still be
    read there). On a file system without working file locks it raises (``OSError``) rather
    than fall back to filelock's :class:`~filelock.SoftFileLock`, which a crash leaves behind.

    Args:
        folder: the folder (created if missing).
        timeout: seconds to wait for another holder (None: as long as it takes; 0: not at all).
        poll: seconds between attempts while waiting.

    Yields:
        The folder, as a Path.

    Raises:
        RunLocked: another process (or thread) held the lock for longer than ``timeout``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = _file_lock(folder)
    if not _acquire(lock, folder, timeout, poll):
        yield folder
        return
    try:
        if lock.lock_counter == 1:  # this thread's outermost block
            since = time.strftime("%Y-%m-%d %H:%M:%S")
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
            with contextlib.suppress(OSError):  # only a record: the lock holds without it
                atomic_write(folder / HOLDER, json.dumps(info))
        yield folder
    finally:
        if lock.lock_counter == 1:
            with contextlib.suppress(OSError):
                (folder / HOLDER).unlink(missing_ok=True)
        lock.release()


# ---------------------------------------------------------------------------------------------
# run folders
# ---------------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    """JSON for what ``json`` does not know: sets as sorted lists, anything else (paths) as text."""
    return sorted(value) if isinstance(value, (set, frozenset)) else str(value)


def run_name(*parts: str, seed: int, config: Any) -> str:
    """``<part>-...-<digest>-seed<k>``, where the digest covers ``config``: the resolved setting
    and the data the run trains and is evaluated on (which files, official or generated, and the
    subsets), so runs are shared exactly when they would compute the same thing and a changed
    setting or data never reads back another run. The code version is not part of the name: the
    run's metrics record it (:func:`is_stale`).

    Args:
        parts: readable name parts (dataset, model, method, ...).
        seed: the run's seed.
        config: JSON-serialisable description of everything that changes the result (tuples and
            sets are written as lists, paths as text).
    """
    text = json.dumps(config, sort_keys=True, default=_json_default)
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return "-".join([*parts, digest, f"seed{seed}"])


def run_dir(results: str | os.PathLike, name: str) -> Path:
    """The folder of run ``name`` (created)."""
    path = Path(results) / "runs" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_done(run: str | os.PathLike) -> bool:
    """Whether the run finished (its ``done`` marker exists)."""
    return (Path(run) / "done").exists()


def save_run(run: str | os.PathLike, params: Row, metrics: Row) -> dict[str, Any]:
    """Write ``params.json`` and ``metrics.json``, then the ``done`` marker (holding the run's
    lock, :func:`run_lock`).

    The metrics get the code version under ``code`` (:func:`code_version`) and the versions of
    Python, torch, torchvision and numpy under ``environment`` (:func:`environment`); the marker
    holds the time the run finished (``{"finished": <seconds since the epoch>}``). A process
    that has read the embedded sample (:func:`sncn.data.samples_used`) also records those
    datasets under ``data_sample``.

    Returns:
        The metrics as written (with ``code``): what :func:`load_metrics` reads back later.
    """
    run = Path(run)
    metrics = {**metrics, "code": code_version(), "environment": environment()}
    if samples_used():  # made from the embedded sample: every table of it will say so
        metrics["data_sample"] = list(samples_used())
    with run_lock(run):
        text = json.dumps(params, indent=2, sort_keys=True, default=str)
        atomic_write(run / "params.json", text)
        atomic_write(run / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
        atomic_write(run / "done", json.dumps({"finished": time.time()}))
    return metrics


def _finished(run: Path) -> float:
    """When a finished run finished (its marker's time, or the marker's mtime if it has none)."""
    try:
        return float(json.loads((run / "done").read_text())["finished"])
    except (ValueError, KeyError, TypeError):
        return (run / "done").stat().st_mtime


def load_metrics(run: str | os.PathLike) -> dict[str, Any]:
    """The ``metrics.json`` of a finished run."""
    run = Path(run)
    if not is_done(run):
        raise FileNotFoundError(f"run {run} has not finished (no 'done' marker); run it first.")
    return json.loads((run / "metrics.json").read_text())


#: The environment variable that carries a retrain request (:func:`retrain_request`) to the
#: notebook kernels the pipeline starts (they inherit its environment).
RETRAIN_ENV = "SNCN_RETRAIN"
RETRAIN_CHOICES = ("stale", "all")


@contextlib.contextmanager
def retrain_request(results: str | os.PathLike, runs: str) -> Iterator[dict[str, Any]]:
    """Within the block, :func:`reuse` retrains the runs of ``results`` that ``runs`` names, in
    this process and in the processes it starts meanwhile (the notebook kernels).

    The request is the environment variable :data:`RETRAIN_ENV`, set for the block and restored
    after it: processes that this one did not start (another pipeline on the same results folder)
    never see it. ``"stale"``: finished runs made by other code (:func:`is_stale`); ``"all"``:
    every run finished (or checkpointed) before the block began, so a run shared by two notebooks
    is trained once.

    Args:
        results: the profile's results folder.
        runs: ``"stale"`` or ``"all"``.

    Yields:
        The request: ``{"runs", "since", "results"}``.
    """
    if runs not in RETRAIN_CHOICES:
        raise ValueError(f"runs must be one of {RETRAIN_CHOICES}, got {runs!r}.")
    request = {"runs": runs, "since": time.time(), "results": str(Path(results).resolve())}
    before = os.environ.get(RETRAIN_ENV)
    os.environ[RETRAIN_ENV] = json.dumps(request)
    try:
        yield request
    finally:
        if before is None:
            os.environ.pop(RETRAIN_ENV, None)
        else:
            os.environ[RETRAIN_ENV] = before


def requested(results: str | os.PathLike) -> dict[str, Any]:
    """The retrain request (:func:`retrain_request`) in force for the results folder
    ``results`` in this process, or ``{}``."""
    try:
        request = json.loads(os.environ.get(RETRAIN_ENV, ""))
    except json.JSONDecodeError:
        return {}
    return request if request.get("results") == str(Path(results).resolve()) else {}


def _requested(run: Path) -> dict[str, Any]:
    """The retrain request of the results folder of ``run`` (``<results>/runs/<name>``)."""
    return requested(run.parent.parent)


def clear_run(run: str | os.PathLike) -> None:
    """Delete everything in a run folder but its lock (and the lock's holder record): marker,
    metrics, params, checkpoint."""
    for entry in Path(run).iterdir():
        if entry.name in (LOCK, HOLDER):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)


def reuse(run: str | os.PathLike, retrain: bool = False) -> dict[str, Any] | None:
    """The metrics of a finished run to read back, or None when the run is to be trained.

    Call it holding the run's lock (:func:`run_lock`). A finished run is read back, unless
    ``retrain`` is True or a :func:`retrain_request` of its results folder covers it; a run to
    retrain is cleared first (:func:`clear_run`, its checkpoint too: training starts over). A
    stale run (made by other code, :func:`is_stale`) is read back with a printed note. A run
    made from the embedded sample is trained again where the sample is not allowed
    (``$SNCN_SAMPLE``), and one made from real data where this process has read the sample
    (:func:`sncn.data.samples_used`). An
    unfinished run is trained, from its checkpoint if it has one.

    Args:
        run: the run folder.
        retrain: train it again even if it finished.
    """
    run = Path(run)
    request = _requested(run)
    if request.get("runs") == "all" and not retrain:
        if is_done(run):
            retrain = _finished(run) < request["since"]
        elif (run / "checkpoint.pt").exists():  # interrupted: resumed unless from before
            retrain = (run / "checkpoint.pt").stat().st_mtime < request["since"]
    metrics = load_metrics(run) if is_done(run) and not retrain else None
    if metrics is not None and _other_data(run, metrics):
        metrics, retrain = None, True
    if metrics is not None:
        if not is_stale(metrics):
            return metrics
        if request.get("runs") != "stale":
            made = made_by(metrics) or "unrecorded"
            print(f"{run.name}: STALE, made by other code (sncn {made}; this is "
                  f"{code_version()['sncn']}); its numbers are reused as they are. Retrain "
                  "with python -m sncn.pipeline --retrain stale, or retrain=True.",
                  flush=True)  # fmt: skip
            return metrics
        retrain = True
    if retrain:
        clear_run(run)
    return None


def _other_data(run: Path, metrics: Mapping[str, Any]) -> bool:
    """Whether finished ``run`` (its ``metrics``) was made from other data than this process may
    read (then it says so): from the embedded sample where the sample is not allowed
    (``$SNCN_SAMPLE``), or from real data where this process has read the sample
    (:func:`sncn.data.samples_used`)."""
    sampled = bool(metrics.get("data_sample"))
    if sampled and os.environ.get(SAMPLE_ENV) != "1":
        made, now = "the embedded sample", f"real data only (${SAMPLE_ENV} is not 1)"
    elif not sampled and samples_used():
        made, now = "real data", f"the {SAMPLE_LABEL} ({', '.join(samples_used())})"
    else:
        return False
    print(f"{run.name}: made from {made}, but this process reads {now}; trained again.",
          flush=True)  # fmt: skip
    return True


@dataclass(frozen=True)
class RunStatus:
    """One run folder of a results folder (:func:`list_runs`).

    Attributes:
        name: the folder's name.
        status: ``"fresh"`` (finished by this code), ``"stale"`` (finished by other code),
            ``"running"`` (unfinished, locked by a process) or ``"incomplete"`` (unfinished:
            interrupted, resumed from its checkpoint when it runs again).
        code: the ``sncn`` code version of a finished run (None when it recorded none).
        finished: when a finished run finished (local time).
        holder: who holds the lock of a running run.
    """

    name: str
    status: str
    code: str | None = None
    finished: str | None = None
    holder: str | None = None


def list_runs(results: str | os.PathLike) -> list[RunStatus]:
    """The run folders of a results folder, by name, with their status (:class:`RunStatus`)."""
    out = []
    for run in sorted(p for p in (Path(results) / "runs").glob("*") if p.is_dir()):
        if is_done(run):
            try:
                metrics = load_metrics(run)
            except (FileNotFoundError, json.JSONDecodeError):
                metrics = {}
            finished = time.strftime("%Y-%m-%d %H:%M", time.localtime(_finished(run)))
            status = "stale" if is_stale(metrics) else "fresh"
            out.append(RunStatus(run.name, status, made_by(metrics), finished))
        else:
            holder = lock_holder(run)
            out.append(RunStatus(run.name, "running" if holder else "incomplete", holder=holder))
    return out


def remove_stale(results: str | os.PathLike) -> list[str]:
    """Delete the stale runs of a results folder (finished by other code, :func:`list_runs`).

    A run that another process holds is left alone.

    Returns:
        The names of the runs deleted.
    """
    removed = []
    for status in list_runs(results):
        if status.status != "stale":
            continue
        folder = Path(results) / "runs" / status.name
        try:
            with run_lock(folder, timeout=0):
                shutil.rmtree(folder)
        except RunLocked:
            continue
        removed.append(status.name)
    return removed


# ---------------------------------------------------------------------------------------------
# tables and figures
# ---------------------------------------------------------------------------------------------


def _cell(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) over seeds; the std is NaN for one value."""
    array = [float(v) for v in values]
    mean = math.fsum(array) / len(array)
    if len(array) < 2:
        return mean, float("nan")
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in array) / (len(array) - 1))


def resolution_note(
    rows: Sequence[Row],
    value: str,
    std: str,
    seeds: str = "seeds",
    label: str = "arm",
    reference: Row | None = None,
) -> str:
    """One sentence for a table's notes: can this budget tell its rows apart?

    With fewer than 2 seeds per row there is no spread over seeds, so no difference can be told
    from noise: the sentence says so. Otherwise the pooled standard deviation over seeds ``s``
    (root mean square of the rows' ``std``) gives the least significant difference of two rows
    with ``n`` seeds each, ``t(0.975, 2(n - 1)) * s * sqrt(2 / n)``, and the sentence counts the
    rows that differ from ``reference`` (default the first row) by more than that.

    Args:
        rows: the table's rows.
        value, std: the compared column and its standard deviation over seeds.
        seeds: the column of the seed count.
        label: the column naming the rows.
        reference: the row the others are compared with (default ``rows[0]``).
    """
    from scipy import stats

    values = [float(r[value]) for r in rows]
    span = max(values) - min(values)
    n = min(int(r[seeds]) for r in rows)
    if n < 2:
        return (f"resolution: {n} seed per row, so no spread over seeds: the rows' {value} span "
                f"{span:.1f} points, and this budget cannot tell which differences are real "
                "(not resolved at this budget).")  # fmt: skip
    pooled = math.sqrt(math.fsum(float(r[std]) ** 2 for r in rows) / len(rows))
    lsd = float(stats.t.ppf(0.975, 2 * (n - 1))) * pooled * math.sqrt(2 / n)
    base = rows[0] if reference is None else reference
    others = [r for r in rows if r is not base]
    beyond = [str(r[label]) for r in others if abs(float(r[value]) - float(base[value])) > lsd]
    told = f": {', '.join(beyond)}" if beyond else ""
    return (f"resolution: {value} spread over {n} seeds (pooled std) {pooled:.1f}, so two rows "
            f"must differ by more than {lsd:.1f} points to be told apart (95%); the rows span "
            f"{span:.1f}; {len(beyond)} of {len(others)} differ from {base[label]} by more than "
            f"that{told}.")  # fmt: skip


def markdown_table(rows: Sequence[Row], digits: int = 1) -> str:
    """Rows (dicts with the same keys, in order) as a markdown table; None/NaN print as ``-``."""
    if not rows:
        raise ValueError("a table needs at least one row")
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c), digits) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


class Rows(list):
    """Table rows (dicts) that remember the code versions of the runs they were computed from,
    so that :func:`save_table` says when some of those runs are stale.

    Args:
        rows: the rows.
        runs: the metrics of every run behind the rows (their ``code`` is kept).
    """

    def __init__(self, rows: Iterable[Row] = (), runs: Iterable[Mapping[str, Any]] = ()) -> None:
        super().__init__(rows)
        runs = list(runs)
        self.codes = [m.get("code") for m in runs]
        self.samples = sorted({d for m in runs for d in m.get("data_sample", ())})


#: How table notes mark the embedded sample (:func:`sample_note`); :mod:`sncn.claims` looks for it.
SAMPLE_MARK = SAMPLE_LABEL.upper()


def sample_note(datasets: Iterable[str] = ()) -> str | None:
    """A table or figure note when the data behind it include the embedded sample: the
    ``datasets`` given (read back from runs' ``data_sample``) or those this process has read
    from it (:func:`sncn.data.samples_used`); None when neither has any."""
    used = sorted({*datasets, *samples_used()})
    if not used:
        return None
    return (
        f"{SAMPLE_MARK}: made from the {SAMPLE_LABEL} of {', '.join(used)} shipped in "
        f"the repository (sample_data/), not the real datasets, which were not in the data root; "
        "the numbers only show that the code runs. Set $SNCN_DATA to a root with the data."
    )


def stale_note(codes: Sequence[Any]) -> str | None:
    """A table note when some of the runs of ``codes`` (their metrics' ``code``) are stale, or
    None when all of them were made by this code (:func:`is_stale`)."""
    stale = [c for c in codes if is_stale({"code": c})]
    if not stale:
        return None
    made = sorted({made_by({"code": c}) or "unrecorded" for c in stale})
    return (
        f"STALE: {len(stale)} of the {len(codes)} runs behind this table were made by other code "
        f"(sncn {', '.join(made)}; this table by {code_version()['sncn']}); "
        "retrain them with python -m sncn.pipeline --retrain stale."
    )


def save_table(
    rows: Sequence[Row],
    name: str,
    results: str | os.PathLike,
    *,
    title: str = "",
    notes: Sequence[str] = (),
    digits: int = 1,
    subfolder: str = "tables",
) -> Path:
    """Write ``<subfolder>/<name>.csv`` and ``<subfolder>/<name>.md`` (title, table, notes) under
    ``results``.

    When ``rows`` are :class:`Rows` and some of their runs are stale, a note says so
    (:func:`stale_note`); so does one when the data include the embedded sample
    (:func:`sample_note`). The two files are written together under the lock of the tables folder
    (:func:`run_lock`), so concurrent writers of one table leave a matching pair.

    Returns:
        The markdown file's path.
    """
    import csv
    import io

    folder = Path(results) / subfolder
    columns = list(rows[0]) if rows else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    extra = [stale_note(rows.codes) if isinstance(rows, Rows) else None,
             sample_note(rows.samples if isinstance(rows, Rows) else ())]  # fmt: skip
    notes = [*notes, *(n for n in extra if n)]
    text = (f"# {title}\n\n" if title else "") + markdown_table(rows, digits)
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    with run_lock(folder):
        atomic_write(folder / f"{name}.csv", buffer.getvalue())
        atomic_write(folder / f"{name}.md", text)
    return folder / f"{name}.md"


#: Colours of categories in every figure: seaborn's ``colorblind`` palette (the Okabe-Ito hues,
#: distinguishable with the common colour-vision deficiencies), in its order, as hex so that
#: plotting needs only matplotlib.
PALETTE = (
    "#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc",
    "#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9",
)  # fmt: skip

#: The colour map of heatmaps: perceptually uniform and readable with colour-vision deficiency.
HEATMAP_CMAP = "viridis"

#: ``gid`` of the footer that says where a figure's data come from (:func:`figure_footer`).
FOOTER_GID = "sncn-footer"


def relative_luminance(colour: Any) -> float:
    """WCAG 2 relative luminance of a matplotlib colour: 0 for black, 1 for white.

    Reference: W3C, Web Content Accessibility Guidelines 2.1, "relative luminance".
    """
    from matplotlib.colors import to_rgb

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in to_rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: Any, b: Any) -> float:
    """WCAG 2 contrast ratio of two colours, from 1 (equal) to 21 (black on white); text needs
    4.5 or more to be readable.

    Reference: W3C, Web Content Accessibility Guidelines 2.1, success criterion 1.4.3.
    """
    high, low = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def text_colour(background: Any) -> str:
    """``"black"`` or ``"white"``, whichever contrasts more with ``background`` (the ratio is
    then at least 4.58 on any colour)."""
    black, white = contrast_ratio(background, "black"), contrast_ratio(background, "white")
    return "black" if black >= white else "white"


def legend_outside(ax, *args: Any, **kwargs: Any):
    """``ax.legend(...)`` placed to the right of the axes, outside the data area.

    Args:
        ax: the axes.
        *args, **kwargs: :meth:`matplotlib.axes.Axes.legend` arguments (handles, labels,
            fontsize, title, ...); the placement is set here.
    """
    kwargs = {"fontsize": 8, "frameon": False, **kwargs}
    return ax.legend(*args, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                     **kwargs)  # fmt: skip


def figure_footer(fig, source: str, note: str = ""):
    """Write under the figure where its data come from, and an optional note or caption.

    The footer is one text artist (``gid`` :data:`FOOTER_GID`) below the figure, so that
    :func:`save_figure` can add the profile to it.

    Args:
        fig: the figure.
        source: the data and whether they are official, generated or a proxy (a process that
            has read the embedded sample adds that it did).
        note: a caption or remark, written before the source.

    Returns:
        The text artist.
    """
    sample = sample_note()
    if source and sample:
        source += f" ({SAMPLE_MARK}: not the real datasets)"
    text = "\n".join(t for t in (note, f"Data: {source}" if source else "") if t)
    return fig.text(0.5, -0.01, text, ha="center", va="top", fontsize=7, wrap=True,
                    gid=FOOTER_GID)  # fmt: skip


def save_figure(
    fig, name: str, results: str | os.PathLike, pdf: bool = True, profile: str | None = None
) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` (and ``.pdf``), its profile on it.

    The profile is ``profile`` or, by default, the name of the ``results`` folder when it is one
    of :data:`sncn.hparams.PROFILES` (``results/<profile>/``). It is appended to the figure's
    footer (:func:`figure_footer`), or written as one when the figure has none.

    Args:
        fig: the figure.
        name: file name without suffix.
        results: the profile's results folder.
        pdf: also write a PDF.
        profile: the profile to write on the figure (default: from ``results``).

    Returns:
        The PNG's path.
    """
    from sncn.hparams import PROFILES

    folder = Path(results) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    folder_name = Path(results).resolve().name
    profile = profile or (folder_name if folder_name in PROFILES else None)
    if profile:
        footer = [t for t in fig.texts if t.get_gid() == FOOTER_GID]
        if not footer:
            figure_footer(fig, "", f"Profile: {profile}")
        elif "profile: " not in footer[0].get_text().lower():
            footer[0].set_text(f"{footer[0].get_text()} | profile: {profile}")
    fig.savefig(folder / f"{name}.png", dpi=150, bbox_inches="tight")
    if pdf:
        fig.savefig(folder / f"{name}.pdf", bbox_inches="tight")
    return folder / f"{name}.png"


# ---------------------------------------------------------------------------------------------
# the paper's numbers (typed from the paper; shown beside ours, never used as results)
# ---------------------------------------------------------------------------------------------

#: Table 1: CIFAR-10-C / CIFAR-100-C mCE (%) per backbone and method.
TABLE1_METHODS = (
    "Basic", "Cutout", "Mixup", "CutMix", "AutoAug", "AdvTr.", "AugMix", "SNCN", "SNCN+AugMix",
)  # fmt: skip
TABLE1 = {
    "cifar10": {
        "allconv": (30.8, 32.9, 24.6, 31.3, 29.2, 28.1, 15.0, 17.2, 11.8),
        "densenet": (30.7, 32.1, 24.6, 33.5, 26.6, 27.6, 12.7, 18.5, 10.4),
        "wrn": (26.9, 26.8, 22.3, 27.1, 23.9, 26.2, 11.2, 16.9, 9.9),
        "resnext": (27.5, 28.9, 22.6, 29.5, 24.2, 27.0, 10.9, 15.7, 9.1),
    },
    "cifar100": {
        "allconv": (56.4, 56.8, 53.4, 56.0, 55.1, 56.0, 42.7, 42.8, 36.8),
        "densenet": (59.3, 59.6, 55.4, 59.2, 53.9, 55.2, 39.6, 48.5, 37.0),
        "wrn": (53.3, 53.5, 50.4, 52.9, 49.6, 55.1, 35.9, 43.7, 33.4),
        "resnext": (53.4, 54.6, 51.4, 54.1, 51.3, 54.4, 34.9, 40.8, 30.8),
    },
}

#: Tables 14 (CIFAR-10-C) and 15 (CIFAR-100-C): mCE (%) of each component per backbone. The CN
#: column is garbled in the paper's text extraction; its values are Tables 9 and 11's at the
#: same positions, which they must equal.
TABLE14_METHODS = (
    "Basic", "SN", "CN", "SNCN+Crop", "SNCN+Crop+Consistency", "AugMix", "SNCN+Crop+AugMix",
)  # fmt: skip
TABLE14 = {
    "cifar10": {
        "allconv": (30.80, 24.01, 25.99, 18.82, 17.24, 15.00, 11.79),
        "densenet": (30.70, 21.96, 24.72, 18.83, 18.53, 12.7, 10.40),
        "wrn": (26.90, 20.78, 21.62, 17.47, 16.93, 11.2, 9.94),
        "resnext": (27.50, 21.49, 22.37, 17.73, 15.69, 10.90, 9.09),
    },
    "cifar100": {
        "allconv": (56.40, 50.30, 52.20, 43.86, 42.83, 42.7, 36.80),
        "densenet": (59.30, 53.86, 55.44, 48.97, 48.48, 39.60, 36.95),
        "wrn": (53.30, 47.44, 48.76, 44.46, 43.70, 35.90, 33.38),
        "resnext": (53.40, 47.56, 46.95, 41.03, 40.84, 34.9, 30.76),
    },
}


def paper_value(table: Mapping, methods: Sequence[str], dataset: str, backbone: str, method: str):
    """One number of a paper table, or None where the paper has none."""
    try:
        return table[dataset][backbone][list(methods).index(method)]
    except (KeyError, ValueError):
        return None
