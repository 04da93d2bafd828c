"""ImageNet-C with ResNet-50: plain, SN, CN, SNCN, + consistency, + AugMix, + IBN (Table 2, 16-19).

What ``notebooks/03_imagenet_c.ipynb`` calls, and a command line that ``torchrun`` launches:

    torchrun --nproc_per_node 8 -m sncn.experiments.imagenet_c --method sncn --data DATA/imagenet

(one process per GPU; multi-node with ``--nnodes``/``--rdzv_endpoint`` as usual). Every rank
trains on its share of each global batch (:mod:`sncn.train.distributed`); rank 0 writes the
checkpoint (every epoch, exact resume) and the run folder.

Settings (:data:`SETTING`, resolved per method by :func:`resolve_setting`) follow the paper
(§4.1) and its released ``imagenet.py`` and ``imagenet-scripts``: 90 epochs, SGD momentum 0.9 (no
Nesterov), weight decay 1e-4, lr 0.1 times batch/256 (:func:`peak_lr`), divided by 10 at epochs
``epochs // 3`` and ``2 * (epochs // 3)`` (``milestones="released"``, :func:`lr_milestones`: 30
and 60 at 90 epochs, as §4.1 states; a shortened run decays too), the global batch of the
method's released script (``batch_size="released"``, :data:`RELEASED_SCRIPT`): 128, i.e. a peak
lr of 0.05 (``run-sn.sh``, ``run-cn.sh``, ``run-cnsn.sh``, ``run-cnsn-consist.sh``), and 256, lr
0.1, for the AugMix methods (``run-cnsn-augmix.sh``); an int ``batch_size`` sets one global batch
for every method. RandomResizedCrop(224) + flip for training and Resize(256) + CenterCrop(224)
for testing. CrossNorm follows the released recipe: it acts on the input batch (``image_cn``),
with probability ``cn_prob`` 0.5 per step; SN sits at post-addition (IBN-b + AugMix:
post-residual).

BatchNorm batches and CrossNorm pairs: the released scripts wrap the model in
``nn.DataParallel``. ``run-sn.sh``, ``run-cn.sh`` and ``run-cnsn.sh`` ran on one GPU (BatchNorm
over all 128 images), ``run-cnsn-consist.sh`` on 4 (BatchNorm over 32 images in each of its three
passes) and ``run-cnsn-augmix.sh`` on 8 (the stacked clean, AugMix and AugMix batches, 768 images,
cut into 8 contiguous chunks of 96: the first GPUs normalise clean images only); the image
CrossNorm acted on the whole batch before the scatter (partners drawn over all of it). Here each
DDP rank normalises its own share of the global batch (batch / ranks images; with AugMix its own
three views stacked, so one BatchNorm batch mixes the views) and the image CrossNorm, a module of
the model, pairs images within that share; ``sync_bn`` turns on ``SyncBatchNorm`` (statistics
over the global batch). In one process, ``ghost_batches=k`` (:class:`GhostBatch`) cuts each model
input into ``k`` contiguous chunks as ``nn.DataParallel`` on ``k`` GPUs does, which reproduces the
released BatchNorm batches (k = 1, 4 and 8 for the scripts above), while the image CrossNorm then
pairs within each chunk.

From scratch or fine-tuned: every released script trains from scratch except ``run-cn.sh``,
which fine-tunes torchvision's ImageNet ResNet-50 (``--pretrained resnet50-19c8e357.pth``) for the
same 90-epoch schedule; the paper (App. 6.4) says its CN of Table 19 is such a fine-tuning, done to
compare with Stylized-ImageNet (itself fine-tuned). So method ``cn_finetune`` (``pretrained=
"torchvision"``) is Table 19's CN column, and every other method trains from scratch
(``pretrained=""``): Table 2's SNCN and SNCN+AugMix rows (``run-cnsn.sh``,
``run-cnsn-augmix.sh``) and AugMix* (retrained for 90 epochs, §4.1), Table 19's SN, SNCN and
SNCN+Crop columns, and Tables 16-18. Method ``cn`` is the same CN from scratch. Table 2's
Standard, Patch Uniform, Random AA*, MaxBlur Pool and SIN rows (and Table 19's Basic and SIN) are
quoted from earlier work; SIN is Geirhos et al.'s fine-tuning, not run here.

Evaluation: clean top-1 error on the validation folder, and ImageNet-C errors per corruption and
severity with the AlexNet-normalised mCE: on ``<root>/ImageNet-C`` when present, else on copies
of the validation images corrupted with the 224-px table of :mod:`sncn.corruptions` (labelled so).

Offline (the ``smoke`` and ``quick`` profiles), ImageNet cannot be downloaded: the same code runs
on an ImageNet-format folder built from the CIFAR-10 mirror (:func:`build_cifar_folder`), and the
ImageNet-C generation and folder reading run end to end on the 1,000-image ImageNet sample
(:func:`sample_check`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets as tv_datasets
from torchvision import transforms

from sncn import results
from sncn.corruptions import CORRUPTIONS, SEVERITIES, corrupt, make_c
from sncn.data import cache_root, data_root, writable_folder
from sncn.data.augmix import ImageAugMixViews
from sncn.data.vision import (
    CIFAR10_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageNetSample,
    imagenet_c_folder,
    imagenet_class_to_idx,
    load_cifar,
)
from sncn.hparams import IMAGENET_SETTING
from sncn.metrics import imagenet_ce, imagenet_mce, relative_mce
from sncn.models import create_model
from sncn.models.resnet import load_pretrained, torchvision_resnet50_state
from sncn.train import (
    ConsistencyTrainer,
    ImageCrossNormAugMixTrainer,
    Trainer,
    fit,
    step_schedule,
)
from sncn.train.distributed import (
    GhostBatch,
    all_reduce_sum,
    cleanup,
    init_distributed,
    is_main,
    rank_batches,
    wrap_ddp,
)
from sncn.utils import progress_bar

#: Paper-scale settings (:data:`sncn.hparams.IMAGENET_SETTING`). ``lr`` is per 256 images;
#: ``batch_size`` ``"released"`` is resolved per method (:func:`resolve_setting`).
SETTING: dict[str, Any] = dict(IMAGENET_SETTING)

# model keywords of the released scripts (imagenet-scripts/run-*.sh)
_SN_POST = {"cnsn_type": "sn", "pos": "post"}
_IMAGE_CN = {"image_cn": True}

#: Method -> model keywords and trainer (``supervised``, ``consistency``, ``augmix``). Table 2's
#: rows, Table 16's IBN columns, Tables 17/18's positions (``sn_<pos>``, ``cn_<pos>``: the unit in
#: every bottleneck, CN inside the network) and Table 19's crop variant.
METHODS: dict[str, dict[str, Any]] = {
    "basic": {"model": {}, "trainer": "supervised"},
    "sn": {"model": _SN_POST, "trainer": "supervised"},
    "cn": {"model": {**_IMAGE_CN, "crop": "both"}, "trainer": "supervised"},  # from scratch
    "cn_finetune": {  # run-cn.sh: the same CN, fine-tuning torchvision's ImageNet weights
        "model": {**_IMAGE_CN, "crop": "both"},
        "trainer": "supervised",
        "pretrained": "torchvision",
    },
    "sncn": {"model": {**_SN_POST, **_IMAGE_CN}, "trainer": "supervised"},  # run-cnsn.sh
    "sncn_crop": {"model": {**_SN_POST, **_IMAGE_CN, "crop": "both"}, "trainer": "supervised"},
    "sncn_consistency": {  # run-cnsn-consist.sh
        "model": {**_SN_POST, **_IMAGE_CN, "crop": "both"},
        "trainer": "consistency",
    },
    "augmix": {"model": {}, "trainer": "augmix", "cn_prob": 0.0},
    "sncn_augmix": {"model": {**_SN_POST, **_IMAGE_CN}, "trainer": "augmix"},
    "ibn_a": {"model": {"ibn": "a"}, "trainer": "supervised"},
    "ibn_a_cn": {"model": {"ibn": "a", **_IMAGE_CN}, "trainer": "supervised"},
    "ibn_a_cn_cr": {"model": {"ibn": "a", **_IMAGE_CN, "crop": "both"}, "trainer": "consistency"},
    "ibn_a_cn_augmix": {"model": {"ibn": "a", **_IMAGE_CN}, "trainer": "augmix"},
    "ibn_b": {"model": {"ibn": "b"}, "trainer": "supervised"},
    "ibn_b_sn": {"model": {"ibn": "b", **_SN_POST}, "trainer": "supervised"},
    "ibn_b_sn_augmix": {"model": {"ibn": "b", **_SN_POST}, "trainer": "augmix", "cn_prob": 0.0},
    "ibn_b_sncn_augmix": {  # run-cnsn-augmix.sh: the paper's best model
        "model": {"ibn": "b", "cnsn_type": "sn", "pos": "residual", **_IMAGE_CN},
        "trainer": "augmix",
    },
}
for _pos in ("identity", "pre", "residual", "post"):
    METHODS[f"sn_{_pos}"] = {"model": {"cnsn_type": "sn", "pos": _pos}, "trainer": "supervised"}
    METHODS[f"cn_{_pos}"] = {"model": {"cnsn_type": "cn", "pos": _pos}, "trainer": "supervised"}

#: Method -> the released script whose global batch it takes under ``batch_size="released"``
#: (``imagenet-scripts/run-<name>.sh`` with ``_`` for ``-``; the ImageNet entries of
#: :data:`sncn.released_settings.RELEASED_SCRIPTS`). Methods without a script of their own take
#: the one they derive from: the AugMix trainer -> ``cnsn_augmix``, the consistency trainer ->
#: ``cnsn_consist``, else by their units: SN only (and ``basic``, the plain from-scratch recipe)
#: -> ``sn``, CN only -> ``cn``, SN and CN -> ``cnsn``. Only the batch (hence the peak lr) is
#: taken from the script; the other settings are :data:`SETTING`'s and :data:`METHODS`'.
RELEASED_SCRIPT: dict[str, str] = {
    "basic": "sn",  # no script: the from-scratch recipe of run-sn.sh without SN
    "sn": "sn",
    "cn": "cn",  # run-cn.sh, here from scratch
    "cn_finetune": "cn",
    "sncn": "cnsn",
    "sncn_crop": "cnsn",  # run-cnsn.sh with crop "both"
    "sncn_consistency": "cnsn_consist",
    "augmix": "cnsn_augmix",  # AugMix*: the AugMix script's training without SN and CN
    "sncn_augmix": "cnsn_augmix",  # the AugMix script's SN and CN on a plain ResNet-50
    "ibn_a": "sn",
    "ibn_a_cn": "cn",
    "ibn_a_cn_cr": "cnsn_consist",
    "ibn_a_cn_augmix": "cnsn_augmix",
    "ibn_b": "sn",
    "ibn_b_sn": "sn",
    "ibn_b_sn_augmix": "cnsn_augmix",
    "ibn_b_sncn_augmix": "cnsn_augmix",  # run-cnsn-augmix.sh itself
    **{f"sn_{p}": "sn" for p in ("identity", "pre", "residual", "post")},
    **{f"cn_{p}": "cn" for p in ("identity", "pre", "residual", "post")},
}

# ----------------------------------------------------------------------------------------------
# The paper's numbers (typed from the paper; shown beside ours, never used as results)

#: Table 2: clean error, the 15 corruption errors (CE, AlexNet = 100) and mCE (%). The SNCN
#: motion-blur entry is garbled in the text extraction ("^76-"); 76 makes the row's mean 70.3,
#: its printed mCE 70.4 up to the rounding of the entries.
PAPER_TABLE2: dict[str, tuple[float, ...]] = {
    "Standard": (23.9, 79, 80, 82, 82, 90, 84, 80, 86, 81, 75, 65, 79, 91, 77, 80, 80.6),
    "Patch Uniform": (24.5, 67, 68, 70, 74, 83, 81, 77, 80, 74, 75, 62, 77, 84, 71, 71, 74.3),
    "Random AA*": (23.6, 70, 71, 72, 80, 86, 82, 81, 81, 77, 72, 61, 75, 88, 73, 72, 76.1),
    "MaxBlur Pool": (23.0, 73, 74, 76, 74, 86, 78, 77, 77, 72, 63, 56, 68, 86, 71, 71, 73.4),
    "SIN": (27.2, 69, 70, 70, 77, 84, 76, 82, 74, 75, 69, 65, 69, 80, 64, 77, 73.3),
    "AugMix*": (23.4, 66, 66, 66, 69, 80, 65, 68, 72, 72, 66, 60, 63, 78, 66, 71, 68.4),
    "SNCN": (23.3, 66, 67, 65, 77, 89, 76, 80, 72, 72, 67, 59, 47, 83, 62, 72, 70.4),
    "SNCN+AugMix": (22.3, 61, 62, 60, 70, 77, 62, 68, 62, 65, 63, 55, 43, 73, 55, 66, 62.8),
}
#: Our method -> Table 2 row.
TABLE2_ROWS = {
    "basic": "Standard",
    "augmix": "AugMix*",
    "sncn": "SNCN",
    "ibn_b_sncn_augmix": "SNCN+AugMix",
}
#: Tables 16-19: (clean error, mCE) per our method name.
PAPER_TABLE16 = {
    "basic": (23.9, 80.6),
    "ibn_a": (23.2, 75.1),
    "ibn_a_cn": (23.1, 73.2),
    "ibn_a_cn_cr": (22.6, 73.6),
    "ibn_a_cn_augmix": (22.5, 66.4),
    "ibn_b": (24.0, 74.1),
    "ibn_b_sn": (23.5, 72.6),
    "ibn_b_sn_augmix": (22.3, 64.1),
    "ibn_b_sncn_augmix": (22.3, 62.8),
}
PAPER_TABLE17 = {
    "sn_identity": (24.0, 75.5),
    "sn_pre": (23.0, 75.8),
    "sn_residual": (23.2, 74.8),
    "sn_post": (23.7, 73.4),
}
PAPER_TABLE18 = {
    "cn_identity": (25.2, 78.2),
    "cn_pre": (23.4, 75.8),
    "cn_residual": (23.5, 77.5),
    "cn_post": (23.4, 75.3),
}
#: Table 19's CN column was fine-tuned (App. 6.4): ``cn_finetune`` reproduces it; ``cn`` (from
#: scratch) is listed against it too, as its from-scratch counterpart.
PAPER_TABLE19 = {
    "basic": (23.9, 80.6),
    "sn": (23.7, 73.4),
    "cn": (23.4, 75.3),
    "cn_finetune": (23.4, 75.3),
    "sncn": (23.3, 70.4),
    "sncn_crop": (23.3, 71.1),
}
PAPER_TABLES = {
    "table16": PAPER_TABLE16,
    "table17": PAPER_TABLE17,
    "table18": PAPER_TABLE18,
    "table19": PAPER_TABLE19,
}


def check_method(method: str) -> dict[str, Any]:
    """The :data:`METHODS` entry of ``method``, or a ValueError listing them."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    return METHODS[method]


def released_batch_size(method: str) -> int:
    """The global batch of ``method``'s released script (:data:`RELEASED_SCRIPT`)."""
    from sncn.released_settings import RELEASED_SCRIPTS

    check_method(method)
    return int(RELEASED_SCRIPTS[("imagenet", "resnet50", RELEASED_SCRIPT[method])]["batch_size"])


def resolve_setting(method: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The setting ``method`` trains with: :data:`SETTING`, the method's entries, ``overrides``.

    ``batch_size`` ``"released"`` (or 0) becomes the method's released global batch
    (:func:`released_batch_size`); ``cn_prob`` is 0 for a model without CrossNorm, and
    ``augmix_implementation`` is dropped for a method without AugMix views. The run's name is a
    digest of this dict, so an explicit batch equal to the released one names the same run.

    Args:
        method: one of :data:`METHODS`.
        overrides: changes to :data:`SETTING` (e.g. ``{"batch_size": 256}`` for every method).

    Returns:
        The resolved setting (:func:`peak_lr` gives its optimiser's lr).
    """
    spec = check_method(method)
    unknown = set(overrides or {}) - set(SETTING)
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(SETTING)}.")
    setting = {**SETTING, **{k: v for k, v in spec.items() if k in SETTING}, **(overrides or {})}
    if setting["batch_size"] in ("released", 0, None):
        setting["batch_size"] = released_batch_size(method)
    elif isinstance(setting["batch_size"], str) or setting["batch_size"] < 0:
        raise ValueError(f"batch_size must be 'released', 0 or a positive int, got "
                         f"{setting['batch_size']!r}.")  # fmt: skip
    model_kwargs = spec["model"]
    if not (model_kwargs.get("image_cn") or "cn" in str(model_kwargs.get("cnsn_type"))):
        setting["cn_prob"] = 0.0  # nothing to switch
    if spec["trainer"] != "augmix":
        setting.pop("augmix_implementation")  # no AugMix views; run names stay as they were
    return setting


def peak_lr(setting: Mapping[str, Any]) -> float:
    """The optimiser's initial lr: ``lr x batch_size / 256`` (the released
    ``adjust_learning_rate``'s linear scaling; 0.05 at batch 128, 0.1 at 256)."""
    return float(setting["lr"]) * int(setting["batch_size"]) / 256


# ----------------------------------------------------------------------------------------------
# Data


def resize_size(image_size: int) -> int:
    """Test-time resize side for a crop of ``image_size`` (224 -> 256, the 8/7 ratio)."""
    return round(image_size * 256 / 224)


def train_transform(image_size: int) -> transforms.Compose:
    """``RandomResizedCrop(image_size)`` + flip + ImageNet normalisation (224: the paper's)."""
    return transforms.Compose(
        [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(), _preprocess()]
    )


def test_geometry(image_size: int) -> transforms.Compose:
    """``Resize(256) + CenterCrop(224)`` scaled to ``image_size`` (PIL -> PIL)."""
    return transforms.Compose(
        [transforms.Resize(resize_size(image_size)), transforms.CenterCrop(image_size)]
    )


def test_transform(image_size: int) -> transforms.Compose:
    """The test transform (224: ``imagenet_transform(train=False)``)."""
    return transforms.Compose([test_geometry(image_size), _preprocess()])


def _preprocess() -> transforms.Compose:
    return transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def build_cifar_folder(
    image_size: int = 64,
    train_per_class: int = 500,
    val_per_class: int = 50,
    root: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """An ImageNet-format folder from the CIFAR-10 mirror (built once, then reused).

    ``<cache>/imagenet-format-cifar10-<side>px-<train>-<val>/{train,val}/<class>/*.png`` in the
    cache folder (:func:`sncn.data.cache_root`):
    the first ``train_per_class`` training and ``val_per_class`` test images of each class,
    upsampled (bicubic) to ``side = resize_size(image_size)`` px, so that the test transform
    (resize to ``side``, centre crop ``image_size``) crops as ImageNet's does.

    Args:
        image_size: the training/test crop side.
        train_per_class, val_per_class: images per class (CIFAR-10 has 5,000 / 1,000).
        root: data root.
        progress: progress bar.

    Returns:
        The folder (with ``train`` and ``val`` inside).
    """
    side = resize_size(image_size)
    if not (0 < train_per_class <= 5000 and 0 < val_per_class <= 1000):
        raise ValueError("need 0 < train_per_class <= 5000 and 0 < val_per_class <= 1000.")
    out = cache_root(root) / f"imagenet-format-cifar10-{side}px-{train_per_class}-{val_per_class}"
    if (out / ".complete").is_file():
        return out
    writable_folder(out, "the ImageNet-format folder built from CIFAR-10")
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        images, labels = load_cifar("cifar10", "train" if split == "train" else "test", root=root)
        picked = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
        for i in progress_bar(None, progress, picked, desc=f"CIFAR-10 -> {split} {side}px"):
            folder = out / split / CIFAR10_CLASSES[labels[i]]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).resize((side, side), Image.BICUBIC).save(
                folder / f"{i:05d}.png"
            )
    (out / ".complete").write_text("done\n")
    return out


def _folder(directory: Path, split: str, transform=None) -> tv_datasets.ImageFolder:
    folder = directory / split
    if split == "val" and not folder.is_dir() and (directory / "validation").is_dir():
        folder = directory / "validation"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} not found: expected an ImageNet-format folder {directory}/{{train,val}}/"
            "<class>/*.JPEG. ImageNet (ILSVRC-2012) cannot be downloaded automatically: get it "
            "from https://image-net.org (registration), with the validation images sorted into "
            "class folders; offline, build_cifar_folder() makes a small stand-in."
        )
    return tv_datasets.ImageFolder(str(folder), transform=transform)


class _Indexed(Dataset):
    """``dataset`` items at positions ``indices``."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


class _SeededItems(Dataset):
    """Item ``i`` drawn with torch's RNG seeded from ``(seed, i)``: augmentation that does not
    depend on which process or worker loads the item, so a run on several ranks sees the images
    a single process sees."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + int(i)) % 2**63)
            return self.dataset[i]


def _collate_views(items):
    views = tuple(torch.stack([it[0][k] for it in items]) for k in range(3))
    return views, torch.tensor([it[1] for it in items])


# ----------------------------------------------------------------------------------------------
# Evaluation


def _eval_input(images: Tensor, image_size: int) -> Tensor:
    """uint8 ``(N, 3, s, s)`` crops -> the test transform's input: resize, crop, normalise."""
    x = TF.resize(images, [resize_size(image_size)], antialias=True)
    x = TF.center_crop(x, [image_size]).float() / 255
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))


@torch.no_grad()
def _predict_arrays(trainer: Trainer, images: np.ndarray, image_size: int, batch: int) -> Tensor:
    """Predicted classes of uint8 ``(N, s, s, 3)`` crops (this rank's share, gathered by sum)."""
    preds = torch.zeros(len(images), dtype=torch.long)
    rank, world = _rank_world()
    for start in range(rank * batch, len(images), batch * world):
        x = torch.from_numpy(np.array(images[start : start + batch]))
        x = _eval_input(x.permute(0, 3, 1, 2), image_size)
        preds[start : start + len(x)] = trainer.predict(x).argmax(1).cpu()
    return all_reduce_sum(preds)


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def val_crops(directory: Path, image_size: int, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Validation images after the test geometry, uint8 ``(N, s, s, 3)``, and labels."""
    dataset = _folder(directory, "val", transform=test_geometry(image_size))
    index = np.arange(len(dataset))
    if limit and limit < len(dataset):  # class-balanced: every k-th image
        index = np.linspace(0, len(dataset) - 1, limit).round().astype(int)
    crops = np.stack([np.asarray(dataset[i][0].convert("RGB")) for i in index])
    return crops, np.asarray([dataset.targets[i] for i in index])


def evaluate_generated_c(
    trainer: Trainer,
    crops: np.ndarray,
    labels: np.ndarray,
    c_dir: Path,
    image_size: int,
    batch: int = 250,
    frost_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Errors (%) per corruption and severity on ``crops`` corrupted with the 224-px table.

    The corrupted copies are made once (:func:`sncn.corruptions.make_c`, seeded, by rank 0)
    into ``c_dir`` and read back; evaluation applies the test transform to them, as the paper's
    code does to ImageNet-C's 224-px images.
    """
    import torch.distributed as dist

    if is_main():
        make_c(crops, labels, c_dir, table="imagenet", frost_dir=frost_dir, progress=progress)
    if dist.is_initialized():
        dist.barrier()
    n = len(labels)
    target = torch.from_numpy(labels.astype(np.int64))
    errors: dict[str, list[float]] = {}
    for name in progress_bar(None, progress, CORRUPTIONS, desc="ImageNet-C (generated)"):
        arr = np.load(c_dir / f"{name}.npy", mmap_mode="r")
        errors[name] = [
            100.0
            * float(
                (_predict_arrays(trainer, arr[k * n : (k + 1) * n], image_size, batch) != target)
                .float()
                .mean()
            )
            for k in range(len(SEVERITIES))
        ]
    return errors


@torch.no_grad()
def _loader_error(trainer: Trainer, dataset: Dataset, batch: int, workers: int) -> float:
    rank, world = _rank_world()
    shard = _Indexed(dataset, range(rank, len(dataset), world))
    counts = torch.zeros(2, dtype=torch.long)
    for x, y in DataLoader(shard, batch_size=batch, num_workers=workers):
        counts += torch.tensor([int((trainer.predict(x).argmax(1).cpu() != y).sum()), len(y)])
    wrong, total = all_reduce_sum(counts).tolist()
    return 100.0 * wrong / total


def evaluate_imagenet_c_folder(
    trainer: Trainer,
    directory: Path,
    image_size: int,
    batch: int = 250,
    workers: int = 0,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Errors (%) per corruption and severity on an ImageNet-C folder (the real one)."""
    transform = test_transform(image_size)
    return {
        name: [
            _loader_error(
                trainer,
                imagenet_c_folder(name, s, directory=directory, transform=transform),
                batch,
                workers,
            )
            for s in SEVERITIES
        ]
        for name in progress_bar(None, progress, CORRUPTIONS, desc="ImageNet-C")
    }


# ----------------------------------------------------------------------------------------------
# Training


def lr_milestones(milestones: str | Sequence[int], epochs: int) -> tuple[int, ...]:
    """The epochs at whose start the lr is divided by 10.

    ``"released"``: ``epochs // 3`` and ``2 * (epochs // 3)``, the rule of the released
    ``imagenet.py`` (``adjust_learning_rate``): 30 and 60 at 90 epochs, 2 and 4 at 6 epochs, 2
    and 4 at 8 epochs (the last phase takes the remainder), and 0 and 0 below 3 epochs (the whole
    run at lr / 100). A sequence of epochs is used as given, e.g. ``(30, 60)`` whatever the
    length.

    Args:
        milestones: ``"released"`` or epochs.
        epochs: the run's length.

    Returns:
        The milestone epochs (:func:`sncn.train.step_schedule` divides by 10 at each).
    """
    if isinstance(milestones, str):
        if milestones != "released":
            raise ValueError(f"milestones must be 'released' or epochs, got {milestones!r}.")
        k = int(epochs) // 3
        return (k, 2 * k)
    return tuple(int(m) for m in milestones)


def build_model(method: str, num_classes: int, setting: Mapping[str, Any]) -> nn.Module:
    """The ResNet-50 of ``method`` (``layers``/``width`` from ``setting``).

    ``setting["pretrained"]``: ``""`` (from scratch), ``"torchvision"`` (torchvision's ImageNet
    ResNet-50, :func:`sncn.models.resnet.torchvision_resnet50_state`, from torch's hub cache) or
    the path of a state dict; the weights are loaded with
    :func:`sncn.models.resnet.load_pretrained` (non-strict; a classifier of another size stays
    initialised).
    """
    spec = check_method(method)
    model = create_model(
        "resnet50",
        num_classes=num_classes,
        layers=tuple(setting["layers"]),
        width=setting["width"],
        **spec["model"],
    )
    source = setting.get("pretrained") or ""
    if source == "torchvision":
        load_pretrained(model, torchvision_resnet50_state(progress=False))
    elif source:
        load_pretrained(model, torch.load(source, map_location="cpu", weights_only=True))
    return model


def _trainer(kind: str, model, optimizer, scheduler, setting, device, generator) -> Trainer:
    common = dict(
        cn_prob=setting["cn_prob"],
        active_num=setting["active_num"],
        amp=setting["amp"] and device.type == "cuda",
        channels_last=setting["channels_last"],
        device=device,
        generator=generator,
    )
    if kind == "consistency":
        return ConsistencyTrainer(
            model, optimizer, scheduler, consist_wt=setting["consist_wt"], **common
        )
    if kind == "augmix":
        return ImageCrossNormAugMixTrainer(
            model, optimizer, scheduler, jsd_wt=setting["jsd_wt"], **common
        )
    return Trainer(model, optimizer, scheduler, **common)


#: What :func:`run` can evaluate on.
EVALUATIONS = ("auto", "imagenet-c", "generated", "none")


def resolve_evaluation(evaluation: str, data_dir: str | os.PathLike) -> str:
    """The corrupted data a run evaluates on, decided before it trains (it names the run).

    Args:
        evaluation: one of :data:`EVALUATIONS`.
        data_dir: the ImageNet-format folder trained on.

    Returns:
        ``evaluation``, with ``"auto"`` made ``"imagenet-c"`` when the real folder
        ``<data root>/ImageNet-C`` is there and ``data_dir/train`` has 1,000 classes, else
        ``"generated"``.
    """
    if evaluation not in EVALUATIONS:
        raise ValueError(f"evaluation must be one of {EVALUATIONS}, got {evaluation!r}.")
    if evaluation != "auto":
        return evaluation
    train = Path(data_dir) / "train"
    classes = sum(p.is_dir() for p in train.iterdir()) if train.is_dir() else 0
    return (
        "imagenet-c" if (data_root() / "ImageNet-C").is_dir() and classes == 1000 else "generated"
    )


def run(
    method: str,
    results_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    evaluation: str = "auto",
    c_subset: int = 0,
    variant: str = "",
    device: str | None = None,
    ghost_batches: int = 1,
    progress: bool = True,
    retrain: bool = False,
    position: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Train ``method`` on the ImageNet-format folder ``data_dir`` and evaluate it.

    Runs in every process of a torchrun launch (call :func:`init_distributed` first, or use
    :func:`main`); a single process otherwise. The run's name covers the setting, the data
    folder's name and the evaluation data (``"auto"`` resolved, :func:`resolve_evaluation`). A
    finished run is read back (with a note when it is stale: made by other code), unless
    ``retrain`` or a retrain request says otherwise (:func:`sncn.results.reuse`). The main process
    holds the run's lock (:func:`sncn.results.run_lock`) and decides; the other ranks wait for it
    at a barrier (which times out after :func:`init_distributed`'s ``timeout_s`` if another
    process holds the run that long).

    Args:
        method: one of :data:`METHODS`.
        results_dir: the profile's results folder; the run goes to ``runs/<name>``.
        data_dir: ``<dir>/{train,val}/<class>/*``.
        seed: the run's seed.
        overrides: changes to :data:`SETTING` (:func:`resolve_setting`; e.g. ``batch_size``: one
            global batch instead of the method's released one).
        evaluation: ``"imagenet-c"`` (the real folder ``<root>/ImageNet-C``), ``"generated"``
            (validation crops corrupted with the 224-px table), ``"auto"`` (the real one when
            present and the model has 1,000 classes, else generated) or ``"none"`` (clean only).
        c_subset: validation images for the generated corruptions (0: all).
        variant: names the run when its settings differ from the usual ones.
        device: ``cuda`` or ``cpu`` (default CUDA when available).
        ghost_batches: cut each model input of this process into this many contiguous slices
            for BatchNorm, as ``nn.DataParallel`` on as many GPUs does (the released
            ``run-cnsn-consist.sh``: 4, ``run-cnsn-augmix.sh``: 8); see :class:`GhostBatch`.
        progress: progress bars.
        retrain: train again even if the run finished.
        position: ``(k, n)``: run ``k`` of a grid of ``n``, shown in the progress lines.

    Returns:
        ``clean_error``, ``errors`` (``{corruption: [E_1..E_5]}``), ``ce``, ``mce``,
        ``evaluation`` (which data), ``history``, ``train_seconds``, ``images_per_second``,
        ``code`` (:func:`sncn.results.code_version`; on the main process).
    """
    spec = check_method(method)
    setting = resolve_setting(method, overrides)
    model_kwargs = spec["model"]
    data_dir = Path(data_dir)
    evaluation = resolve_evaluation(evaluation, data_dir)
    config = {"setting": setting, "data": data_dir.name, "evaluation": evaluation,
              "c_subset": c_subset}  # fmt: skip
    parts = ["imagenet", "resnet50", method] + ([variant] if variant else [])
    name = results.run_name(*parts, seed=seed, config=config)
    folder = results.run_dir(results_dir, name)
    info = init_distributed(device)
    with results.run_lock(folder) if is_main() else contextlib.nullcontext():
        reused = results.reuse(folder, retrain) if is_main() else None
        if info.world_size > 1:
            dist.barrier()  # the main rank holds the lock and has decided (and cleared)
            if not is_main() and results.is_done(folder):
                reused = results.load_metrics(folder)
        if reused is not None:
            return reused
        size = int(setting["image_size"])
        plain = _folder(data_dir, "train")
        num_classes = len(plain.classes)
        if spec["trainer"] == "augmix":
            train_set = ImageAugMixViews(
                plain,
                transforms.Compose(
                    [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
                ),
                _preprocess(),
                implementation=setting["augmix_implementation"],
            )
            collate = _collate_views
        else:
            train_set, collate = _folder(data_dir, "train", train_transform(size)), None

        torch.manual_seed(seed)
        model = build_model(method, num_classes, setting)
        if setting["channels_last"]:  # before DDP builds its gradient buckets
            model = model.to(memory_format=torch.channels_last)
        model = wrap_ddp(model, info, setting["sync_bn"])
        if ghost_batches > 1:
            model = GhostBatch(model, ghost_batches)
        batch = int(setting["batch_size"])
        steps_per_epoch = len(train_set) // batch
        if steps_per_epoch < 1:
            raise ValueError(f"batch size {batch} exceeds the {len(train_set)} training images.")
        optimizer = torch.optim.SGD(
            model.parameters(),
            peak_lr(setting),
            momentum=setting["momentum"],
            weight_decay=setting["weight_decay"],
        )
        milestones = lr_milestones(setting["milestones"], int(setting["epochs"]))
        scheduler = step_schedule(optimizer, steps_per_epoch, milestones)
        switch = torch.Generator().manual_seed(seed)  # same on every rank: same CN draws
        trainer = _trainer(
            spec["trainer"], model, optimizer, scheduler, setting, info.device, switch
        )

        def batches(epoch: int, generator: torch.Generator) -> Iterable:
            item_seed = int(torch.randint(2**62, (), generator=generator))  # the same on every rank
            shares = rank_batches(len(train_set), batch, generator, info.rank, info.world_size)
            return DataLoader(
                _SeededItems(train_set, item_seed),
                batch_sampler=[ix.tolist() for ix in shares],
                num_workers=setting["workers"],
                collate_fn=collate,
                pin_memory=info.device.type == "cuda",
            )

        start = time.perf_counter()
        history = fit(
            trainer,
            batches,
            int(setting["epochs"]),
            folder,
            seed=seed,
            progress=progress,
            description=name,
            position=position,
        )
        train_seconds = time.perf_counter() - start

        eval_batch = int(setting["eval_batch_size"])
        val = _folder(data_dir, "val", test_transform(size))
        metrics: dict[str, Any] = {
            "run": name,
            "clean_error": _loader_error(trainer, val, eval_batch, setting["workers"]),
            "history": history,
            "train_seconds": train_seconds,
            "images_per_second": setting["epochs"] * steps_per_epoch * batch / train_seconds,
        }
        real_c = data_root() / "ImageNet-C"
        if evaluation == "imagenet-c":
            errors = evaluate_imagenet_c_folder(
                trainer, real_c, size, eval_batch, setting["workers"], progress
            )
        elif evaluation == "generated":
            crops, labels = val_crops(data_dir, size, c_subset)
            c_dir = cache_root() / f"{data_dir.name}-val-C-{size}px-n{len(labels)}-seed0"
            errors = evaluate_generated_c(
                trainer,
                crops,
                labels,
                c_dir,
                size,
                eval_batch,
                frost_dir=data_root() / "frost",
                progress=progress,
            )
        else:  # "none": the clean error only
            errors = None
        metrics["evaluation"] = evaluation
        if errors is not None:
            metrics.update(errors=errors, ce=imagenet_ce(errors), mce=imagenet_mce(errors))
        if is_main():
            params = {
                "method": method,
                "seed": seed,
                "variant": variant,
                "data_dir": str(data_dir),
                "num_classes": num_classes,
                "train_images": len(train_set),
                "world_size": info.world_size,
                "ghost_batches": ghost_batches,
                "device": str(info.device),
                "torch_threads": torch.get_num_threads(),
                "model": model_kwargs,
                "trainer": spec["trainer"],
                **setting,
                "milestone_epochs": list(milestones),
            }
            metrics = results.save_run(folder, params, metrics)
        return metrics


def load_trained(results_dir: str | os.PathLike, run: str) -> nn.Module:
    """The trained model of the finished :func:`run` named ``run`` (its metrics' ``"run"``), in
    eval mode, from its checkpoint."""
    folder = Path(results_dir) / "runs" / run
    if not results.is_done(folder):
        raise FileNotFoundError(f"run {folder} has not finished; run it first.")
    params = json.loads((folder / "params.json").read_text())
    model = build_model(params["method"], params["num_classes"], {**params, "pretrained": ""})
    state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)
    state = {k.removeprefix("module."): v for k, v in state["trainer"]["model"].items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# The ImageNet sample: ImageNet-C generation and reading, end to end


def make_sample_c(
    n: int = 100, root: str | os.PathLike | None = None, seed: int = 0, progress: bool = True
) -> Path:
    """ImageNet-C in its release layout from the first ``n`` ImageNet sample images.

    Each image at ``Resize(256) + CenterCrop(224)`` is corrupted with the 224-px table at every
    corruption and severity and saved as JPEG (quality 85, as the ImageNet-C generator) to
    ``<cache>/ImageNet-C-sample-n<n>-seed<seed>/<corruption>/<severity>/<wnid>/`` in the cache
    folder (:func:`sncn.data.cache_root`);
    :func:`sncn.data.vision.imagenet_c_folder` reads it like the real one. Built once.
    """
    sample = ImageNetSample(root, transform=test_geometry(224))
    if not 0 < n <= len(sample):
        raise ValueError(f"n must be in 1..{len(sample)}, got {n}.")
    out = cache_root(root) / f"ImageNet-C-sample-n{n}-seed{seed}"
    if (out / ".complete").is_file():
        return out
    writable_folder(out, "the generated ImageNet-C of the sample")
    crops = torch.stack([TF.pil_to_tensor(sample[i][0].convert("RGB")) for i in range(n)])
    names = [sample.samples[i][0] for i in range(n)]
    wnids = [p.stem.split("_", 1)[1] for p in names]
    bar = progress_bar(len(CORRUPTIONS) * len(SEVERITIES), progress, desc="ImageNet-C (sample)")
    for c_index, name in enumerate(CORRUPTIONS):
        for s in SEVERITIES:
            g = torch.Generator().manual_seed(seed * 1000 + c_index * 10 + s)
            images = corrupt(
                crops, name, s, table="imagenet", generator=g, frost_dir=data_root(root) / "frost"
            )
            for image, path, wnid in zip(images, names, wnids, strict=True):
                folder = out / name / str(s) / wnid
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(
                    folder / f"{path.stem}.JPEG", quality=85, optimize=True
                )
            bar.update(1)
    bar.close()
    (out / ".complete").write_text("done\n")
    return out


@torch.no_grad()
def sample_check(
    model: nn.Module, c_dir: Path, image_size: int, root: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Read a generated ImageNet-C folder of the sample back and evaluate ``model`` on it.

    A model with 1,000 outputs gets errors against the ImageNet labels (and the AlexNet mCE);
    a model with other classes cannot be scored on ImageNet labels, so it gets the share of its
    predictions that a corruption changes from the clean image's (``flip``, %), which is what the
    check can honestly say about it.

    Returns:
        ``images``, ``kind`` (``"error"`` or ``"flip"``), ``values`` (``{corruption: [5]}``),
        ``mean`` (mean over corruptions and severities) and, for errors, ``mce``.
    """
    model.eval()
    device = next(model.parameters()).device
    c2i = imagenet_class_to_idx(root)
    transform = test_transform(image_size)
    clean_set = ImageNetSample(root, transform=transform)
    first = imagenet_c_folder(
        CORRUPTIONS[0], 1, directory=c_dir, transform=transform, class_to_idx=c2i
    )
    stems = [Path(p).stem for p, _ in first.samples]
    by_stem = {p.stem: i for i, (p, _) in enumerate(clean_set.samples)}
    clean_x = torch.stack([clean_set[by_stem[s]][0] for s in stems])
    labels = torch.tensor([clean_set[by_stem[s]][1] for s in stems])
    clean_pred = model(clean_x.to(device)).argmax(1).cpu()
    num_outputs = model(clean_x[:1].to(device)).shape[1]
    kind = "error" if num_outputs == 1000 else "flip"
    reference = labels if kind == "error" else clean_pred
    values = {}
    for name in CORRUPTIONS:
        values[name] = []
        for s in SEVERITIES:
            ds = imagenet_c_folder(name, s, directory=c_dir, transform=transform, class_to_idx=c2i)
            if [Path(p).stem for p, _ in ds.samples] != stems:
                raise ValueError(f"{c_dir}/{name}/{s} does not hold the same images as the rest.")
            x = torch.stack([ds[i][0] for i in range(len(ds))])
            pred = model(x.to(device)).argmax(1).cpu()
            values[name].append(100.0 * float((pred != reference).float().mean()))
    out = {
        "images": len(stems),
        "kind": kind,
        "values": values,
        "mean": float(np.mean(list(values.values()))),
    }
    if kind == "error":
        out["clean_error"] = 100.0 * float((clean_pred != labels).float().mean())
        out["mce"] = imagenet_mce(values)
    return out


# ----------------------------------------------------------------------------------------------
# Tables


def _short(name: str) -> str:
    return {
        "gaussian_noise": "Gauss.",
        "shot_noise": "Shot",
        "impulse_noise": "Impulse",
        "defocus_blur": "Defocus",
        "glass_blur": "Glass",
        "motion_blur": "Motion",
        "zoom_blur": "Zoom",
        "snow": "Snow",
        "frost": "Frost",
        "fog": "Fog",
        "brightness": "Bright",
        "contrast": "Contrast",
        "elastic_transform": "Elastic",
        "pixelate": "Pixel",
        "jpeg_compression": "JPEG",
    }[name]


def _relative(metrics: Mapping[str, Any]) -> float | None:
    """Hendrycks and Dietterich's relative mCE of a run (AlexNet-normalised degradation from its
    clean error, :func:`sncn.metrics.relative_mce`), or None without per-corruption errors."""
    if "errors" not in metrics:
        return None
    return relative_mce(metrics["errors"], metrics["clean_error"])


def table2_rows(runs: Mapping[str, Mapping[str, Any]]) -> results.Rows:
    """Table 2: clean error, CE per corruption and mCE; ours, then the paper's rows
    (:class:`sncn.results.Rows` of our runs shown: the table notes stale ones)."""
    rows = []
    for method, m in runs.items():
        if "ce" not in m:
            continue
        row = {"source": "ours", "method": method, "Clean": m["clean_error"]}
        row.update({_short(c): m["ce"][c] for c in CORRUPTIONS})
        rows.append({**row, "mCE": m["mce"], "relative mCE": _relative(m)})
    for label, values in PAPER_TABLE2.items():
        row = {"source": "paper", "method": label, "Clean": values[0]}
        row.update({_short(c): v for c, v in zip(CORRUPTIONS, values[1:16], strict=True)})
        rows.append({**row, "mCE": values[16], "relative mCE": None})
    return results.Rows(rows, runs=[m for m in runs.values() if "ce" in m])


def ablation_rows(table: str, runs: Mapping[str, Mapping[str, Any]]) -> results.Rows:
    """Rows of Table 16, 17, 18 or 19 for the methods run: ours beside the paper's
    (:class:`sncn.results.Rows` of the runs shown)."""
    paper = PAPER_TABLES[table]
    rows = [
        {
            "method": method,
            "clean err": runs[method]["clean_error"],
            "mCE": runs[method].get("mce"),
            "relative mCE": _relative(runs[method]),
            "paper clean err": paper[method][0],
            "paper mCE": paper[method][1],
        }
        for method in paper
        if method in runs
    ]
    return results.Rows(rows, runs=[runs[method] for method in paper if method in runs])


def error_rows(runs: Mapping[str, Mapping[str, Any]]) -> results.Rows:
    """Unnormalised errors (%) per corruption (mean over severities) for each run
    (:class:`sncn.results.Rows` of the runs shown)."""
    rows = []
    for method, m in runs.items():
        if "errors" in m:
            row = {"method": method, "clean": m["clean_error"]}
            row.update({_short(c): float(np.mean(m["errors"][c])) for c in CORRUPTIONS})
            rows.append({**row, "mean": float(np.mean(list(m["errors"].values())))})
    return results.Rows(rows, runs=[m for m in runs.values() if "errors" in m])


def sample_rows(checks: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of :func:`sample_check` results: per corruption, the mean over severities."""
    rows = []
    for method, c in checks.items():
        row = {"method": method, "kind": c["kind"], "images": c["images"]}
        row.update({_short(k): float(np.mean(v)) for k, v in c["values"].items()})
        rows.append({**row, "mean": c["mean"], "mCE": c.get("mce")})
    return rows


# ----------------------------------------------------------------------------------------------
# Command line (what torchrun launches)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m sncn.experiments.imagenet_c",
        description="Train and evaluate a ResNet-50 (Table 2, 16-19); "
        "launch with torchrun for several processes.",
    )
    p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument("--data", required=True, help="ImageNet-format folder with train/ and val/")
    p.add_argument("--results", required=True, help="results folder (runs/<name> inside)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluation", default="auto", choices=EVALUATIONS)
    p.add_argument("--c-subset", type=int, default=0)
    p.add_argument("--retrain", action="store_true", help="train again even if the run finished")
    p.add_argument("--variant", default="")
    p.add_argument("--device", default=None, choices=["cuda", "cpu"])
    p.add_argument("--ghost-batches", type=int, default=1)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override a SETTING, e.g. --set epochs=1 --set layers=[1,1,1,1]",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: one run; every torchrun process executes it."""
    args = _parse(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    try:
        metrics = run(
            args.method,
            args.results,
            args.data,
            seed=args.seed,
            overrides=overrides,
            evaluation=args.evaluation,
            c_subset=args.c_subset,
            variant=args.variant,
            device=args.device,
            ghost_batches=args.ghost_batches,
            progress=False,
            retrain=args.retrain,
        )
        if is_main():
            shown = {k: metrics[k] for k in ("clean_error", "mce") if k in metrics}
            print(json.dumps(shown))
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
