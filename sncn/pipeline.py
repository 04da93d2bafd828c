"""Run the notebook pipeline: ``python -m sncn.pipeline --profile {smoke,quick,paper}``.

Every ``notebooks/NN_name.ipynb`` runs in order through papermill with the profile's parameters
(:func:`sncn.hparams.notebook_parameters`) plus ``RESULTS``, the profile's results folder. The
executed copy goes to ``results/<profile>/notebooks/``; what the notebook writes (tables, figures,
run folders) goes under ``results/<profile>/``. A notebook that finished with the same source and
parameters is skipped on a re-run (``--force`` runs it again). A failing notebook stops the
pipeline with a non-zero exit naming it; results of the notebooks before it stay as they are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from sncn.hparams import PROFILES, notebook_parameters

REPO = Path(__file__).resolve().parent.parent


def find_notebooks(folder: Path) -> list[Path]:
    """The pipeline's notebooks in ``folder``: ``NN_name.ipynb``, in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if p.is_file())


def _fingerprint(notebook: Path, parameters: dict) -> str:
    digest = hashlib.sha256(notebook.read_bytes())
    digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def run_pipeline(
    profile: str,
    notebooks_dir: Path = REPO / "notebooks",
    results_root: Path = REPO / "results",
    only: list[str] | None = None,
    force: bool = False,
) -> int:
    """Execute the notebooks for ``profile``.

    Args:
        profile: ``smoke``, ``quick`` or ``paper``.
        notebooks_dir: folder of ``NN_name.ipynb`` notebooks.
        results_root: results go to ``results_root / profile``.
        only: notebook stems (or their ``NN`` prefixes) to run; all when None.
        force: run notebooks that already finished with the same source and parameters.

    Returns:
        0 if every notebook succeeded (or was up to date), 1 otherwise.
    """
    import papermill

    out = Path(results_root) / profile
    notebooks = find_notebooks(Path(notebooks_dir))
    if only:
        notebooks = [p for p in notebooks if p.stem in only or p.stem[:2] in only]
    if not notebooks:
        print(f"no notebooks to run in {notebooks_dir} (profile {profile}).")
        return 0
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    # kernels inherit this: progress bars refresh every 10 s, so executed copies stay small
    os.environ.setdefault("TQDM_MININTERVAL", "10")
    done_dir = out / ".done"
    done_dir.mkdir(exist_ok=True)

    for i, nb in enumerate(notebooks, 1):
        parameters = {**notebook_parameters(nb.stem, profile), "RESULTS": str(out.resolve())}
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
            papermill.execute_notebook(
                str(nb),
                str(executed),
                parameters=parameters,
                cwd=str(nb.parent),
                progress_bar=False,
                kernel_name="python3",
            )
        except Exception as error:  # papermill raises PapermillExecutionError and others
            last_line = (str(error).strip().splitlines() or [""])[-1]
            print(
                f"{head}: FAILED after {_format_seconds(time.monotonic() - start)}: "
                f"{type(error).__name__}: {last_line}\n"
                f"  executed copy with the traceback: {executed}",
                flush=True,
            )
            return 1
        marker.write_text(fingerprint)
        print(f"{head}: done in {_format_seconds(time.monotonic() - start)}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=PROFILES, default="quick", help="scale of the run")
    parser.add_argument("--only", nargs="*", help="notebook stems or NN prefixes to run")
    parser.add_argument("--force", action="store_true", help="re-run finished notebooks")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="results root")
    parser.add_argument(
        "--notebooks", type=Path, default=REPO / "notebooks", help="notebooks folder"
    )
    args = parser.parse_args(argv)
    return run_pipeline(args.profile, args.notebooks, args.results, args.only, args.force)


if __name__ == "__main__":
    sys.exit(main())
