"""Segmentation data: GTA5 and Cityscapes in the 19 Cityscapes train ids, and an offline proxy.

Layouts read under the data root (:func:`sncn.data.data_root`; ``$SNCN_DATA``, default ``data/``):

```
<root>/gta5/images/*.png, labels/*.png      GTA5 (Richter et al., 2016): labels hold Cityscapes
<root>/gta5/split.mat                       label ids; split.mat: the official train/val/test ids
<root>/cityscapes/leftImg8bit/<split>/<city>/*_leftImg8bit.png      Cityscapes (torchvision's
<root>/cityscapes/gtFine/<split>/<city>/*_gtFine_labelIds.png       ``Cityscapes`` layout)
```

Neither dataset can be downloaded automatically (both need an account or a licence agreement);
the errors say where to get them and where to put them. Labels are mapped from Cityscapes label
ids to the 19 train ids (:data:`TRAIN_CLASSES`) with 255 for everything ignored
(:func:`to_train_ids`). The paper trains on a quarter of GTA5's training images, following IBN
(Pan et al., 2018); that list was never published, so :func:`gta5_quarter` draws a documented,
seeded quarter of the training ids.

For runs without the data (``smoke`` and ``quick`` profiles), :func:`street_scenes` renders a
procedural two-domain proxy in the same 19-class label space: one scene distribution (road,
sidewalk, buildings, sky, vegetation, cars, persons, poles, signs, ...) rendered either flat-shaded
(``"synthetic"``, the GTA5 stand-in) or textured, re-lit, colour-cast, noisy and blurred
(``"realistic"``, the Cityscapes stand-in). The layout of scene ``i`` depends only on
``(seed, i)``, so the two domains can show the same scenes and differ only in style.

Training augmentation (:func:`augment`) is that of the released training script
(``segmentation/tool/train_cnsn.py``): random scale, rotation, Gaussian blur (5 x 5, probability
1/2, the kernel OpenCV uses: :func:`gaussian_kernel1d`), flip and crop, the geometric ones
applied to image and label together in one resampling per sample.

Reference:
    Richter et al., "Playing for Data: Ground Truth from Computer Games", ECCV 2016 (GTA5);
    Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene Understanding", CVPR 2016;
    Pan et al., "Two at Once: Enhancing Learning and Generalization Capacities via IBN-Net",
    ECCV 2018 (the GTA5 -> Cityscapes protocol); §4.2 of the SNCN paper.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from sncn.data import data_root

__all__ = [
    "DOMAINS",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NUM_CLASSES",
    "PALETTE",
    "TRAIN_CLASSES",
    "CityscapesSegmentation",
    "Frames",
    "GTA5",
    "augment",
    "colorize",
    "gaussian_blur",
    "gaussian_kernel1d",
    "gta5_quarter",
    "label_id_table",
    "load_arrays",
    "normalize_images",
    "segmentation_batches",
    "street_scenes",
    "to_train_ids",
]

#: The 19 evaluated Cityscapes classes, in train-id order (0-18).
TRAIN_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
NUM_CLASSES = len(TRAIN_CLASSES)
IGNORE_INDEX = 255

#: Cityscapes label id -> train id (ids 0-33; the rest, e.g. license plate -1, are ignored).
#: Cityscapes' own ``labels.py`` (also torchvision's ``Cityscapes.classes``).
_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                   24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip

#: Cityscapes' colours of the 19 train ids (for figures; also GTA5's palette).
PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)  # fmt: skip

#: ImageNet channel statistics (the paper's backbone is ImageNet-initialised).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DOMAINS = ("synthetic", "realistic")


# ---------------------------------------------------------------------------------------------
# Label mapping
# ---------------------------------------------------------------------------------------------


def label_id_table() -> np.ndarray:
    """A 256-entry uint8 lookup: Cityscapes label id -> train id (255: ignored)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in _LABEL_TO_TRAIN.items():
        table[label_id] = train_id
    return table


def to_train_ids(label_ids: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Map Cityscapes label ids (GTA5 uses the same ids) to the 19 train ids, 255 elsewhere.

    Args:
        label_ids: integer array or tensor of label ids, any shape (values outside 0-255 are
            ignored).

    Returns:
        The same type: uint8 for numpy, int64 for torch, of the same shape.
    """
    table = label_id_table()
    if isinstance(label_ids, Tensor):
        ids = label_ids.long()
        valid = (ids >= 0) & (ids < 256)
        out = torch.as_tensor(table, device=ids.device).long()[ids.clamp(0, 255)]
        return torch.where(valid, out, torch.full_like(out, IGNORE_INDEX))
    ids = np.asarray(label_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"label ids must be integers, got dtype {ids.dtype}.")
    valid = (ids >= 0) & (ids < 256)
    return np.where(valid, table[np.clip(ids, 0, 255)], IGNORE_INDEX).astype(np.uint8)


def colorize(labels: np.ndarray | Tensor) -> np.ndarray:
    """Train-id maps ``(..., H, W)`` as RGB uint8 ``(..., H, W, 3)`` (ignored pixels black)."""
    labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).astype(np.int64)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = PALETTE
    return lut[np.clip(labels, 0, 255)]


# ---------------------------------------------------------------------------------------------
# GTA5 and Cityscapes folders
# ---------------------------------------------------------------------------------------------

_GTA5_HELP = (
    "GTA5 cannot be downloaded automatically. Get the 10 image parts and 10 label parts from "
    "https://download.visinf.tu-darmstadt.de/data/from_games/ (Richter et al., 2016) and, for the "
    "official split, 'read_mapping.zip' (it holds split.mat). Extract them so that the files are "
    "{root}/gta5/images/00001.png ..., {root}/gta5/labels/00001.png ... and {root}/gta5/split.mat "
    "(the data root is $SNCN_DATA, default data/)."
)
_CITYSCAPES_HELP = (
    "Cityscapes cannot be downloaded automatically. Register at https://www.cityscapes-dataset.com "
    "and download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip; extract both into "
    "{root}/cityscapes so that {root}/cityscapes/leftImg8bit/val/<city>/*_leftImg8bit.png and "
    "{root}/cityscapes/gtFine/val/<city>/*_gtFine_labelIds.png exist (the data root is "
    "$SNCN_DATA, default data/)."
)


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image.convert("RGB"))  # a writable copy


def _read_ids(path: Path) -> np.ndarray:
    """A label PNG as its raw indices (palette PNGs are not converted to colours)."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(
                f"{path} is a {image.mode} image; expected a single-channel or palette label map "
                "of Cityscapes label ids (a colour visualisation is not a label map)."
            )
        return np.asarray(image).astype(np.int64)


def _official_gta5_split(folder: Path) -> dict[str, np.ndarray] | None:
    path = folder / "split.mat"
    if not path.is_file():
        return None
    from scipy.io import loadmat

    mat = loadmat(path)
    return {
        s: np.asarray(mat[f"{s}Ids"]).ravel().astype(np.int64) for s in ("train", "val", "test")
    }


def gta5_quarter(train_ids: Sequence[int], seed: int = 0) -> list[int]:
    """The quarter of GTA5's training images the paper trains on, as a seeded, sorted list.

    The paper (§4.2) follows IBN-Net in training on 1/4 of GTA5's training split "to match the
    data scale of Cityscapes"; that list is not public, so we take ``ceil(n / 4)`` ids drawn
    without replacement by ``numpy.random.default_rng(seed)`` from the sorted ids.

    Args:
        train_ids: the training image ids (1-based numbers of ``images/NNNNN.png``).
        seed: the draw's seed (0 for the list behind our results).

    Returns:
        Sorted ids.
    """
    ids = np.sort(np.asarray(list(train_ids), dtype=np.int64))
    if ids.size == 0:
        raise ValueError("no GTA5 training ids to draw a quarter from.")
    chosen = np.random.default_rng(seed).choice(ids, size=math.ceil(ids.size / 4), replace=False)
    return sorted(int(i) for i in chosen)


class GTA5(Dataset):
    """GTA5 frames and train-id labels from ``<root>/gta5``.

    Args:
        split: ``train``, ``val``, ``test`` (from ``split.mat``; without it every frame is in
            ``train`` and ``val``/``test`` raise), or ``all``.
        quarter: keep the paper's quarter of the split (:func:`gta5_quarter`).
        seed: seed of the quarter.
        root: data root.

    Items are ``(image uint8 (H, W, 3), labels uint8 (H, W))``. Some GTA5 label maps differ in
    size from their frame; they are resized to the frame (nearest neighbour).
    """

    def __init__(
        self,
        split: str = "train",
        quarter: bool = False,
        seed: int = 0,
        root: str | os.PathLike | None = None,
    ) -> None:
        base = data_root(root)
        folder = base / "gta5"
        if not (folder / "images").is_dir() or not (folder / "labels").is_dir():
            raise FileNotFoundError(f"no GTA5 at {folder}. " + _GTA5_HELP.format(root=base))
        files = {int(p.stem): p.name for p in (folder / "labels").glob("*.png") if p.stem.isdigit()}
        if not files:
            raise FileNotFoundError(f"{folder / 'labels'} has no NNNNN.png label maps. "
                                    + _GTA5_HELP.format(root=base))  # fmt: skip
        official = _official_gta5_split(folder)
        if split == "all":
            ids = sorted(files)
        elif official is not None and split in official:
            ids = [int(i) for i in official[split] if int(i) in files]
        elif official is None and split == "train":
            ids = sorted(files)
        else:
            raise ValueError(
                f"GTA5 split {split!r} needs {folder / 'split.mat'} (splits: train, val, test, "
                f"all). " + _GTA5_HELP.format(root=base)
            )
        self.ids = gta5_quarter(ids, seed) if quarter else ids
        self.folder = folder
        self.names = [files[i] for i in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        name = self.names[index]
        image = _read_rgb(self.folder / "images" / name)
        ids = _read_ids(self.folder / "labels" / name)
        if ids.shape != image.shape[:2]:
            from PIL import Image

            resized = Image.fromarray(ids.astype(np.uint8)).resize(
                (image.shape[1], image.shape[0]), Image.NEAREST
            )
            ids = np.asarray(resized).astype(np.int64)
        return image, to_train_ids(ids)


class CityscapesSegmentation(Dataset):
    """Cityscapes frames and train-id labels (fine annotations) through torchvision's reader.

    Args:
        split: ``train``, ``val`` or ``test`` (the paper evaluates on ``val``).
        folder: the Cityscapes folder (default ``<root>/cityscapes``); the project's one-frame
            sample is ``<root>/cityscapes_sample``.
        root: data root.

    Items are ``(image uint8 (H, W, 3), labels uint8 (H, W))``, labels mapped from
    ``*_gtFine_labelIds.png``.
    """

    def __init__(
        self,
        split: str = "val",
        folder: str | os.PathLike | None = None,
        root: str | os.PathLike | None = None,
    ) -> None:
        from torchvision.datasets import Cityscapes

        base = data_root(root)
        path = Path(folder) if folder is not None else base / "cityscapes"
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}.")
        if not (path / "leftImg8bit" / split).is_dir() or not (path / "gtFine" / split).is_dir():
            raise FileNotFoundError(
                f"no Cityscapes {split} split at {path} (need leftImg8bit/{split} and "
                f"gtFine/{split}). " + _CITYSCAPES_HELP.format(root=base)
            )
        self.reader = Cityscapes(str(path), split=split, mode="fine", target_type="semantic")
        if not len(self.reader):
            raise FileNotFoundError(f"{path / 'leftImg8bit' / split} holds no frames. "
                                    + _CITYSCAPES_HELP.format(root=base))  # fmt: skip

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = _read_rgb(Path(self.reader.images[index]))
        ids = _read_ids(Path(self.reader.targets[index][0]))
        return image, to_train_ids(ids)


class Frames:
    """A segmentation dataset decoded on demand, for sets too large to hold in memory.

    ``frames.take(indices)`` decodes those items (in threads) into ``(uint8 (B, 3, H, W), int64
    (B, H, W))``; :func:`segmentation_batches` and
    :func:`sncn.train.segmentation.evaluate_miou` accept a ``Frames`` in place of arrays.

    Args:
        dataset: items ``(image uint8 (H, W, 3), labels (H, W))`` (:class:`GTA5`,
            :class:`CityscapesSegmentation`).
        size: ``(H, W)`` to resize every frame (bilinear) and label map (nearest) to; None keeps
            them (then the frames of one batch must share a size).
        limit: keep only the first ``limit`` items (0: all).
        threads: decoding threads.
    """

    def __init__(
        self, dataset: Dataset, size: Sequence[int] | None = None, limit: int = 0, threads: int = 8
    ) -> None:
        self.dataset = dataset
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.length = len(dataset) if limit <= 0 else min(limit, len(dataset))
        self.threads = threads

    def __len__(self) -> int:
        return self.length

    def _item(self, index: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        image, label = self.dataset[index]
        if self.size is not None and image.shape[:2] != self.size:
            h, w = self.size
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
            label = np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return image, torch.from_numpy(label.astype(np.int64))

    def take(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        """Decode items ``indices`` into ``(uint8 (B, 3, H, W), int64 (B, H, W))``."""
        from concurrent.futures import ThreadPoolExecutor

        indices = [int(i) for i in indices]
        if any(not 0 <= i < self.length for i in indices):
            raise IndexError(f"indices must be in [0, {self.length}), got {indices}.")
        with ThreadPoolExecutor(min(self.threads, max(1, len(indices)))) as pool:
            items = list(pool.map(self._item, indices))
        if len({tuple(image.shape) for image, _ in items}) > 1:
            raise ValueError("frames differ in size; give Frames a size=(H, W) to resize them.")
        return torch.stack([i for i, _ in items]), torch.stack([t for _, t in items])


def load_arrays(
    dataset: Dataset, limit: int = 0, size: Sequence[int] | None = None
) -> tuple[Tensor, Tensor]:
    """Decode (the first ``limit`` of) a dataset into ``(uint8 (N, 3, H, W), int64 (N, H, W))``.

    ``size`` ``(H, W)`` resizes every frame (bilinear) and label map (nearest) first; without it
    all frames must share one size.
    """
    frames = Frames(dataset, size, limit)
    return frames.take(range(len(frames)))


# ---------------------------------------------------------------------------------------------
# The procedural two-domain proxy
# ---------------------------------------------------------------------------------------------

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)

#: Per-class base colour of the realistic domain: the synthetic palette pulled towards grey
#: and darkened (real scenes are duller than rendered ones).
_SYNTHETIC_COLOURS = PALETTE.astype(np.float32) / 255
_REALISTIC_COLOURS = 0.55 * _SYNTHETIC_COLOURS + 0.45 * _SYNTHETIC_COLOURS.mean(1, keepdims=True)
#: Texture amplitude and fine-noise weight per class in the realistic domain.
_TEXTURE = np.array([0.10, 0.12, 0.18, 0.15, 0.12, 0.05, 0.05, 0.05, 0.30, 0.22, 0.06,
                     0.12, 0.12, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10], dtype=np.float32)  # fmt: skip


def _box(label: np.ndarray, x0: float, x1: float, y0: float, y1: float, cls: int) -> None:
    h, w = label.shape
    xa, xb = max(0, int(round(x0))), min(w, int(round(x1)))
    ya, yb = max(0, int(round(y0))), min(h, int(round(y1)))
    if xb > xa and yb > ya:
        label[ya:yb, xa:xb] = cls


def _ellipse(label, grid, cx, cy, rx, ry, cls) -> None:
    yy, xx = grid
    label[((xx - cx) / max(rx, 0.5)) ** 2 + ((yy - cy) / max(ry, 0.5)) ** 2 <= 1] = cls


def _layout(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One street scene's train-id map ``(h, w)``: background, then objects far to near."""
    label = np.full((h, w), SKY, dtype=np.uint8)
    grid = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = grid
    horizon = h * rng.uniform(0.35, 0.5)
    vx = w * rng.uniform(0.3, 0.7)  # vanishing point
    # skyline: building blocks (some walls) and tree crowns with random heights
    edges = np.sort(rng.uniform(0, w, size=rng.integers(3, 8)))
    edges = np.concatenate([[0.0], edges, [float(w)]])
    for x0, x1 in zip(edges[:-1], edges[1:], strict=True):
        kind = rng.choice([BUILDING, BUILDING, BUILDING, VEGETATION, WALL])
        top = horizon - h * (rng.uniform(0.05, 0.15) if kind == WALL else rng.uniform(0.1, 0.35))
        cols = (xx >= x0) & (xx < x1) & (yy >= top) & (yy < horizon + 1)
        if kind == VEGETATION:
            cols &= ((xx - (x0 + x1) / 2) / max((x1 - x0) / 2, 1)) ** 2 + (
                (yy - top - (horizon - top) / 2) / max((horizon - top) / 1.6, 1)
            ) ** 2 <= 1.3
        label[cols] = kind
    below = yy >= horizon
    label[below] = TERRAIN if rng.random() < 0.5 else SIDEWALK
    # road: a trapezoid to the vanishing point; sidewalks along both edges
    depth = np.clip((yy - horizon) / (h - horizon), 0, 1)
    half = (0.02 + rng.uniform(0.35, 0.6) * depth) * w
    side = half * rng.uniform(1.25, 1.6)
    label[below & (np.abs(xx - vx) < side)] = SIDEWALK
    label[below & (np.abs(xx - vx) < half)] = ROAD
    if rng.random() < 0.5:  # a fence along one sidewalk's outer edge
        sign = rng.choice([-1.0, 1.0])
        fence_x = vx + sign * side
        fence_h = 0.08 * h * (0.2 + depth)
        foot = np.abs(xx - fence_x) < 0.5 + 0.02 * w * depth  # along the sidewalk's edge
        panel = (
            (np.abs(xx - fence_x) < 0.03 * w * (0.2 + depth) + 0.5)
            & (yy > horizon + 2)
            & (np.abs(yy - horizon - fence_h) < fence_h)
        )
        label[below & (foot | panel)] = FENCE
    # objects: (base row, draw) drawn far to near
    objects = []
    for _ in range(rng.integers(2, 7)):  # vehicles on the road
        d = rng.uniform(0.1, 1.0)
        lane = rng.uniform(-0.8, 0.8)
        cls = rng.choice([CAR, CAR, CAR, TRUCK, BUS, MOTORCYCLE, BICYCLE, TRAIN],
                         p=[0.25, 0.25, 0.2, 0.1, 0.08, 0.05, 0.05, 0.02])  # fmt: skip
        objects.append((d, "vehicle", cls, lane))
    for _ in range(rng.integers(1, 6)):  # people on the sidewalks
        objects.append((rng.uniform(0.1, 1.0), "person", PERSON, rng.choice([-1.0, 1.0])))
    for _ in range(rng.integers(1, 4)):  # poles with signs or lights
        objects.append((rng.uniform(0.15, 1.0), "pole", POLE, rng.choice([-1.0, 1.0])))
    for d, kind, cls, where in sorted(objects, key=lambda o: o[0]):
        base = horizon + d * (h - horizon)
        scale = (0.02 + 0.98 * d) * h  # pixel size of one "metre-ish" unit at this depth
        road_half = (0.02 + 0.45 * d) * w
        if kind == "vehicle":
            cx = vx + where * road_half
            if cls in (CAR, TRUCK, BUS, TRAIN):
                width = {CAR: 0.35, TRUCK: 0.45, BUS: 0.5, TRAIN: 0.9}[cls] * scale
                height = {CAR: 0.22, TRUCK: 0.4, BUS: 0.45, TRAIN: 0.4}[cls] * scale
                _box(label, cx - width / 2, cx + width / 2, base - height, base, cls)
                if cls == CAR:  # cabin
                    _box(label, cx - width / 3, cx + width / 3, base - 1.5 * height, base, cls)
            else:  # two-wheeler with a rider
                _ellipse(label, grid, cx, base - 0.05 * scale, 0.1 * scale, 0.05 * scale, cls)
                _box(label, cx - 0.12 * scale, cx + 0.12 * scale, base - 0.1 * scale, base, cls)
                _ellipse(label, grid, cx, base - 0.2 * scale, 0.05 * scale, 0.1 * scale, RIDER)
        elif kind == "person":
            cx = vx + where * road_half * rng.uniform(1.1, 1.5)
            _ellipse(label, grid, cx, base - 0.15 * scale, 0.04 * scale, 0.15 * scale, PERSON)
            _ellipse(label, grid, cx, base - 0.33 * scale, 0.03 * scale, 0.03 * scale, PERSON)
        else:
            cx = vx + where * road_half * rng.uniform(1.15, 1.45)
            top = base - 0.7 * scale
            _box(label, cx - 0.012 * scale - 0.5, cx + 0.012 * scale + 0.5, top, base, POLE)
            if rng.random() < 0.6:
                _box(label, cx - 0.07 * scale, cx + 0.07 * scale, top - 0.1 * scale,
                     top + 0.04 * scale, SIGN)  # fmt: skip
            else:
                _box(label, cx - 0.03 * scale, cx + 0.03 * scale, top - 0.12 * scale,
                     top + 0.02 * scale, LIGHT)  # fmt: skip
    return label


def _value_noise(rng: np.random.Generator, n: int, h: int, w: int, cells: int) -> Tensor:
    """Smooth noise ``(n, 1, h, w)`` in about [-1, 1]: a ``cells``-wide grid upsampled."""
    coarse = torch.from_numpy(rng.uniform(-1, 1, size=(n, 1, cells, cells)).astype(np.float32))
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)


def _render(labels: np.ndarray, domain: str, rngs: Sequence[np.random.Generator]) -> Tensor:
    """Images ``float32 (n, 3, h, w)`` in [0, 1] of the label maps ``(n, h, w)``."""
    n, h, w = labels.shape
    lab = torch.from_numpy(labels.astype(np.int64))
    if domain == "synthetic":
        colours = torch.from_numpy(_SYNTHETIC_COLOURS)  # (19, 3)
        jitter = torch.from_numpy(np.stack([r.uniform(-0.04, 0.04, size=(19, 3)) for r in rngs]))
        per_image = (colours + jitter.float()).clamp(0, 1)  # (n, 19, 3)
        image = torch.gather(per_image, 1, lab.view(n, -1, 1).expand(-1, -1, 3))
        return image.view(n, h, w, 3).permute(0, 3, 1, 2).contiguous()
    colours = torch.from_numpy(_REALISTIC_COLOURS)
    base = colours[lab].permute(0, 3, 1, 2)  # (n, 3, h, w)
    amp = torch.from_numpy(_TEXTURE)[lab].unsqueeze(1)  # (n, 1, h, w)
    # textures: coarse blotches + fine grain, stronger on vegetation/terrain/buildings
    coarse = torch.cat([_value_noise(r, 1, h, w, 8) for r in rngs])
    fine = torch.cat([_value_noise(r, 1, h, w, max(8, w // 3)) for r in rngs])
    rows = torch.arange(h).view(1, 1, h, 1).float()
    cols = torch.arange(w).view(1, 1, 1, w).float()
    windows = ((torch.sin(rows * 1.3) > 0.3) & (torch.sin(cols * 1.1) > 0.2)).float()
    is_building = (lab == BUILDING).unsqueeze(1).float()
    image = base * (1 + amp * (0.8 * coarse + 0.6 * fine)) - 0.12 * is_building * windows
    # lighting: per-image colour cast, brightness, contrast, a vertical gradient and a shadow
    params = torch.from_numpy(np.stack([np.concatenate([
        r.uniform(0.7, 1.3, 3), r.uniform(-0.15, 0.15, 1), r.uniform(0.6, 1.4, 1),
        r.uniform(-0.3, 0.3, 1), r.uniform(0, 1, 1), r.uniform(0.3, 0.8, 1),
    ]) for r in rngs]).astype(np.float32))  # fmt: skip
    cast, bright, contrast = params[:, :3], params[:, 3], params[:, 4]
    gradient, shadow_x, shadow_depth = params[:, 5], params[:, 6], params[:, 7]
    image = image * cast.view(n, 3, 1, 1)
    image = image * (1 + gradient.view(n, 1, 1, 1) * (rows / h - 0.5))
    shadow = (cols / w < shadow_x.view(n, 1, 1, 1)) & (rows / h > 0.45)
    image = torch.where(shadow, image * shadow_depth.view(n, 1, 1, 1), image)
    mean = image.mean((1, 2, 3), keepdim=True)
    image = (image - mean) * contrast.view(n, 1, 1, 1) + mean + bright.view(n, 1, 1, 1)
    # camera: blur (3x3 binomial) then sensor noise
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
    image = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    sigma = torch.from_numpy(np.array([r.uniform(0.02, 0.06) for r in rngs], dtype=np.float32))
    grain = torch.from_numpy(np.stack([r.standard_normal((3, h, w), dtype=np.float32)
                                       for r in rngs]))  # fmt: skip
    return (image + sigma.view(n, 1, 1, 1) * grain).clamp(0, 1)


def street_scenes(
    n: int,
    domain: str = "synthetic",
    seed: int = 0,
    size: tuple[int, int] = (64, 128),
    start: int = 0,
) -> tuple[Tensor, Tensor]:
    """Procedural street scenes in the 19 Cityscapes train ids, in one of two styles.

    The layout (a road to a vanishing point, sidewalks, terrain, a skyline of buildings, walls and
    trees, fences, then vehicles, riders, people and poles with signs or lights drawn far to near
    at perspective scale) of scene ``i`` depends only on ``(seed, start + i)`` and not on
    ``domain``. The style does:

    * ``"synthetic"`` (GTA5 stand-in): flat per-class colours (Cityscapes' palette) with a small
      per-image jitter; no texture, lighting or noise.
    * ``"realistic"`` (Cityscapes stand-in): duller base colours with per-class textures (coarse
      blotches and fine grain, building windows), a per-image colour cast, brightness, contrast,
      vertical light gradient and a cast shadow, then a blur and sensor noise.

    So a model trained on one style and tested on the other meets the same scenes in different
    low-level statistics: a test of style robustness, which is what the paper's GTA5 ->
    Cityscapes experiment measures. It is a proxy, not a substitute: tables built on it say so.

    Args:
        n: number of scenes.
        domain: ``"synthetic"`` or ``"realistic"``.
        seed: the layout and style seed.
        size: ``(H, W)``, each at least 16.
        start: index of the first scene (``street_scenes(n, ..., start=k)`` continues a sequence).

    Returns:
        ``(images float32 (n, 3, H, W) in [0, 1], labels int64 (n, H, W))`` (no ignored pixels).
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}.")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    h, w = size
    if h < 16 or w < 16:
        raise ValueError(f"size must be at least (16, 16), got {size}.")
    labels = np.stack([_layout(np.random.default_rng([seed, start + i]), h, w) for i in range(n)])
    style = DOMAINS.index(domain)
    rngs = [np.random.default_rng([seed, start + i, 1 + style]) for i in range(n)]
    return _render(labels, domain, rngs), torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Augmentation and batches
# ---------------------------------------------------------------------------------------------


def normalize_images(images: Tensor) -> Tensor:
    """uint8 or [0, 1] float images ``(N, 3, H, W)`` -> float32 standardised with ImageNet stats."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


#: OpenCV's fixed kernels (``getGaussianKernel``) for odd sizes up to 7 when sigma <= 0.
_OPENCV_SMALL_KERNELS = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


def gaussian_kernel1d(kernel_size: int, sigma: float = 0.0) -> Tensor:
    """The 1-D smoothing kernel of OpenCV's ``GaussianBlur(image, (k, k), sigma)``.

    With ``sigma <= 0`` and an odd ``kernel_size`` up to 7 it is OpenCV's fixed table (for 5:
    ``(1, 4, 6, 4, 1) / 16``, the binomial kernel); otherwise the sampled Gaussian
    ``exp(-x**2 / (2 sigma**2))`` at ``x = -(k-1)/2 .. (k-1)/2``, normalised to sum 1, with
    ``sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8`` when ``sigma <= 0``.

    Args:
        kernel_size: odd, >= 1.
        sigma: standard deviation in pixels; <= 0 derives it from ``kernel_size`` as above.

    Returns:
        float64 ``(kernel_size,)``, summing to 1.

    Reference:
        OpenCV, ``cv::getGaussianKernel`` (imgproc, ``smooth.dispatch.cpp``).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}.")
    if sigma <= 0 and kernel_size in _OPENCV_SMALL_KERNELS:
        return torch.tensor(_OPENCV_SMALL_KERNELS[kernel_size], dtype=torch.float64)
    if sigma <= 0:
        sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _separable_valid(images: Tensor, kernel: Tensor) -> Tensor:
    """``images`` ``(N, C, H, W)`` convolved with ``kernel`` ``(k,)`` along W then H, no padding:
    ``(N, C, H - k + 1, W - k + 1)``."""
    c, k = images.shape[1], kernel.numel()
    kernel = kernel.to(images.device, images.dtype)
    out = F.conv2d(images, kernel.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(out, kernel.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def gaussian_blur(images: Tensor, kernel_size: int = 5, sigma: float = 0.0) -> Tensor:
    """OpenCV's ``GaussianBlur(image, (k, k), sigma)`` on float images ``(N, C, H, W)``.

    A separable convolution with :func:`gaussian_kernel1d` in both directions; borders are
    mirrored without repeating the edge pixel (``F.pad(mode="reflect")``, OpenCV's default
    ``BORDER_REFLECT_101``). The released training script blurs with ``kernel_size=5,
    sigma=0``, which is the binomial kernel ``(1, 4, 6, 4, 1) / 16``.

    Args:
        images: float ``(N, C, H, W)``, H and W larger than ``kernel_size // 2``.
        kernel_size: odd kernel size.
        sigma: see :func:`gaussian_kernel1d`.

    Returns:
        The blurred images, same shape and dtype.
    """
    r = kernel_size // 2
    padded = F.pad(images, (r, r, r, r), mode="reflect") if r else images
    return _separable_valid(padded, gaussian_kernel1d(kernel_size, sigma))


def augment(
    images: Tensor,
    labels: Tensor,
    crop: tuple[int, int],
    scale: tuple[float, float] = (0.5, 2.0),
    rotate: tuple[float, float] = (-10.0, 10.0),
    flip: bool = True,
    generator: torch.Generator | None = None,
    blur_prob: float = 0.5,
    blur_kernel: int = 5,
) -> tuple[Tensor, Tensor]:
    """The released training augmentation on a batch: random scale, rotation, blur, flip, crop.

    Each sample is resampled once: the output pixel at offset ``u`` from the crop's centre reads
    the input at ``c + R(angle) (flip * u) / s``, with ``s`` uniform in ``scale``, the angle
    uniform in ``rotate`` (degrees), a horizontal flip with probability 1/2, and the crop's centre
    ``c`` uniform over the positions where the crop fits in the scaled frame (centred when the
    frame is smaller). Images are bilinear, labels nearest; positions outside the frame get
    image value 0 (the mean after :func:`normalize_images`) and label 255 (ignored).

    With probability ``blur_prob`` per sample, the image is then blurred by OpenCV's
    ``blur_kernel`` x ``blur_kernel`` Gaussian with sigma 0 (:func:`gaussian_kernel1d`) in the
    scaled, rotated frame before the crop: the crop is resampled with a margin of
    ``blur_kernel // 2`` pixels on each side and convolved without padding, so pixels at the crop's
    edge are blurred with their neighbours outside it. Labels are not blurred. The blur draws come
    after all geometric draws, so the geometry does not depend on ``blur_prob``.

    Args:
        images: float ``(N, C, H, W)``, already normalised.
        labels: int64 ``(N, H, W)``.
        crop: output ``(h, w)`` (paper: 713 x 713).
        scale: range of the scale factor (released code: 0.5-2.0).
        rotate: range of the rotation in degrees (released code: -10 to 10).
        flip: random horizontal flips.
        generator: CPU generator for every draw.
        blur_prob: probability of the blur per sample (released ``RandomGaussianBlur``: 0.5);
            0 turns it off.
        blur_kernel: odd kernel size of the blur (released: 5).

    Returns:
        ``(images (N, C, h, w), labels (N, h, w))``.

    Reference:
        ``RandScale``, ``RandRotate``, ``RandomGaussianBlur``, ``RandomHorizontalFlip`` and
        ``Crop`` in ``segmentation/util/transform.py`` of the released code, in the order of
        ``segmentation/tool/train_cnsn.py``.
    """
    if images.dim() != 4 or labels.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"need images (N, C, H, W) and labels (N, H, W), got "
                         f"{tuple(images.shape)} and {tuple(labels.shape)}.")  # fmt: skip
    if not 0 <= blur_prob <= 1:
        raise ValueError(f"blur_prob must be in [0, 1], got {blur_prob}.")
    kernel = gaussian_kernel1d(blur_kernel) if blur_prob > 0 else None  # checks blur_kernel
    n, _, h_in, w_in = images.shape
    h, w = crop
    dev = images.device
    r = blur_kernel // 2 if kernel is not None else 0  # margin read for the blur

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    s = uniform(*scale)
    angle = uniform(*rotate) * math.pi / 180
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else (
        torch.ones(n))  # fmt: skip
    centre = []
    for extent, size in ((w_in, w), (h_in, h)):
        scaled = s * extent
        free = (scaled - size).clamp_min(0)
        offset = torch.rand(n, generator=generator) * free  # crop origin in scaled pixels
        centre.append(torch.where(scaled > size, (offset + size / 2) / s, extent / 2 + 0 * s))
    cx, cy = centre
    blurred = torch.rand(n, generator=generator) < blur_prob if r else torch.zeros(n, dtype=bool)
    v = torch.arange(-r, h + r, dtype=torch.float32) + 0.5 - h / 2  # (h + 2r,)
    u = torch.arange(-r, w + r, dtype=torch.float32) + 0.5 - w / 2  # (w + 2r,)
    uu = (mirror.view(n, 1, 1) * u.view(1, 1, -1)) / s.view(n, 1, 1)  # (n, 1, w + 2r)
    vv = v.view(1, -1, 1) / s.view(n, 1, 1)  # (n, h + 2r, 1)
    cos, sin = angle.cos().view(n, 1, 1), angle.sin().view(n, 1, 1)
    px = cx.view(n, 1, 1) + cos * uu - sin * vv  # (n, h+2r, w+2r) input x, continuous pixels
    py = cy.view(n, 1, 1) + sin * uu + cos * vv
    grid = torch.stack([2 * px / w_in - 1, 2 * py / h_in - 1], dim=-1).to(dev)  # align_corners=F
    # (n, C, h + 2r, w + 2r): the crop and its margin
    wide = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)  # fmt: skip
    out = wide[:, :, r : r + h, r : r + w].clone()
    if blurred.any():
        out[blurred.to(dev)] = _separable_valid(wide[blurred.to(dev)], kernel)
    core = grid[:, r : r + h, r : r + w]  # the crop itself, for the labels
    lab = F.grid_sample(labels.unsqueeze(1).float(), core, mode="nearest", padding_mode="zeros",
                        align_corners=False)  # fmt: skip
    px, py = px[:, r : r + h, r : r + w], py[:, r : r + h, r : r + w]
    inside = (px >= 0) & (px < w_in) & (py >= 0) & (py < h_in)
    lab = torch.where(inside.to(dev), lab.squeeze(1).round().long(), IGNORE_INDEX)
    return out, lab


def segmentation_batches(
    images: Tensor | Frames,
    labels: Tensor | None,
    batch_size: int,
    crop: tuple[int, int],
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.5, 2.0),
    rotate: tuple[float, float] = (-10.0, 10.0),
    blur_prob: float = 0.5,
    blur_kernel: int = 5,
    drop_last: bool = True,
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of shuffled, augmented ``(normalised images, labels)`` batches.

    Args:
        images: uint8 or [0, 1] float ``(N, 3, H, W)`` (normalised here), or :class:`Frames`
            (decoded per batch; then ``labels`` is None).
        labels: int64 ``(N, H, W)`` train ids.
        batch_size, crop: batch size and crop ``(h, w)``.
        generator: the epoch's generator (order and augmentation).
        scale, rotate: augmentation ranges (:func:`augment`).
        blur_prob, blur_kernel: the random Gaussian blur (:func:`augment`; released: 0.5, 5).
        drop_last: drop a last incomplete batch (2-instance CrossNorm needs pairs).
    """
    if len(images) < batch_size and drop_last:
        raise ValueError(f"batch size {batch_size} exceeds the {len(images)} training images.")
    order = torch.randperm(len(images), generator=generator)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        x, y = images.take(idx) if isinstance(images, Frames) else (images[idx], labels[idx])
        yield augment(normalize_images(x), y, crop, scale, rotate, generator=generator,
                      blur_prob=blur_prob, blur_kernel=blur_kernel)  # fmt: skip
