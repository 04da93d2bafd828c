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
        ``root`` if given, else ``$SNCN_DATA`` if set, else ``data/`` (relative to the working
        directory). The folder need not exist yet: loaders that download create it.
    """
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get(DATA_ENV, "data")).expanduser()
