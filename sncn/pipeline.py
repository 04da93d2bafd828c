"""Run the notebook pipeline: ``python -m sncn.pipeline --profile {smoke,quick,paper}``.

Every ``notebooks/NN_name.ipynb`` runs in order through papermill with the profile's parameters
(:func:`sncn.hparams.notebook_parameters`) plus ``RESULTS``, the profile's results folder. The
executed copy goes to ``results/<profile>/notebooks/``; what the notebook writes (tables, figures,
run folders) goes under ``results/<profile>/``. A notebook that finished with the same source,
parameters and code version (:func:`sncn.results.code_version`) is skipped on a re-run
(``--force`` runs it again). A failing notebook stops the
pipeline with a non-zero exit naming it and its whole error message; results of the notebooks
before it stay as they are. Before anything runs, every selected notebook's parameters are checked
(:func:`sncn.hparams.resolve_parameters`: names, types, values); an unknown ``--only`` name or an
invalid parameter exits with status 2, listing what is valid.

Runs (``results/<profile>/runs/``) made by other code are stale: reused with a note, trained
again with ``--retrain stale`` (``--retrain all``: every run). ``--runs`` lists the runs and their
status, ``--remove-stale`` deletes the stale ones.

Before the notebooks run, the datasets their parameters need (:func:`needed_data`) are checked in
the data root and fetched where they are missing and the network allows
(:func:`sncn.data.prepare.prepare`: CIFAR with checksums, IMDb and SST-2 from the Hugging Face
hub); one message says what was fetched and what is missing with how to provide it. The smoke
profile reads the embedded sample (``sample_data/``) for what is still missing; the others stop
(exit 2) instead. ``--no-fetch`` only checks.

After the notebooks, ``results/<profile>/report.html`` is written (:mod:`sncn.report`): the
claims scoreboard, then every table and figure in the paper's order.

While a notebook runs, one line shows where its training is (:func:`show_progress`: run k of n,
epoch, step, loss, time elapsed and an estimate of the time left), from the progress records that
:func:`sncn.train.fit` keeps in the run folders; the executed copies keep one line per epoch.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sncn import report, results
from sncn.hparams import PROFILES, notebook_parameters, resolve_parameters
from sncn.utils import PROGRESS, format_seconds, progress_line, read_progress

REPO = Path(__file__).resolve().parent.parent


def find_notebooks(folder: Path) -> list[Path]:
    """The pipeline's notebooks in ``folder``: ``NN_name.ipynb``, in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if p.is_file())


def select_notebooks(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """The notebooks that ``only`` names by stem or ``NN`` prefix (all of them when None).

    Raises:
        ValueError: a name matches no notebook; the message lists the stems and prefixes.
    """
    if only is None:
        return notebooks
    unknown = [name for name in only if not any(name in (p.stem, p.stem[:2]) for p in notebooks)]
    if unknown:
        valid = ", ".join(f"{p.stem} ({p.stem[:2]})" for p in notebooks) or "none"
        raise ValueError(
            f"no notebook named {', '.join(map(repr, unknown))}; the notebooks (and their "
            f"prefixes) are: {valid}."
        )
    return [p for p in notebooks if p.stem in only or p.stem[:2] in only]


def declared_parameters(notebook: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters that ``notebook``'s cell tagged ``parameters`` declares.

    Returns:
        ``(types, values)``: name -> annotated type (``object`` for an annotation that is not a
        builtin type) and name -> literal value, in the cell's order.
    """
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    types, values = {}, {}
    for node in ast.parse(cells[0].source if cells else "").body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotation = node.annotation.id if isinstance(node.annotation, ast.Name) else ""
            types[node.target.id] = getattr(builtins, annotation, object)
            values[node.target.id] = ast.literal_eval(node.value) if node.value else None
    return types, values


def check_notebook(notebook: Path, parameters: dict[str, Any]) -> None:
    """Check, before it runs, the values ``notebook`` will run with: its parameters cell updated
    by ``parameters`` (:func:`sncn.hparams.resolve_parameters`).

    Raises:
        ValueError: a name in ``parameters`` is not one of the notebook's parameters, or a value
            is invalid; the message lists what is valid.
    """
    types, values = declared_parameters(notebook)
    namespace = {"__annotations__": types, **values, **parameters}
    resolve_parameters(notebook.stem, namespace, given=list(parameters), report=False)


def _error_message(error: Exception) -> str:
    """The whole message of a notebook's error (the failed cell's exception, every line)."""
    if hasattr(error, "ename"):  # papermill.PapermillExecutionError: the exception in a cell
        text = f"cell [{error.exec_count}] raised {error.ename}: {error.evalue}"
    else:
        text = f"{type(error).__name__}: {error}"
    return "\n    ".join(line.rstrip() for line in text.strip().splitlines())


def _fingerprint(notebook: Path, parameters: dict) -> str:
    digest = hashlib.sha256(notebook.read_bytes())
    digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    digest.update(results.code_version()["sncn"].encode())  # other code: run it again
    return digest.hexdigest()


def latest_progress(out: Path, since: float) -> dict[str, Any] | None:
    """The progress record (:data:`sncn.utils.PROGRESS`) of the run folder under ``out/runs``
    updated last, if that was at ``since`` (a ``time.time()``) or later; else None."""
    newest = None
    for path in Path(out, "runs").glob(f"*/{PROGRESS}"):
        with contextlib.suppress(OSError):  # a run folder being cleared
            mtime = path.stat().st_mtime
            if mtime >= since and (newest is None or mtime > newest[0]):
                newest = (mtime, path)
    return read_progress(newest[1]) if newest else None


@contextlib.contextmanager
def show_progress(
    out: Path, name: str, stream=None, interval: float = 2.0, log_every: float = 60.0
) -> Iterator[None]:
    """While the block runs (a notebook), show the progress of its training runs.

    Every ``interval`` seconds the newest progress record under ``out/runs`` (written by
    :func:`sncn.train.fit`) becomes one line, ``[name] run 3/4 <run>: epoch 1/2 step 120/250
    loss 1.830 | 4m12s elapsed, ~9m left`` (:func:`sncn.utils.progress_line`; elapsed: since the
    block began). On a terminal the line is rewritten in place and cleared at the end; in a log
    (not a terminal) a line is printed when the run, epoch or state changes, and at least every
    ``log_every`` seconds while it does not.

    Args:
        out: the profile's results folder.
        name: the notebook's name, the line's prefix.
        stream: where to write (default ``sys.stdout``).
        interval: seconds between looks.
        log_every: seconds between repeated lines in a log.
    """
    stream = sys.stdout if stream is None else stream
    terminal = stream.isatty()
    began, began_wall = time.monotonic(), time.time()
    stop = threading.Event()
    shown = []

    def watch() -> None:
        last_key, last_print = None, -math.inf
        while not stop.wait(interval):
            record = latest_progress(out, began_wall - 1)
            if record is None:
                continue
            line = f"[{name}] " + progress_line(record, elapsed=time.monotonic() - began)
            key = (record.get("run"), record.get("epoch"), record.get("state"))
            if terminal:
                width = shutil.get_terminal_size().columns - 1
                stream.write("\r\x1b[K" + line[:width])
                stream.flush()
            elif key != last_key or time.monotonic() - last_print >= log_every:
                stream.write(line + "\n")
                stream.flush()
                last_key, last_print = key, time.monotonic()
            shown.append(True)

    thread = threading.Thread(target=watch, name=f"progress of {name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if terminal and shown:
            stream.write("\r\x1b[K")
            stream.flush()


def needed_data(stem: str, parameters: dict[str, Any]) -> list[str]:
    """The datasets (keys of :data:`sncn.data.prepare.DATASETS`) notebook ``stem`` reads with
    ``parameters`` (all of them: the declared ones with the profile's on top): what its
    parameters name, else what its experiment always reads."""
    number = stem[:2]
    named = [parameters.get(k) for k in ("DATASET", "BACKBONE_DATASET")]
    named += list(parameters.get("DATASETS") or [])
    cifar = [d for d in named if d in ("cifar10", "cifar100")]
    if number in ("01", "02", "07"):
        return cifar + (["imagenet_sample"] if number == "07" else [])
    if number == "03":
        built = [] if parameters.get("DATA_DIR") else ["cifar10"]  # built from CIFAR-10
        return built + (["imagenet_sample"] if parameters.get("SAMPLE_C") else [])
    if number == "04":
        return ["cifar10"]
    if number == "06":
        glove = ["glove"] if parameters.get("GLOVE", "auto") in ("auto", "package") else []
        return ["imdb", "sst2", *glove]
    return []  # 05 (generated street scenes or GTA5/Cityscapes, data/README.md), 08


def _prepare_data(profile: str, parameters_of: dict[Path, dict[str, Any]], fetch: bool) -> bool:
    """Check (and fetch) the data the notebooks need; print one message. False: stop."""
    from sncn.data.prepare import prepare

    names = [n for nb, p in parameters_of.items()
             for n in needed_data(nb.stem, {**declared_parameters(nb)[1], **p})]  # fmt: skip
    report_ = prepare(names, fetch=fetch, sample=profile == "smoke")
    message = report_.message()
    if message:
        print(message, file=sys.stderr if report_.missing else sys.stdout, flush=True)
    return not report_.missing


def run_pipeline(
    profile: str,
    notebooks_dir: Path = REPO / "notebooks",
    results_root: Path = REPO / "results",
    only: list[str] | None = None,
    force: bool = False,
    retrain: str | None = None,
    fetch: bool = True,
) -> int:
    """Execute the notebooks for ``profile``.

    Before the notebooks run, it says how many of the profile's finished runs are stale (made by
    other code, :func:`sncn.results.list_runs`): they are read back as they are, with a note in
    the tables, unless ``retrain`` asks for them to be trained again.

    Args:
        profile: ``smoke``, ``quick`` or ``paper``.
        notebooks_dir: folder of ``NN_name.ipynb`` notebooks.
        results_root: results go to ``results_root / profile``.
        only: notebook stems (or their ``NN`` prefixes) to run; all when None.
        force: run notebooks that already finished with the same source and parameters.
        retrain: ``"stale"`` or ``"all"``: while the notebooks run (all of them again), the runs
            they use that are stale, or all of them, are trained again
            (:func:`sncn.results.retrain_request`); a run shared by two notebooks is trained once.
        fetch: fetch datasets missing from the data root (:func:`needed_data`); False only
            checks. Either way, missing data stop every profile but smoke, which reads the
            embedded sample instead.

    Returns:
        0 if every notebook succeeded (or was up to date), 1 if one failed, 2 if nothing ran
        because the request was invalid: no notebooks, an unknown name in ``only``, an invalid
        profile or parameter (the message on stderr lists what is valid), or data the
        notebooks need are missing (the message says how to provide them).
    """
    import papermill

    out = Path(results_root) / profile
    try:
        notebooks = select_notebooks(find_notebooks(Path(notebooks_dir)), only)
        if not notebooks:
            raise ValueError(f"no notebooks (NN_name.ipynb) in {notebooks_dir}.")
        parameters_of = {}
        for nb in notebooks:
            parameters = {**notebook_parameters(nb.stem, profile), "RESULTS": str(out.resolve())}
            check_notebook(nb, parameters)
            parameters_of[nb] = parameters
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    if not _prepare_data(profile, parameters_of, fetch):
        return 2
    if retrain:
        stale = [r for r in results.list_runs(out) if r.status == "stale"]
        if retrain == "all" or stale:
            print(f"retraining {'every run' if retrain == 'all' else f'{len(stale)} stale runs'}"
                  " that the notebooks use", flush=True)  # fmt: skip
            with results.retrain_request(out, retrain):
                return run_pipeline(profile, notebooks_dir, results_root, only, force=True,
                                    fetch=False)  # fmt: skip
        print("no stale runs to retrain", flush=True)
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    # kernels inherit this: no progress bars in the executed copies, which keep fit's one line
    # per epoch; the progress of the runs shows here instead (show_progress)
    os.environ.setdefault("TQDM_DISABLE", "1")
    # and no "IProgress not found" warning, which tqdm.auto gives on import in a kernel without
    # ipywidgets (stderr of every executed copy)
    quiet = "ignore:IProgress not found"
    if quiet not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"),
                                                              quiet]))  # fmt: skip
    done_dir = out / ".done"
    done_dir.mkdir(exist_ok=True)
    stale = [r for r in results.list_runs(out) if r.status == "stale"]
    if stale and not results.requested(out):
        print(f"{len(stale)} finished runs in {out / 'runs'} are STALE (made by other code than "
              f"this, sncn {results.code_version()['sncn']}): they are reused as they are and the "
              "tables say so; --retrain stale trains them again, --runs lists them, "
              "--remove-stale deletes them.", flush=True)  # fmt: skip

    for i, nb in enumerate(notebooks, 1):
        parameters = parameters_of[nb]
        marker = done_dir / nb.stem
        fingerprint = _fingerprint(nb, parameters)
        head = f"[{i}/{len(notebooks)}] {nb.stem} ({profile})"
        if not force and marker.exists() and marker.read_text() == fingerprint:
            print(f"{head}: up to date, skipped", flush=True)
            continue
        marker.unlink(missing_ok=True)
        print(f"{head}: running ...", flush=True)
        start = time.monotonic()
        executed = out / "notebooks" / nb.name
        try:
            with show_progress(out, nb.stem):
                papermill.execute_notebook(
                    str(nb),
                    str(executed),
                    parameters=parameters,
                    cwd=str(nb.parent),
                    progress_bar=False,
                    kernel_name="python3",
                    # the kernel's log would print "Kernel is running over TCP without encryption"
                    # for every notebook (a local kernel); its errors still show
                    extra_arguments=["--log-level=ERROR"],
                )
        except Exception as error:  # papermill raises PapermillExecutionError and others
            print(
                f"{head}: FAILED after {format_seconds(time.monotonic() - start)}: "
                f"{_error_message(error)}\n"
                f"  executed copy with the traceback: {executed}",
                flush=True,
            )
            return 1
        drop_images(executed)
        marker.write_text(fingerprint)
        print(f"{head}: done in {format_seconds(time.monotonic() - start)}", flush=True)
    print(f"report: {report.build_report(out, profile)}", flush=True)
    return 0


#: Output types of an executed notebook that :func:`drop_images` replaces by a line of text.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "application/pdf")


def drop_images(executed: str | os.PathLike) -> int:
    """Replace the images in an executed notebook's outputs by a line saying where the figures
    are: every notebook saves its figures under ``results/<profile>/figures/``
    (:func:`sncn.results.save_figure`), so the executed copy need not hold them again (the 07
    notebook's would be 2 MB). Returns how many images were dropped."""
    path = Path(executed)
    notebook = json.loads(path.read_text())
    dropped = 0
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            images = [kind for kind in IMAGE_TYPES if kind in data]
            if images:
                for kind in images:
                    del data[kind]
                data["text/plain"] = "[figure: see the profile's figures/ folder]"
                dropped += len(images)
    if dropped:
        results.atomic_write(path, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return dropped


def show_runs(out: Path, remove_stale: bool = False) -> int:
    """Print the run folders of the results folder ``out`` with their status (fresh, stale,
    running, incomplete: :func:`sncn.results.list_runs`); with ``remove_stale``, delete the stale
    ones first (:func:`sncn.results.remove_stale`).

    Returns:
        0.
    """
    if remove_stale:
        removed = results.remove_stale(out)
        print(f"removed {len(removed)} stale runs from {out / 'runs'}", flush=True)
        for name in removed:
            print(f"  {name}")
    runs = results.list_runs(out)
    statuses = ("fresh", "stale", "running", "incomplete")
    counts = {k: sum(r.status == k for r in runs) for k in statuses}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "none"
    print(f"{out / 'runs'}: {len(runs)} runs ({summary}); this code is sncn "
          f"{results.code_version()['sncn']}", flush=True)  # fmt: skip
    for r in runs:
        made = f"sncn {r.code or 'unrecorded'}, finished {r.finished}" if r.finished else ""
        print(f"  {r.status:<10} {r.name}  {made or r.holder or ''}".rstrip())
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point (``prog``: the name in its help, e.g. ``sncn reproduce``)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=PROFILES, default="quick", help="scale of the run")
    parser.add_argument("--only", nargs="+", help="notebook stems or NN prefixes to run")
    parser.add_argument("--force", action="store_true", help="re-run finished notebooks")
    parser.add_argument(
        "--retrain",
        choices=results.RETRAIN_CHOICES,
        help="train again the runs the notebooks use that are stale (made by other code), or all "
        "of them, and re-run the notebooks",
    )
    parser.add_argument(
        "--runs", action="store_true", help="list the profile's runs (fresh, stale, ...) and exit"
    )
    parser.add_argument(
        "--remove-stale", action="store_true", help="delete the profile's stale runs and exit"
    )
    parser.add_argument(
        "--no-fetch",
        action="store_true",
        help="do not download missing datasets, only check for them (smoke reads the embedded "
        "sample for what is missing)",
    )
    parser.add_argument("--results", type=Path, default=REPO / "results", help="results root")
    parser.add_argument(
        "--notebooks", type=Path, default=REPO / "notebooks", help="notebooks folder"
    )
    args = parser.parse_args(argv)
    if args.runs or args.remove_stale:
        return show_runs(args.results / args.profile, remove_stale=args.remove_stale)
    return run_pipeline(args.profile, args.notebooks, args.results, args.only, args.force,
                        retrain=args.retrain, fetch=not args.no_fetch)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
