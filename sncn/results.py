"""Results on disk: run folders, tables (csv + markdown), figures, and the paper's numbers.

Layout under a profile's results folder (``results/<profile>/``)::

    tables/<name>.csv, tables/<name>.md     one table, ours next to the paper's
    figures/<name>.png (+ .pdf)             one figure, named after the paper's figure
    runs/<run>/params.json, metrics.json    one training/evaluation run; ``done`` when finished

Notebooks share state only through these files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# run folders
# ---------------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    """JSON for what ``json`` does not know: sets as sorted lists, anything else (paths) as text."""
    return sorted(value) if isinstance(value, (set, frozenset)) else str(value)


def run_name(*parts: str, seed: int, config: Any) -> str:
    """``<part>-...-<digest>-seed<k>``, where the digest covers ``config`` (the resolved setting
    and the data/budget it trains on), so runs are shared exactly when they would train the same
    thing and a changed setting never reads back a stale run.

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


def save_run(run: str | os.PathLike, params: Row, metrics: Row) -> None:
    """Write ``params.json`` and ``metrics.json``, then the ``done`` marker."""
    run = Path(run)
    _atomic_write(run / "params.json", json.dumps(params, indent=2, sort_keys=True, default=str))
    _atomic_write(run / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
    _atomic_write(run / "done", "")


def load_metrics(run: str | os.PathLike) -> dict[str, Any]:
    """The ``metrics.json`` of a finished run."""
    run = Path(run)
    if not is_done(run):
        raise FileNotFoundError(f"run {run} has not finished (no 'done' marker); run it first.")
    return json.loads((run / "metrics.json").read_text())


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


def markdown_table(rows: Sequence[Row], digits: int = 1) -> str:
    """Rows (dicts with the same keys, in order) as a markdown table; None/NaN print as ``-``."""
    if not rows:
        raise ValueError("a table needs at least one row")
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c), digits) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def save_table(
    rows: Sequence[Row],
    name: str,
    results: str | os.PathLike,
    *,
    title: str = "",
    notes: Sequence[str] = (),
    digits: int = 1,
) -> Path:
    """Write ``tables/<name>.csv`` and ``tables/<name>.md`` (title, table, notes).

    Returns:
        The markdown file's path.
    """
    import csv
    import io

    folder = Path(results) / "tables"
    columns = list(rows[0]) if rows else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(folder / f"{name}.csv", buffer.getvalue())
    text = (f"# {title}\n\n" if title else "") + markdown_table(rows, digits)
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    _atomic_write(folder / f"{name}.md", text)
    return folder / f"{name}.md"


def save_figure(fig, name: str, results: str | os.PathLike, pdf: bool = True) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` (and ``.pdf``)."""
    folder = Path(results) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
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
