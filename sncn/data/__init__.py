"""Datasets and loaders, one module per domain.

Every loader finds its files under one data root (:func:`data_root`, ``$SNCN_DATA``); everything
sncn derives from them (decoded-array caches, generated corruptions, token caches, ImageNet-format
folders) goes to one cache folder (:func:`cache_root`, ``$SNCN_CACHE``, default
``<data root>/generated``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: Where datasets live (default ``data/``): read by :func:`data_root`.
DATA_ENV = "SNCN_DATA"

#: Where generated data and caches go (default ``<data root>/generated``): read by
#: :func:`cache_root`.
CACHE_ENV = "SNCN_CACHE"


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


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """Return the folder for data sncn generates: caches, generated corruptions, derived sets.

    Args:
        root: an explicit data root; its ``generated/`` is used, so that everything derived from
            an explicitly given root stays beside it (``$SNCN_CACHE`` is then not read).

    Returns:
        ``<root>/generated`` if ``root`` is given, else ``$SNCN_CACHE`` if set, else
        ``<data root>/generated`` (:func:`data_root`). The folder need not exist yet; writers
        create it through :func:`writable_folder`.
    """
    if root is not None:
        return data_root(root) / "generated"
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return data_root() / "generated"


def writable_folder(folder: str | os.PathLike, what: str, setting: str | None = CACHE_ENV) -> Path:
    """Create ``folder`` if needed and check that files can be written into it.

    Args:
        folder: the folder about to be written into.
        what: what is about to be written, for the message (e.g. ``"generated CIFAR-10-C"``).
        setting: the environment setting that moves the folder, named in the message
            (:data:`CACHE_ENV` for generated data, :data:`DATA_ENV` for downloads; None for a
            folder the caller chose).

    Returns:
        ``folder`` as a Path.

    Raises:
        PermissionError: the folder cannot be created or written into (a read-only data root);
            the message names the folder and the setting to change.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        if setting is None:
            how = "Choose a writable folder"
        else:
            default = "<data root>/generated" if setting == CACHE_ENV else "the checkout's data/"
            now = os.environ.get(setting) or f"unset, so {default}"
            how = f"Point ${setting} at a writable folder (now {now})"
        raise PermissionError(
            f"cannot write {what} into {folder} ({e.strerror or e}). {how}, or make {folder} "
            f"writable."
        ) from e
    return folder
