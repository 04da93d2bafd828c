"""Build the embedded sample (this folder) from a full data root, deterministically.

    python sample_data/build.py [SOURCE_ROOT]     (default: $SNCN_DATA, else data/)

The source is a data root laid out as the project's data mirror gives it (``bash
.ci/prepare-data``). The sample takes, with seed 0, a class-balanced draw of CIFAR-10 images
(copied byte for byte), of IMDb reviews (among those under 1,000 characters, to stay small) and
of SST-2 test sentences, and six ImageNet sample images. See README.md here for what it is for.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from sncn.data.text import read_tsv, write_tsv

HERE = Path(__file__).resolve().parent
SEED = 0
CIFAR_PER_CLASS = {"train": 60, "test": 30}
IMDB = {"train": 400, "test": 200}  # reviews, half positive
IMDB_MAX_CHARS = 1000
SST2_TEST = 300  # sentences, half positive
#: the first four (what the smoke ImageNet-C check reads) and two street scenes (Figure 14)
IMAGENET = ("000_n01440764", "001_n01443537", "002_n01484850", "003_n01491361",
            "829_n04335435", "874_n04487081")  # fmt: skip


def _balanced(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def build(source: Path, out: Path = HERE) -> None:
    """Write the sample's data folders into ``out`` from the data root ``source``."""
    rng = np.random.default_rng(SEED)
    for split, per_class in CIFAR_PER_CLASS.items():
        target = out / "cifar10" / split
        shutil.rmtree(target, ignore_errors=True)
        for folder in sorted((source / "cifar10" / split).iterdir()):
            files = sorted(folder.glob("*.jpg"))
            picks = np.sort(rng.permutation(len(files))[:per_class])
            (target / folder.name).mkdir(parents=True)
            for i in picks:
                shutil.copyfile(files[i], target / folder.name / files[i].name)
    for split, n in IMDB.items():
        texts, labels = read_tsv(source / "imdb" / f"{split}.tsv.gz")
        short = np.array([len(t) < IMDB_MAX_CHARS for t in texts])
        keep = np.flatnonzero(short)[_balanced(labels[short], n // 2, rng)]
        write_tsv(out / "imdb" / f"{split}.tsv.gz", [texts[i] for i in keep], labels[keep])
    texts, labels = read_tsv(source / "sst2" / "test.tsv")
    keep = _balanced(labels, SST2_TEST // 2, rng)
    write_tsv(out / "sst2" / "test.tsv", [texts[i] for i in keep], labels[keep])
    images = out / "imagenet_sample" / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    with open(source / "imagenet_sample" / "labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, [r for r in reader if r["filename"][:-4] in IMAGENET]
    for row in rows:
        shutil.copyfile(source / "imagenet_sample" / "images" / row["filename"],
                        images / row["filename"])  # fmt: skip
    with open(out / "imagenet_sample" / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SNCN_DATA") or "data")
    build(root.expanduser())
    print(f"embedded sample written to {HERE} from {root}")
