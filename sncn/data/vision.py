"""Image classification data: CIFAR-10/100, CIFAR-10/100-C, ImageNet, ImageNet-C.

Layouts read under the data root (:func:`sncn.data.data_root`; ``$SNCN_DATA``, default ``data/``):

```
<root>/cifar10/cifar-10-batches-py/             torchvision's pickles (or directly in <root>)
<root>/cifar10/{train,test}/<class>/*.png|jpg   image folders (Kaggle, the project's data mirror)
<root>/cifar100/...                             the same with cifar-100-python/
<root>/CIFAR-10-C/<corruption>.npy, labels.npy  Hendrycks & Dietterich's arrays (also CIFAR-100-C/)
<root>/imagenet/{train,val}/<wnid>/*            ImageNet in torchvision's ImageFolder layout
<root>/ImageNet-C/<corruption>/<severity>/<wnid>/*
<root>/imagenet_sample/images/*.jpg, labels.csv 1,000 ImageNet images, one per class
```

Decoded CIFAR arrays are cached as ``<cache>/cifar10-{train,test}.npz`` in the cache folder
(:func:`sncn.data.cache_root`; ``$SNCN_CACHE``, default ``<root>/generated``).

CIFAR is decoded once into uint8 arrays and cached, then served in batches from memory (or from
the training device) by :class:`ArrayLoader`; augmentation (:func:`random_crop_flip`) and
normalisation (:func:`normalize`) run on whole batches there, so the input pipeline is never the
bottleneck.

Reference:
    Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009 (CIFAR);
    Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
    Perturbations", ICLR 2019 (CIFAR-C, ImageNet-C); Hendrycks et al., "AugMix", ICLR 2020 (the
    preprocessing the paper follows).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets
from torchvision import transforms

from sncn.corruptions import CORRUPTIONS
from sncn.data import CACHE_ENV, DATA_ENV, cache_root, data_root, sample_for, writable_folder
from sncn.data.download import download as download_file
from sncn.data.download import extract_tar
from sncn.utils import progress_bar

# ----------------------------------------------------------------------------------------------
# Constants (documented data)

#: The CIFAR datasets this module reads, and their numbers of classes.
NUM_CLASSES: dict[str, int] = {"cifar10": 10, "cifar100": 100}

#: CIFAR-10 classes in label order (= alphabetical order, so image folders sort into it).
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

#: CIFAR normalisation used by the paper's code and by AugMix: x -> (x - 0.5) / 0.5 per channel,
#: for both CIFAR-10 and CIFAR-100 (``transforms.Normalize([0.5] * 3, [0.5] * 3)`` in
#: amazon-science/crossnorm-selfnorm ``cifar.py`` and google-research/augmix ``cifar.py``).
CIFAR_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
CIFAR_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

#: Per-channel (mean, std) of the official training sets, for code that normalises by dataset
#: statistics instead (not what the paper does).
CIFAR_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

#: ImageNet normalisation (torchvision, AugMix and the paper's ``imagenet.py``).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# torchvision's CIFAR pickles: folder, archive URL and md5 (taken from torchvision's own classes),
# file lists per split, and the label key.
_PICKLES = {
    "cifar10": (tv_datasets.CIFAR10, b"labels"),
    "cifar100": (tv_datasets.CIFAR100, b"fine_labels"),
}

#: CIFAR-C archives on Zenodo: (folder, URL, md5). The md5s are the ones Zenodo publishes for
#: records 2535967 and 3555552, as used by ENSTA-U2IS-AI/torch-uncertainty
#: (``torch_uncertainty/datasets/classification/cifar/cifar_c.py``: ``tgz_md5``).
CIFAR_C_ARCHIVES: dict[str, tuple[str, str, str]] = {
    "cifar10": (
        "CIFAR-10-C",
        "https://zenodo.org/record/2535967/files/CIFAR-10-C.tar",
        "56bf5dcef84df0e2308c6dcbcbbd8499",
    ),
    "cifar100": (
        "CIFAR-100-C",
        "https://zenodo.org/record/3555552/files/CIFAR-100-C.tar",
        "11f0ed0f1191edbf9fa23466ae6021d3",
    ),
}

#: Number of severities in CIFAR-C / ImageNet-C (severity 1 first in each ``.npy``).
NUM_SEVERITIES = 5

#: Images per split of CIFAR-10 and CIFAR-100 (also per severity of the official CIFAR-C).
OFFICIAL_SIZES: dict[str, int] = {"train": 50_000, "test": 10_000}

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _check_cifar_name(name: str) -> str:
    key = name.lower().replace("-", "")
    if key not in NUM_CLASSES:
        raise ValueError(f"unknown CIFAR dataset {name!r}; expected one of {sorted(NUM_CLASSES)}")
    return key


# ----------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


def load_cifar(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    cache: bool = True,
    num_threads: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load a CIFAR split as uint8 arrays, decoding once and caching.

    Sources, first found wins: torchvision's pickles (``<root>/<name>/cifar-10-batches-py/`` or
    ``<root>/cifar-10-batches-py/``, and ``cifar-100-python/`` for CIFAR-100), in the official
    row order; image folders ``<root>/<name>/<split>/<class>/*.{png,jpg,jpeg}`` with classes
    sorted alphabetically (the standard label order for both datasets), images sorted by class
    then file name (numeric names in numeric order); else, only when ``download=True``,
    torchvision's archive from the CIFAR website (md5-checked) is fetched into ``<root>/<name>/``;
    else, for CIFAR-10 with the default root and ``$SNCN_SAMPLE=1``, the embedded sample's 600 / 300
    images (:func:`sncn.data.sample_for`).

    The decoded arrays are cached (written atomically) as :func:`cifar_cache_path`, in the cache
    folder (:func:`sncn.data.cache_root`), with a fingerprint of their source (file sizes of the
    pickles; names of the image files). A cache is used only while it matches the source found
    now; one that does not (a source completed, replaced or moved since) is rebuilt with a
    warning. A cache whose source is gone is used, with a warning when it does not hold the
    official number of images (:data:`OFFICIAL_SIZES`).

    ``download`` is off by default so that a run never reaches for the network unasked; the
    error raised when nothing is found says how to get the data.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        split: ``"train"`` or ``"test"``.
        root: the data root; default :func:`sncn.data.data_root`.
        download: fetch the official pickles if no local source is found.
        cache: read and write the cache. An unreadable cache is rebuilt; a cache folder that
            cannot be written only gives a warning (naming ``$SNCN_CACHE``).
        num_threads: threads for decoding image folders (default: CPU count, at most 8).
        progress: show a tqdm bar while decoding or downloading.

    Returns:
        ``(images, labels)``: uint8 ``(N, 32, 32, 3)`` and int64 ``(N,)``.

    Raises:
        FileNotFoundError: no source found (the message lists the places looked in and how to
            obtain the data).
        ValueError: a source exists but is malformed (wrong folder layout, a truncated pickle,
            an undecodable or wrongly sized image; the message names the file or folder).
    """
    name = _check_cifar_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    cache_path = cifar_cache_path(name, split, root)
    given, root = root, data_root(root)
    source = cifar_source(name, split, root)
    pickle_dir = _find_pickle_dir(name, root)
    files: list[Path] = []
    folder_labels: list[int] = []
    if pickle_dir is not None:
        fingerprint = _pickle_fingerprint(name, split, pickle_dir)
    elif source is not None:
        files, folder_labels = _cifar_image_files(name, source)
        fingerprint = _files_fingerprint(source, files)
    else:
        fingerprint = None
    if cache and cache_path.is_file():
        arrays = _read_cache(cache_path, name, split, source, fingerprint)
        if arrays is not None:
            return arrays

    if pickle_dir is not None:
        images, labels = _read_pickles(name, split, pickle_dir)
    elif source is not None:
        images = read_images(files, expect=(32, 32), num_threads=num_threads, progress=progress)
        labels = np.asarray(folder_labels, dtype=np.int64)
    elif download:
        source = download_cifar(name, root, progress=progress)
        fingerprint = _pickle_fingerprint(name, split, source)
        images, labels = _read_pickles(name, split, source)
    elif (sample := sample_for(name, given)) is not None:  # decoded in a second, never cached
        return load_cifar(name, split, sample, cache=False, num_threads=num_threads, progress=False)
    else:
        raise FileNotFoundError(_missing_cifar_message(name, split, root, cache_path))
    if cache:
        _write_cache(cache_path, images, labels, str(source), fingerprint)
    return images, labels


def cifar_source(name: str, split: str, root: str | os.PathLike | None = None) -> Path | None:
    """Where :func:`load_cifar` reads a split from in ``root``: the pickle folder, else the image
    folder ``<root>/<name>/<split>``; None when the root has neither (its cache not counted).
    """
    root = data_root(root)
    pickle_dir = _find_pickle_dir(_check_cifar_name(name), root)
    if pickle_dir is not None:
        return pickle_dir
    image_dir = root / name / split
    return image_dir if image_dir.is_dir() else None


def cifar_cache_path(name: str, split: str, root: str | os.PathLike | None = None) -> Path:
    """Where :func:`load_cifar` caches a decoded split.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        split: ``"train"`` or ``"test"``.
        root: the data root, as given to :func:`load_cifar` (None: the default root and
            ``$SNCN_CACHE``).

    Returns:
        ``<cache folder>/<name>-<split>.npz`` (:func:`sncn.data.cache_root`).
    """
    return cache_root(root) / f"{_check_cifar_name(name)}-{split}.npz"


def _title(name: str) -> str:
    return {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[name]


def download_cifar(
    name: str, root: str | os.PathLike | None = None, *, progress: bool = True
) -> Path:
    """Download and extract torchvision's CIFAR pickles into ``<root>/<name>/``.

    Uses the archive URL and md5 of torchvision's ``CIFAR10``/``CIFAR100`` classes, through
    :func:`sncn.data.download.download` (``.part`` file, md5 check, rename) and
    :func:`sncn.data.download.extract_tar` (temporary folder, rename). The archive is deleted
    after extraction.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: the data root; default :func:`sncn.data.data_root`.
        progress: show a tqdm bar.

    Returns:
        The pickle folder, ``<root>/<name>/cifar-10-batches-py`` (or ``cifar-100-python``).

    Raises:
        PermissionError: the data root cannot be written (names it and ``$SNCN_DATA``).
    """
    name = _check_cifar_name(name)
    cls, _ = _PICKLES[name]
    base = data_root(root) / name
    target = base / cls.base_folder
    if _pickles_complete(name, target):
        return target
    writable_folder(base, f"the {_title(name)} download", DATA_ENV)
    archive = download_file(cls.url, base / cls.filename, cls.tgz_md5, progress=progress)
    extract_tar(archive, base, cls.base_folder)
    archive.unlink()
    return target


def _pickle_files(name: str, split: str) -> list[str]:
    cls, _ = _PICKLES[name]
    return [f for f, _md5 in (cls.train_list if split == "train" else cls.test_list)]


def _pickles_complete(name: str, folder: Path) -> bool:
    files = _pickle_files(name, "train") + _pickle_files(name, "test")
    return all((folder / f).is_file() for f in files)


def _find_pickle_dir(name: str, root: Path) -> Path | None:
    cls, _ = _PICKLES[name]
    for folder in (root / name / cls.base_folder, root / cls.base_folder):
        if folder.is_dir():
            return folder
    return None


def _pickle_fingerprint(name: str, split: str, folder: Path) -> str:
    """The split's pickle files and their sizes (a re-extracted archive keeps them)."""
    sizes = [(folder / f).stat().st_size if (folder / f).is_file() else -1
             for f in _pickle_files(name, split)]  # fmt: skip
    return f"pickles {_pickle_files(name, split)} {sizes}"


def _files_fingerprint(folder: Path, files: Sequence[Path]) -> str:
    """The number of image files and a digest of their names relative to ``folder``."""
    digest = hashlib.sha1()
    for path in files:
        digest.update(str(path.relative_to(folder)).encode() + b"\n")
    return f"images {len(files)} {digest.hexdigest()}"


def _read_pickles(name: str, split: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    cls, label_key = _PICKLES[name]
    images, labels = [], []
    for file in _pickle_files(name, split):
        path = folder / file
        how = (
            f"delete {folder} and call load_cifar({name!r}, {split!r}, download=True), or "
            f"extract {cls.url} there again"
        )
        if not path.is_file():
            raise ValueError(f"{path} is missing from the torchvision CIFAR folder; {how}.")
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            target = np.asarray(batch[label_key], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path} is truncated or not a CIFAR pickle ({e!r}); {how}.") from e
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(target):
            raise ValueError(f"{path} holds data of shape {data.shape}; {how}.")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, 32, 32, 3)
        labels.append(target)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def _natural_key(path: Path) -> tuple[int, int, str]:
    stem = path.stem
    return (0, int(stem), path.name) if stem.isdigit() else (1, 0, path.name)


def image_folder_files(folder: str | os.PathLike) -> tuple[list[Path], list[int], list[str]]:
    """The images of a class-folder dataset, ``<folder>/<class>/*.{png,jpg,jpeg}``.

    Args:
        folder: the dataset folder; each subfolder is a class.

    Returns:
        ``(files, labels, classes)``: image paths sorted by class, then by file name (numeric
        names in numeric order); each file's class index; the class folder names in sorted
        order (index ``i`` is ``classes[i]``).

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: no class folders, or a class folder without images (names it).
    """
    folder = Path(folder)
    layout = f"{folder}/<class>/*.png|jpg|jpeg"
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} not found (expected the layout {layout}).")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{folder} has no class folders (expected the layout {layout}).")
    files: list[Path] = []
    labels: list[int] = []
    for index, cls in enumerate(classes):
        members = sorted(
            (p for p in (folder / cls).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES),
            key=_natural_key,
        )
        if not members:
            raise ValueError(f"{folder / cls} has no .png/.jpg/.jpeg images (layout {layout}).")
        files += members
        labels += [index] * len(members)
    return files, labels, classes


def _cifar_image_files(name: str, folder: Path) -> tuple[list[Path], list[int]]:
    layout = f"{folder}/<class>/*.png|jpg|jpeg"
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    expected = NUM_CLASSES[name]
    if len(classes) != expected or (name == "cifar10" and tuple(classes) != CIFAR10_CLASSES):
        shown = ", ".join(classes[:12]) + (" ..." if len(classes) > 12 else "")
        raise ValueError(
            f"{folder} does not have the image-folder layout {layout}: found {len(classes)} "
            f"class folders ({shown or 'none'}), expected {expected}"
            + (f" named {', '.join(CIFAR10_CLASSES)}" if name == "cifar10" else "")
            + f". Fix the folder, or remove it and use torchvision's pickles instead "
            f"(load_cifar({name!r}, ..., download=True))."
        )
    files, labels, _ = image_folder_files(folder)
    return files, labels


def read_images(
    files: Sequence[str | os.PathLike],
    *,
    size: int | None = None,
    expect: tuple[int, int] | None = None,
    num_threads: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Decode image files into one uint8 ``(N, H, W, 3)`` array, in parallel threads.

    Args:
        files: the image paths.
        size: resize each image so that its shorter side is ``size`` px (bilinear), then crop
            the centre ``size x size``; None keeps the images as they are.
        expect: the ``(height, width)`` every image must have (after ``size``); None: that of
            the first image.
        num_threads: decoding threads (default: CPU count, at most 8).
        progress: show a tqdm bar.

    Returns:
        uint8 ``(len(files), H, W, 3)``.

    Raises:
        ValueError: an image cannot be decoded, or has another size than ``expect`` (the
            message names the file).
    """
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("no image files to read")
    if expect is None:
        expect = _decode_image(files[0], size).shape[:2]
    images = np.empty((len(files), *expect, 3), dtype=np.uint8)
    threads = num_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads) as pool:
        decoded = pool.map(lambda f: _decode_image(f, size), files)
        bar = progress_bar(len(files), progress, decoded,
                           desc=f"decode {files[0].parent.parent}")  # fmt: skip
        for i, image in enumerate(bar):
            if image.shape[:2] != tuple(expect):
                how = "pass a size to resize them" if size is None else "check the file"
                raise ValueError(
                    f"{files[i]} is {image.shape[1]}x{image.shape[0]}, expected "
                    f"{expect[1]}x{expect[0]} like the other images ({how})."
                )
            images[i] = image
    return images


def _decode_image(path: Path, size: int | None) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if size is not None:
                w, h = image.size
                scale = size / min(w, h)
                w, h = max(size, round(w * scale)), max(size, round(h * scale))
                image = image.resize((w, h), Image.BILINEAR)
                left, top = (w - size) // 2, (h - size) // 2
                image = image.crop((left, top, left + size, top + size))
            return np.asarray(image)
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(
            f"cannot decode {path} ({e}); replace the file, or delete the folder and "
            f"extract the dataset again."
        ) from e


def _read_cache(
    path: Path, name: str, split: str, source: Path | None, fingerprint: str | None
) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
            recorded = str(z["source"]) if "source" in z.files else "unknown"
            built_from = str(z["fingerprint"]) if "fingerprint" in z.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        warnings.warn(f"ignoring unreadable cache {path} ({e!r}); rebuilding it", stacklevel=3)
        return None
    ok = (
        images.dtype == np.uint8
        and images.ndim == 4
        and images.shape[1:] == (32, 32, 3)
        and labels.shape == (len(images),)
    )
    if not ok:
        warnings.warn(f"ignoring malformed cache {path}; rebuilding it", stacklevel=3)
        return None
    if fingerprint is not None and (built_from != fingerprint or recorded != str(source)):
        warnings.warn(
            f"ignoring the cache {path} ({len(images):,} images from {recorded}): it does not "
            f"match the source found now, {source}; rebuilding it",
            stacklevel=3,
        )
        return None
    if fingerprint is None and len(images) != OFFICIAL_SIZES[split]:
        warnings.warn(
            f"using the cache {path}: {len(images):,} images, not the {OFFICIAL_SIZES[split]:,} "
            f"of the official {_title(name)} {split} split, and its source ({recorded}) is not "
            f"there to check it against. Delete the cache if that is not intended.",
            stacklevel=3,
        )
    return images, labels.astype(np.int64, copy=False)


def _write_cache(
    path: Path, images: np.ndarray, labels: np.ndarray, source: str, fingerprint: str
) -> None:
    """Write the cache atomically: a temporary file in the same folder, then a rename."""
    tmp = None
    try:
        writable_folder(path.parent, "the decoded-CIFAR cache", CACHE_ENV)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.stem}-", suffix=".npz.tmp", delete=False
        ) as f:
            tmp = Path(f.name)
            np.savez(f, images=images, labels=labels, source=np.array(source),
                     fingerprint=np.array(fingerprint))  # fmt: skip
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # temporary files are created private
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"continuing without a cache: {e}", stacklevel=3)
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def _missing_cifar_message(name: str, split: str, root: Path, cache_path: Path) -> str:
    cls, _ = _PICKLES[name]
    return (
        f"{_title(name)} ({split}) not found under the data root {root} "
        f"(set ${DATA_ENV} or pass root=). Looked for:\n"
        f"  {root / name / cls.base_folder}/ and {root / cls.base_folder}/ (torchvision pickles)\n"
        f"  {root / name / split}/<class>/*.png|jpg|jpeg (image folders)\n"
        f"  {cache_path} (the decoded cache)\n"
        f"To obtain it: call load_cifar({name!r}, {split!r}, download=True), which fetches "
        f"{cls.url} (md5 {cls.tgz_md5}) into {root / name}/; or download that archive and "
        f"extract it into {root / name}/; or lay out image folders as above."
    )


# ----------------------------------------------------------------------------------------------
# Serving arrays


class ArrayDataset(Dataset):
    """A map-style dataset over uint8 ``(N, H, W, 3)`` arrays, for ``torch.utils.data``.

    Items are ``(image, label)``: a uint8 ``(3, H, W)`` tensor (or ``transform`` of it) and an
    int. For training, :class:`ArrayLoader` is faster: it slices whole batches.

    Args:
        images: uint8 ``(N, H, W, 3)``.
        labels: integer ``(N,)``.
        transform: applied to each ``(3, H, W)`` uint8 tensor, e.g. ``normalize``.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        _check_arrays(images, labels)
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]  # (3, H, W) uint8
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


class ArrayLoader:
    """Batches straight from in-memory arrays, held once on ``device``.

    Each iteration yields ``(images, labels)``: uint8 ``(B, 3, H, W)`` (or ``transform`` of
    ``augment`` of the batch, e.g. :func:`random_crop_flip` then :func:`normalize`) and int64
    ``(B,)``, both on ``device``. No worker processes, no per-image Python work: the order, the
    slicing, ``augment`` and ``transform`` all run on ``device``, on whole batches.

    For training, build the loader once (the arrays go to ``device`` once) and hand each epoch
    :meth:`shuffled` with the epoch's generator: with a generator on ``device``
    (:func:`sncn.utils.device_generator`) an epoch makes no host-device copy and no
    synchronisation at all.

    Args:
        images: uint8 ``(N, H, W, 3)``.
        labels: integer ``(N,)``.
        batch_size: images per batch.
        shuffle: draw a new permutation from ``generator`` at each ``iter()``.
        generator: the source of the permutation and of ``augment``; required when
            ``shuffle`` (or pass it later to :meth:`shuffled`). On the CPU or on ``device``.
        drop_last: drop a final batch smaller than ``batch_size``.
        device: where the arrays live and batches are served.
        augment: ``augment(batch, generator)``, applied to each uint8 batch on ``device`` first
            (e.g. :func:`random_crop_flip`).
        transform: applied to each (augmented) batch on ``device`` (e.g. :func:`normalize`).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        _check_arrays(images, labels)
        if shuffle and generator is None:
            raise ValueError("shuffle=True needs an explicit torch.Generator")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        images_t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.images = images_t.contiguous().to(device)  # (N, 3, H, W) uint8
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last
        self.augment = augment
        self.transform = transform

    def shuffled(self, generator: torch.Generator) -> ArrayLoader:
        """This loader in a new random order drawn from ``generator``, which also drives
        ``augment``: one epoch's batches. The arrays are shared, not copied.

        Args:
            generator: the epoch's generator, on the CPU or on the loader's device.

        Returns:
            An :class:`ArrayLoader` over the same arrays with ``shuffle=True``.
        """
        epoch = copy.copy(self)
        epoch.shuffle, epoch.generator = True, generator
        return epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.labels)
        if self.augment is not None and self.generator is None:
            raise ValueError("augment draws from a generator: pass generator= or iterate "
                             "loader.shuffled(generator)")  # fmt: skip
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.generator.device)
            order = order.to(self.labels.device)
        else:
            order = None
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min(n, (b + 1) * self.batch_size)
            if order is None:
                x, y = self.images[lo:hi], self.labels[lo:hi]
            else:
                index = order[lo:hi]
                x, y = self.images[index], self.labels[index]
            if self.augment is not None:
                x = self.augment(x, self.generator)
            if self.transform is not None:
                x = self.transform(x)
            yield x, y


def _check_arrays(images: np.ndarray, labels: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"images must be uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}"
        )
    if np.shape(labels) != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {np.shape(labels)}")


# ----------------------------------------------------------------------------------------------
# Batch augmentation on the training device


def random_crop_flip(
    images: Tensor,
    generator: torch.Generator,
    *,
    padding: int = 4,
    flip_prob: float = 0.5,
    padding_mode: str = "constant",
) -> Tensor:
    """Random crop with zero padding and random horizontal flip of a whole batch at once.

    Per image, the same distribution as torchvision's ``RandomCrop(H, padding)`` followed by
    ``RandomHorizontalFlip(flip_prob)`` (the CIFAR training augmentation of AugMix and the
    paper): the batch is zero-padded by ``padding`` on each side, each image gets a crop offset
    drawn uniformly from ``0..2*padding`` in each axis and is mirrored with probability
    ``flip_prob``. One gather, no per-image Python loop; runs on the batch's device.

    Args:
        images: ``(N, C, H, W)``, any dtype (uint8 or float).
        generator: source of all randomness; on the CPU or on ``images``' device.
        padding: zero padding on each side, in pixels.
        flip_prob: probability of a horizontal flip.
        padding_mode: ``"constant"`` (zeros, as above) or ``"reflect"`` (mirrored borders without
            repeating the edge, torchvision's ``padding_mode="reflect"``: FixMatch's crop).

    Returns:
        ``(N, C, H, W)``, same dtype and device as ``images``.
    """
    if padding_mode not in ("constant", "reflect"):
        raise ValueError(f"padding_mode must be 'constant' or 'reflect', got {padding_mode!r}.")
    n, _, h, w = images.shape
    device = images.device
    # (2, N) offsets in [0, 2p] and (N,) flips, drawn on the generator's device
    gen_device = generator.device
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=gen_device)
    flips = torch.rand(n, generator=generator, device=gen_device) < flip_prob
    offsets, flips = offsets.to(device), flips.to(device)
    if padding_mode == "reflect":  # (N, C, H+2p, W+2p): index maps, any dtype
        if padding >= min(h, w):
            raise ValueError(f"reflect padding {padding} must be smaller than the image {h}x{w}.")

        def mirror(size: int) -> Tensor:
            index = torch.arange(-padding, size + padding, device=device).abs()
            return torch.where(index > size - 1, 2 * (size - 1) - index, index)

        padded = images[:, :, mirror(h)][:, :, :, mirror(w)]
    else:
        padded = F.pad(images, (padding, padding, padding, padding))  # (N, C, H+2p, W+2p), zeros
    rows = offsets[0, :, None] + torch.arange(h, device=device)  # (N, H)
    cols = offsets[1, :, None] + torch.arange(w, device=device)  # (N, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # mirrored read order
    batch = torch.arange(n, device=device)[:, None, None]  # (N, 1, 1)
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def normalize(
    images: Tensor,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
) -> Tensor:
    """Scale to [0, 1] (uint8 input) and normalise per channel: ``(x - mean) / std``.

    Args:
        images: ``(N, C, H, W)`` or ``(C, H, W)``; uint8 in [0, 255] or float in [0, 1].
        mean: per-channel mean (default :data:`CIFAR_MEAN`, the paper's 0.5).
        std: per-channel std (default :data:`CIFAR_STD`, the paper's 0.5).

    Returns:
        float32 tensor of the same shape, on ``images``' device (``mean`` and ``std`` are sent
        there without waiting: no host-device synchronisation).
    """
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    m = torch.as_tensor(mean, dtype=x.dtype)[:, None, None].to(x.device, non_blocking=True)
    s = torch.as_tensor(std, dtype=x.dtype)[:, None, None].to(x.device, non_blocking=True)
    return (x - m) / s  # (C, 1, 1) broadcast


# ----------------------------------------------------------------------------------------------
# CIFAR-10-C / CIFAR-100-C


def download_cifar_c(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Download CIFAR-10-C or CIFAR-100-C from Zenodo into ``<root>/CIFAR-10-C/``.

    The ~2.9 GB tar goes to ``<root>/CIFAR-10-C.tar.part`` (resumed if an earlier run was
    interrupted), is md5-checked against :data:`CIFAR_C_ARCHIVES`, renamed, extracted into a
    temporary folder and renamed into place. A wrong checksum deletes the download and raises.
    A folder already there is kept if it is complete (:func:`official_cifar_c`), else replaced.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: the data root; default :func:`sncn.data.data_root`.
        keep_archive: keep the ``.tar`` after extraction (default: delete it).
        progress: show a tqdm bar.

    Returns:
        The extracted folder, e.g. ``<root>/CIFAR-10-C``.

    Raises:
        PermissionError: the data root cannot be written (names it and ``$SNCN_DATA``).

    Reference:
        Hendrycks & Dietterich, ICLR 2019; Zenodo records 2535967 and 3555552.
    """
    name = _check_cifar_name(name)
    folder, url, md5 = CIFAR_C_ARCHIVES[name]
    root = data_root(root)
    target = root / folder
    if _cifar_c_problem(target) is None:
        return target
    writable_folder(root, f"the {folder} download", DATA_ENV)
    archive = download_file(url, root / f"{folder}.tar", md5, progress=progress)
    extract_tar(archive, root, folder)
    if not keep_archive:
        archive.unlink()
    return target


def official_cifar_c(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """The official CIFAR-10-C / CIFAR-100-C folder, checked whole; None when there is none.

    Every file is opened (memory-mapped, so only the headers are read) and its shape checked:
    ``labels.npy`` of 50,000 labels and the 15 ``<corruption>.npy`` of 50,000 uint8 32 x 32
    images each. So a truncated or missing file is found in a second, before anything trains.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: the data root; default :func:`sncn.data.data_root`.

    Returns:
        ``<root>/CIFAR-10-C`` (or ``CIFAR-100-C``) if it is complete; None if it does not exist
        or holds no ``.npy`` file.

    Raises:
        ValueError: the folder holds some files but not all 16 complete ones; the message names
            the first bad file and gives the command that downloads the folder again.
    """
    name = _check_cifar_name(name)
    folder = data_root(root) / CIFAR_C_ARCHIVES[name][0]
    if not folder.is_dir() or not any(folder.glob("*.npy")):
        return None
    problem = _cifar_c_problem(folder)
    if problem is not None:
        _, url, _ = CIFAR_C_ARCHIVES[name]
        where = "" if root is None else f", root={str(root)!r}"
        command = (
            f'python -c "from sncn.data.vision import download_cifar_c; '
            f'download_cifar_c({name!r}{where})"'
        )
        raise ValueError(
            f"{problem} The official {folder.name} is incomplete. Download it again with\n"
            f"  {command}\n(fetches {url}, about 2.9 GB, md5-checked, and replaces {folder}), "
            f"or delete {folder} to evaluate on corruptions generated by sncn.corruptions "
            f"instead (the tables then say 'generated')."
        )
    return folder


def _cifar_c_problem(folder: Path) -> str | None:
    """The first problem of an official CIFAR-C folder, as a sentence; None if complete."""
    rows = NUM_SEVERITIES * OFFICIAL_SIZES["test"]
    labels = None
    for stem in ("labels", *CORRUPTIONS):
        path = folder / f"{stem}.npy"
        if not path.is_file():
            return f"{path} is missing."
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:
            return f"{path} is truncated or corrupt ({e})."
        if labels is None:
            labels = array
            if array.shape != (rows,):
                return f"{path} has shape {array.shape}, expected ({rows},)."
        elif array.dtype != np.uint8 or array.ndim != 4 or array.shape[::3] != (len(labels), 3):
            return (
                f"{path} holds {array.dtype} {array.shape}, expected uint8 "
                f"({len(labels)}, H, W, 3) to match labels.npy."
            )
    return None


def load_cifar_c(
    name: str | os.PathLike,
    corruption: str,
    severity: int,
    root: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one (corruption, severity) slice of CIFAR-C without reading the whole file.

    The standard layout holds ``<corruption>.npy`` of ``5 * n`` uint8 images (severity 1 first)
    and ``labels.npy`` of ``5 * n`` labels (n = 10,000 for the official sets; generated
    folders may hold fewer: n is ``len(labels) / 5``). The ``.npy`` is memory-mapped and only
    the slice ``[(severity - 1) * n, severity * n)`` is copied.

    Args:
        name: ``"cifar10"``/``"cifar100"`` (reads ``<root>/CIFAR-10-C`` / ``CIFAR-100-C``), or
            the path of a folder in that layout (e.g. one written by ``sncn.corruptions``).
        corruption: file stem, e.g. ``"gaussian_noise"``.
        severity: 1 to 5.
        root: the data root for a dataset name; default :func:`sncn.data.data_root`.

    Returns:
        ``(images, labels)``: uint8 ``(n, H, W, 3)`` and int64 ``(n,)``.

    Raises:
        FileNotFoundError: the folder or file is missing (the message says how to obtain it).
        ValueError: a truncated or corrupt ``.npy``, or inconsistent sizes (names the file).
    """
    if not 1 <= severity <= NUM_SEVERITIES:
        raise ValueError(f"severity must be in 1..{NUM_SEVERITIES}, got {severity}")
    folder, how = _cifar_c_folder(name, root)
    labels = _open_npy(folder / "labels.npy", how)
    if labels.ndim != 1 or len(labels) % NUM_SEVERITIES:
        raise ValueError(
            f"{folder / 'labels.npy'} has shape {labels.shape}; expected (5 * n,). {how}"
        )
    n = len(labels) // NUM_SEVERITIES
    path = folder / f"{corruption}.npy"
    if not path.is_file():
        present = sorted(p.stem for p in folder.glob("*.npy") if p.stem != "labels")
        raise FileNotFoundError(
            f"{path} not found; corruptions present in {folder}: {', '.join(present) or 'none'}. "
            f"{how}"
        )
    images = _open_npy(path, how)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
        raise ValueError(
            f"{path} holds {images.dtype} {images.shape}; expected uint8 ({len(labels)}, H, W, 3) "
            f"to match labels.npy. {how}"
        )
    lo, hi = (severity - 1) * n, severity * n
    return np.array(images[lo:hi]), np.array(labels[lo:hi], dtype=np.int64)  # copies, writable


def _cifar_c_folder(name: str | os.PathLike, root: str | os.PathLike | None) -> tuple[Path, str]:
    key = str(name).lower().replace("-", "")
    if key in CIFAR_C_ARCHIVES:
        folder_name, url, md5 = CIFAR_C_ARCHIVES[key]
        folder = data_root(root) / folder_name
        how = (
            f"To obtain it: call sncn.data.vision.download_cifar_c({key!r}) (fetches {url}, "
            f"md5 {md5}, into {folder.parent}), or download and extract that tar there by hand, "
            f"or generate the corruptions with sncn.corruptions. Delete a damaged folder first."
        )
    else:
        folder = Path(name)
        how = (
            f"Regenerate {folder} (e.g. with sncn.corruptions), or point to a folder in the "
            f"CIFAR-C layout (<corruption>.npy + labels.npy)."
        )
    if not folder.is_dir():
        raise FileNotFoundError(f"CIFAR-C folder {folder} not found. {how}")
    return folder, how


def _open_npy(path: Path, how: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found. {how}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise ValueError(f"{path} is truncated or corrupt ({e}). {how}") from e


# ----------------------------------------------------------------------------------------------
# ImageNet, ImageNet-C and the 1,000-image sample


def imagenet_transform(train: bool) -> transforms.Compose:
    """The standard ImageNet preprocessing of AugMix and the paper.

    Args:
        train: ``RandomResizedCrop(224)`` + ``RandomHorizontalFlip()`` if True, else
            ``Resize(256)`` + ``CenterCrop(224)`` (also used for ImageNet-C, as in the paper's and
            AugMix's ``imagenet.py``); then ``ToTensor()`` and ImageNet mean/std.

    Returns:
        A torchvision transform from a PIL image to a float ``(3, 224, 224)`` tensor. The train
        transform draws from torch's global generator (torchvision's convention), seeded by
        ``sncn.utils.seed_everything``.
    """
    if train:
        head = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
    else:
        head = [transforms.Resize(256), transforms.CenterCrop(224)]
    tail = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return transforms.Compose(head + tail)


class _ClassFolder(tv_datasets.ImageFolder):
    """ImageFolder whose class indices come from a fixed wnid -> index map."""

    def __init__(
        self,
        root: Path,
        transform: Callable | None,
        class_to_idx: Mapping[str, int] | None,
    ) -> None:
        self._fixed = dict(class_to_idx) if class_to_idx is not None else None
        super().__init__(str(root), transform=transform)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        present = sorted(e.name for e in os.scandir(directory) if e.is_dir())
        if not present:
            raise FileNotFoundError(f"no class folders in {directory}")
        if self._fixed is None:
            if len(present) != 1000:
                raise ValueError(
                    f"{directory} has {len(present)} class folders, not ImageNet's 1,000, so "
                    f"sorted-folder indices would not be the standard labels; pass "
                    f"class_to_idx=sncn.data.vision.imagenet_class_to_idx() (or your own map)."
                )
            return present, {c: i for i, c in enumerate(present)}
        unknown = [c for c in present if c not in self._fixed]
        if unknown:
            raise ValueError(f"{directory}: class folders {unknown[:5]} are not in class_to_idx")
        return present, {c: self._fixed[c] for c in present}


def _image_folder(
    folder: Path,
    transform: Callable | None,
    class_to_idx: Mapping[str, int] | None,
    how: str,
) -> tv_datasets.ImageFolder:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found. {how}")
    try:
        return _ClassFolder(folder, transform, class_to_idx)
    except FileNotFoundError as e:  # torchvision: no class folder / no valid image
        raise FileNotFoundError(
            f"{folder} does not have the layout <wnid>/*.JPEG ({e}). {how}"
        ) from e


def imagenet_folder(
    split: str,
    root: str | os.PathLike | None = None,
    *,
    transform: Callable | None = None,
    class_to_idx: Mapping[str, int] | None = None,
) -> tv_datasets.ImageFolder:
    """ImageNet (ILSVRC-2012) in torchvision's ImageFolder layout.

    Args:
        split: ``"train"`` or ``"val"`` (``<root>/imagenet/val``, or ``validation`` as the
            paper's code names it).
        root: the data root; default :func:`sncn.data.data_root`.
        transform: default :func:`imagenet_transform` of ``split == "train"``.
        class_to_idx: wnid -> label; default: sorted folder names (must be all 1,000).

    Returns:
        An ``ImageFolder`` of ``(image tensor, label)``.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    base = data_root(root) / "imagenet"
    folder = base / split
    if split == "val" and not folder.is_dir() and (base / "validation").is_dir():
        folder = base / "validation"
    how = (
        f"ImageNet cannot be downloaded automatically: get ILSVRC-2012 from "
        f"https://image-net.org/download.php and lay it out as {base}/{{train,val}}/<wnid>/*.JPEG "
        f"(the validation images sorted into wnid folders, e.g. with the well-known valprep.sh)."
    )
    if transform is None:
        transform = imagenet_transform(train=split == "train")
    return _image_folder(folder, transform, class_to_idx, how)


def imagenet_c_folder(
    corruption: str,
    severity: int,
    root: str | os.PathLike | None = None,
    *,
    directory: str | os.PathLike | None = None,
    transform: Callable | None = None,
    class_to_idx: Mapping[str, int] | None = None,
) -> tv_datasets.ImageFolder:
    """One (corruption, severity) of ImageNet-C: ``<dir>/<corruption>/<severity>/<wnid>/*``.

    Args:
        corruption: e.g. ``"gaussian_noise"``.
        severity: 1 to 5.
        root: the data root; the default folder is ``<root>/ImageNet-C``.
        directory: an ImageNet-C folder to read instead (e.g. one generated by
            ``sncn.corruptions`` from the ImageNet sample).
        transform: default :func:`imagenet_transform` (test), as in the paper's code.
        class_to_idx: wnid -> label; default sorted folder names (must be all 1,000); pass
            :func:`imagenet_class_to_idx` for a subset of classes.

    Returns:
        An ``ImageFolder`` of ``(image tensor, label)``.
    """
    if not 1 <= severity <= NUM_SEVERITIES:
        raise ValueError(f"severity must be in 1..{NUM_SEVERITIES}, got {severity}")
    base = Path(directory) if directory is not None else data_root(root) / "ImageNet-C"
    how = (
        f"Download ImageNet-C from https://zenodo.org/record/2235448 (noise.tar, blur.tar, "
        f"weather.tar, digital.tar) and extract them into {base} so that "
        f"{base}/<corruption>/<severity>/<wnid>/*.JPEG exists, or generate it with "
        f"sncn.corruptions."
    )
    if transform is None:
        transform = imagenet_transform(train=False)
    return _image_folder(base / corruption / str(severity), transform, class_to_idx, how)


_SAMPLE_HOW = (
    "Lay out the project's data mirror with `.ci/prepare-data <mirror> <root>` (see "
    "shared/data/MANIFEST.md), or take the images from "
    "https://github.com/EliSchwartz/imagenet-sample-images with a labels.csv "
    "(filename,wnid,class_index,...)."
)


def _read_sample_labels(root: str | os.PathLike | None) -> tuple[Path, list[dict[str, str]]]:
    base = data_root(root) / "imagenet_sample"
    path = base / "labels.csv"
    if not path.is_file() and (sample := sample_for("imagenet_sample", root)) is not None:
        base = sample / "imagenet_sample"
        path = base / "labels.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found. {_SAMPLE_HOW}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"filename", "wnid", "class_index"} <= set(rows[0]):
        raise ValueError(f"{path} needs the columns filename, wnid, class_index. {_SAMPLE_HOW}")
    return base, rows


def imagenet_class_to_idx(root: str | os.PathLike | None = None) -> dict[str, int]:
    """The standard ImageNet wnid -> label map, read from the sample's ``labels.csv``.

    Args:
        root: the data root; default :func:`sncn.data.data_root`.

    Returns:
        ``{wnid: class_index}`` for the 1,000 classes (sorted-wnid order).
    """
    _, rows = _read_sample_labels(root)
    return {r["wnid"]: int(r["class_index"]) for r in rows}


class ImageNetSample(Dataset):
    """The 1,000-image ImageNet sample: ``imagenet_sample/images/{index:03d}_{wnid}.jpg``.

    Labels come from ``labels.csv`` (``class_index``, the standard torchvision index). The
    images are stored at 256x256 so that the default test transform gives exactly the standard
    ``Resize(256) -> CenterCrop(224)`` pixels. Smoke tests only, not accuracy numbers.

    Args:
        root: the data root; default :func:`sncn.data.data_root`.
        transform: default :func:`imagenet_transform` (test).
    """

    def __init__(
        self, root: str | os.PathLike | None = None, transform: Callable | None = None
    ) -> None:
        base, rows = _read_sample_labels(root)
        self.samples = [(base / "images" / r["filename"], int(r["class_index"])) for r in rows]
        missing = [str(p) for p, _ in self.samples if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} images listed in {base / 'labels.csv'} are missing, e.g. "
                f"{missing[0]}. {_SAMPLE_HOW}"
            )
        self.transform = imagenet_transform(train=False) if transform is None else transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            image = image.convert("RGB")
        return self.transform(image), label
