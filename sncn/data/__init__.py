"""Datasets and loaders, one module per domain.

Every loader finds its files under one data root: :func:`data_root`.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The one environment setting sncn reads: where datasets live (default ``data/``).
DATA_ENV = "SNCN_DATA"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Return the data root.

    Args:
        root: an explicit root; wins over the environment when given.

    Returns:
        ``root`` if given, else ``$SNCN_DATA`` if set, else ``data/``: the ``data/`` folder of
        the source checkout sncn is imported from (so notebooks find it from any working
        directory), or ``./data`` for an installed package. The folder need not exist yet:
        loaders that download create it.
    """
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    checkout = Path(__file__).resolve().parents[2] / "data"
    return checkout if (checkout / "README.md").is_file() else Path("data")
