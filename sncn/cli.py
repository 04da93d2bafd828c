"""The ``sncn`` command: what users do outside the notebooks.

    sncn reproduce --profile quick      run the notebooks of a profile (sncn.pipeline)
    sncn runs --profile quick           list a profile's runs (fresh, stale, ...); --remove-stale
    sncn make-c --source cifar10 --out DIR
                                        write a corrupted test set in the CIFAR-10-C layout
    sncn evaluate --model torchvision:resnet18 --num-classes 10 --weights W.pt
                                        CIFAR-10-C / CIFAR-100-C / ImageNet-C errors of any model
    sncn claims --profile quick         the claims scoreboard and the README's block (sncn.claims)
    sncn report --profile quick         results/<profile>/report.html; --screenshot renders it

``sncn COMMAND --help`` explains each. ``python -m sncn`` is the same command. An error is one
line naming what is wrong (``SNCN_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

_MAKE_C_EPILOG = """\
examples:
  sncn make-c --source cifar10 --out DIR
  sncn make-c --source cifar10 --limit 500 --seed 0 --out DIR
  sncn make-c --source PHOTOS --size 224 --limit 1000 --out DIR

--limit draws one class-balanced random subset (seeded by --seed) for every corruption and
severity (the experiments instead give each cell its own draw of that size:
sncn.experiments.cifar_c.cell_subsets, and sncn evaluate --n-images). An image
folder is read as <folder>/<class>/*.png|jpg|jpeg, classes in sorted order (label i is the
i-th class; the names go to classes.txt in the output folder).
"""


def _make_c_parser() -> argparse.ArgumentParser:
    from sncn.corruptions import CORRUPTIONS, SEVERITIES, TABLES

    mk = argparse.ArgumentParser(
        prog="sncn make-c",
        description="Write <corruption>.npy (all images at each severity in turn) and labels.npy\n"
        "for CIFAR-10, CIFAR-100 or any folder of class subfolders (sncn.corruptions.make_c).",
        epilog=_MAKE_C_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mk.add_argument(
        "--source",
        required=True,
        help="cifar10, cifar100 (read by sncn.data.vision.load_cifar), or an image folder "
        "<folder>/<class>/*.png|jpg|jpeg",
    )
    mk.add_argument("--split", default="test", help="split of cifar10/cifar100 (default: test)")
    mk.add_argument("--root", default=None, help="data root (default: $SNCN_DATA or ./data)")
    mk.add_argument("--out", required=True, type=Path, help="output folder")
    mk.add_argument(
        "--size",
        type=int,
        default=None,
        help="image folders: resize the shorter side to SIZE px and crop the centre SIZE x SIZE "
        "(default: keep the images, which must then all have one size)",
    )
    mk.add_argument(
        "--table",
        default=None,
        choices=sorted(TABLES),
        help="parameter table (default: cifar up to 32 px, else imagenet)",
    )
    mk.add_argument("--severities", type=int, nargs="+", default=list(SEVERITIES))
    mk.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS), choices=CORRUPTIONS)
    mk.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="use a class-balanced random subset of N images, drawn with --seed "
        "(default: all images)",
    )
    mk.add_argument("--seed", type=int, default=0, help="seed of the subset and the corruptions")
    mk.add_argument("--batch-size", type=int, default=1000)
    mk.add_argument("--device", default="cpu")
    mk.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 helps on a busy CPU)"
    )
    mk.add_argument("--frost-dir", default=None, help="folder of frost1.png ... frost6.jpg")
    return mk


def make_c_main(argv: Sequence[str]) -> int:
    """``sncn make-c``: ``--source`` is ``cifar10``, ``cifar100`` or an image folder of class
    subfolders; ``--limit N`` keeps a class-balanced random subset of ``N`` images drawn with
    ``--seed`` (:func:`sncn.data.text.balanced_subset`), the same for every corruption and
    severity. Returns the exit status."""
    import numpy as np
    import torch

    from sncn import corruptions
    from sncn.data.text import balanced_subset
    from sncn.data.vision import NUM_CLASSES, image_folder_files, load_cifar, read_images

    args = _make_c_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    classes = None
    if args.source.lower().replace("-", "") in NUM_CLASSES:
        images, labels = load_cifar(args.source, args.split, root=args.root)
        if args.limit is not None:
            keep = balanced_subset(labels, args.limit, args.seed)
            images, labels = images[keep], labels[keep]
    elif Path(args.source).is_dir():
        files, labels, classes = image_folder_files(args.source)
        labels = np.asarray(labels, dtype=np.int64)
        if args.limit is not None:
            keep = balanced_subset(labels, args.limit, args.seed)
            files, labels = [files[i] for i in keep], labels[keep]
        images = read_images(files, size=args.size)
    else:
        print(
            f"sncn make-c: --source {args.source!r} is neither cifar10/cifar100 nor an image "
            "folder.",
            file=sys.stderr,
        )
        return 2
    out = corruptions.make_c(
        images,
        labels,
        args.out,
        table=args.table or corruptions.default_table(*images.shape[1:3]),
        seed=args.seed,
        corruptions=args.corruptions,
        severities=args.severities,
        batch_size=args.batch_size,
        device=args.device,
        frost_dir=args.frost_dir,
    )
    if classes is not None:
        (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    counts = np.bincount(labels)
    print(
        f"wrote {out}: {len(labels)} images x {len(args.severities)} severities, "
        f"{len(counts)} classes ({counts.min()} to {counts.max()} images each)"
    )
    return 0


_EVALUATE_EPILOG = """\
examples:
  sncn evaluate --model torchvision:resnet18 --num-classes 10 --weights resnet18_cifar10.pt
  sncn evaluate --model mymodels:wrn --dataset cifar100-c --n-images 100 --out eval/
  sncn evaluate --model timm:resnet18 --num-classes 10 --normalize cifar --device cuda
  sncn evaluate --model torchvision:resnet50 --weights DEFAULT --dataset imagenet-c --data ROOT
  sncn evaluate --model torchvision:resnet18 --weights none --dataset imagenet-c --n-images 10

The model gets unnormalised images in [0, 1] (RobustBench's convention) unless --normalize
puts a normalisation in front of it (auto: the normalisation of named pretrained torchvision
or timm weights). Corrupted images: the official CIFAR-10-C / CIFAR-100-C files, or the
ImageNet-C folder, of the data root when present, else generated on the fly on --device (no
files written). ImageNet-C: clean images from ROOT/imagenet/val/<wnid>/* or, without it, the
1,000-image sample ROOT/imagenet_sample (Resize 256, CenterCrop 224); the mCE is
AlexNet-normalised, with the relative mCE beside it. Writes evaluation.json, evaluation.csv
and evaluation_heatmap.png into --out.
"""


def evaluate_main(argv: Sequence[str]) -> int:
    """``sncn evaluate``: :func:`sncn.evaluate.evaluate` of a :func:`sncn.evaluate.load_model`
    model, saved by :func:`sncn.evaluate.save_evaluation`. Returns the exit status."""
    from sncn.corruptions import CORRUPTIONS, SEVERITIES

    parser = argparse.ArgumentParser(
        prog="sncn evaluate",
        description="Clean error, error under each of the 15 corruptions x 5 severities and mCE "
        "of any classifier on CIFAR-10-C, CIFAR-100-C or ImageNet-C (sncn.evaluate).",
        epilog=_EVALUATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True,
                        help="torchvision:NAME, timm:NAME or module:function (a module or a .py "
                        "file; the function returns the model)")  # fmt: skip
    parser.add_argument("--weights", default="",
                        help="a state dict file, a weights name (torchvision: DEFAULT, "
                        "IMAGENET1K_V1, ...; timm: DEFAULT), or none (default: none, "
                        "as constructed)")  # fmt: skip
    parser.add_argument("--num-classes", type=int, default=None,
                        help="outputs of a newly built torchvision/timm model")  # fmt: skip
    parser.add_argument("--normalize", default="auto",
                        choices=["auto", "none", "imagenet", "cifar", "half"],
                        help="normalisation put in front of the model (default auto)")  # fmt: skip
    parser.add_argument("--dataset", default="cifar10-c",
                        choices=["cifar10-c", "cifar100-c", "imagenet-c"])  # fmt: skip
    parser.add_argument("--n-images", type=int, default=None, metavar="N",
                        help="CIFAR: test images per corruption and severity, each its own "
                        "class-balanced draw (default: all 10,000); ImageNet-C: one "
                        "class-balanced random subset of N images for the clean error and "
                        "every cell (default: all)")  # fmt: skip
    parser.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS),
                        choices=CORRUPTIONS, metavar="NAME",
                        help="default: all 15 (the mCE needs them all)")  # fmt: skip
    parser.add_argument("--severities", type=int, nargs="+", default=list(SEVERITIES))
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--root", "--data", default=None,
                        help="data root (default: $SNCN_DATA or ./data)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=None,
                        help="ImageNet-C: processes decoding JPEGs (default: CPUs - 1, at most "
                        "8; 0: none)")  # fmt: skip
    parser.add_argument("--imagenet-c-geometry", choices=("released", "stored"),
                        default="released",
                        help="ImageNet-C: its 224-px crops through Resize(256) + "
                        "CenterCrop(224) again, as the paper's code and RobustBench (released), "
                        "or as they are")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("evaluation"),
                        help="output folder (default: ./evaluation)")  # fmt: skip
    args = parser.parse_args(list(argv))

    from sncn.evaluate import evaluate, load_model, save_evaluation

    model = load_model(args.model, args.weights, args.num_classes, args.normalize)
    result = evaluate(model, args.dataset, n_images=args.n_images, corruptions=args.corruptions,
                      severities=args.severities, batch_size=args.batch_size, device=args.device,
                      root=args.root, seed=args.seed, workers=args.workers,
                      imagenet_c_geometry=args.imagenet_c_geometry)  # fmt: skip
    paths = save_evaluation(result, args.out, label=args.model)
    mce = "-" if result["mce"] is None else f"{result['mce']:.2f}"
    se = "" if result["mce_se"] is None else f" (SE {result['mce_se']:.2f} over test images)"
    if "data" in result:  # ImageNet-C: which data, and the AlexNet-normalised mCEs
        relative = result["relative_mce"]
        relative = "-" if relative is None else f"{relative:.2f}"
        print(f"{args.model} on {args.dataset} ({result['data']['description']}; "
              f"{result['c_images']} images a cell): clean error {result['clean_error']:.2f}%, "
              f"mCE {mce}%{se} and relative mCE {relative}% (AlexNet = 100); "
              f"{result['seconds']:.0f} s, {result['images_per_second']:.1f} images/s on "
              f"{result['device']}")  # fmt: skip
    else:
        print(f"{args.model} on {args.dataset} ({result['source']}, {result['c_images']} images "
              f"a cell): clean error {result['clean_error']:.2f}%, mCE {mce}%{se}; "
              f"{result['seconds']:.0f} s, {result['images_per_second']:.0f} images/s on "
              f"{result['device']}")  # fmt: skip
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def reproduce_main(argv: Sequence[str]) -> int:
    """``sncn reproduce``: :func:`sncn.pipeline.main` (``--profile``, ``--only``, ``--retrain``)."""
    from sncn import pipeline

    return pipeline.main(list(argv), prog="sncn reproduce")


def runs_main(argv: Sequence[str]) -> int:
    """``sncn runs``: list a profile's runs, or remove the stale ones."""
    from sncn import pipeline
    from sncn.hparams import PROFILES

    parser = argparse.ArgumentParser(
        prog="sncn runs", description="List a profile's runs and their status (fresh, stale, "
        "running, incomplete), or delete the stale ones."
    )  # fmt: skip
    parser.add_argument("--profile", choices=PROFILES, default="quick", help="default quick")
    parser.add_argument("--results", type=Path, default=pipeline.REPO / "results")
    parser.add_argument("--remove-stale", action="store_true", help="delete the stale runs")
    args = parser.parse_args(list(argv))
    return pipeline.show_runs(args.results / args.profile, remove_stale=args.remove_stale)


def claims_main(argv: Sequence[str]) -> int:
    """``sncn claims``: :func:`sncn.claims.main`."""
    from sncn import claims

    return claims.main(list(argv), prog="sncn claims")


def report_main(argv: Sequence[str]) -> int:
    """``sncn report``: :func:`sncn.report.main`."""
    from sncn import report

    return report.main(list(argv), prog="sncn report")


#: command -> (function of its arguments returning the exit status, one line of help)
COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "reproduce": (reproduce_main, "run the notebooks of a profile (make reproduce)"),
    "runs": (runs_main, "list a profile's runs (fresh, stale, ...), or remove the stale ones"),
    "make-c": (make_c_main, "write a corrupted test set in the CIFAR-10-C layout"),
    "evaluate": (evaluate_main, "CIFAR-10/100-C or ImageNet-C errors and mCE of any classifier"),
    "claims": (claims_main, "write the claims scoreboard and the README's block"),
    "report": (report_main, "write report.html (--screenshot: render it in headless Chromium)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return ("usage: sncn COMMAND [ARGS]  (sncn COMMAND --help for each)\n\ncommands:\n"
            + "\n".join(lines))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """The ``sncn`` command: dispatch to :data:`COMMANDS`; an error is one line on stderr and
    exit status 1 (``SNCN_DEBUG=1``: the traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"sncn: unknown command {command!r}\n{usage()}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command][0](rest)
    except (OSError, ValueError, RuntimeError, KeyError, ImportError) as error:
        if os.environ.get("SNCN_DEBUG"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"sncn {command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
