"""Datasets and loaders, one module per domain.

Every loader finds its files under one data root (:func:`data_root`, ``$SNCN_DATA``); everything
sncn derives from them (decoded-array caches, generated corruptions, token caches, ImageNet-format
folders) goes to one cache folder (:func:`cache_root`, ``$SNCN_CACHE``, default
``<data root>/generated``).

When a dataset is missing from the data root and ``$SNCN_SAMPLE`` is ``1`` (the tests and the
smoke profile set it), loaders read the *embedded sample* instead: a few hundred CIFAR-10 images,
IMDb reviews and SST-2 sentences and six ImageNet images shipped in the repository's
``sample_data/`` (:func:`sample_for`). Every run and table made from it says so
(:func:`samples_used`); real data, when present, always win.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

#: Where datasets live (default ``data/``): read by :func:`data_root`.
DATA_ENV = "SNCN_DATA"

#: Where generated data and caches go (default ``<data root>/generated``): read by
#: :func:`cache_root`.
CACHE_ENV = "SNCN_CACHE"

#: ``1`` lets loaders fall back to the embedded sample for datasets missing from the data root
#: (:func:`sample_for`); anything else (the default) does not.
SAMPLE_ENV = "SNCN_SAMPLE"

#: What tables and runs made from the embedded sample say about their data.
SAMPLE_LABEL = "embedded sample"

# datasets read from the embedded sample in this process (sample_for), in the order first read
_SAMPLED: list[str] = []


def sample_root() -> Path | None:
    """The embedded sample: ``sample_data/`` of the source checkout sncn is imported from, a
    data root in the usual layout (see its README.md); None for an installed package, which
    does not ship it."""
    folder = Path(__file__).resolve().parents[2] / "sample_data"
    return folder if (folder / "README.md").is_file() else None


def sample_for(dataset: str, root: str | os.PathLike | None = None) -> Path | None:
    """The root to read ``dataset`` from instead, when the data root lacks it: the embedded
    sample, if allowed, else None.

    Loaders call this only after finding ``dataset`` missing. The sample is used when ``root``
    is None (an explicitly given root is always taken at its word), ``$SNCN_SAMPLE`` is ``1``
    and the sample has the dataset (``<sample>/<dataset>``); the first use of each dataset
    warns and is recorded for :func:`samples_used`.

    Args:
        dataset: the dataset's folder in a data root (``cifar10``, ``imdb``, ``sst2``,
            ``imagenet_sample``), or a file in it (``sst2/test.tsv``), which must exist in the
            sample too.
        root: the root the caller was given (None: the configured data root).

    Returns:
        The sample's root (a data root holding ``dataset``), or None.
    """
    sample = sample_root()
    if root is not None or os.environ.get(SAMPLE_ENV) != "1" or sample is None:
        return None
    if not (sample / dataset).exists():
        return None
    name = Path(dataset).parts[0]
    if name not in _SAMPLED:
        _SAMPLED.append(name)
        warnings.warn(
            f"{name} is not in the data root {data_root()}; reading the {SAMPLE_LABEL} "
            f"({sample / name}) instead, because ${SAMPLE_ENV}=1. Numbers made from it only "
            f"show that the code runs. Set ${DATA_ENV} to a root with the real data (python -m "
            "sncn.pipeline fetches what it can).",
            stacklevel=2,
        )
    return sample


def samples_used() -> tuple[str, ...]:
    """The datasets this process has read from the embedded sample (:func:`sample_for`)."""
    return tuple(_SAMPLED)


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
        ``<data root>/generated`` (:func:`data_root`); with ``/embedded-sample`` appended once
        this process has read the embedded sample (:func:`samples_used`), so that data derived
        from it (generated corruptions, built folders) never stand in for the real data's. The
        folder need not exist yet; writers create it through :func:`writable_folder`.
    """
    if root is not None:
        return data_root(root) / "generated"
    if os.environ.get(CACHE_ENV):
        base = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        base = data_root() / "generated"
    # what is derived from sample data must never be mistaken for the real data's
    return base / "embedded-sample" if _SAMPLED else base


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
