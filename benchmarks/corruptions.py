"""Images per second of each corruption on the CPU, sncn.corruptions beside imagecorruptions.

Run: ``python -m benchmarks.corruptions`` (writes ``results/benchmarks/corruptions.md``).

Ours runs on uint8 batches ``(N, 3, H, W)`` at 32 px with the ``"cifar"`` table and at 224 px with
the ``"imagenet"`` table. The ``imagecorruptions`` package (pip; one HWC image at a time, with its
224-px constants at every size) runs on the same images where it imports. It needs
``pkg_resources`` (gone from current setuptools), and its glass blur and fog fail on current
scikit-image (``multichannel``) and NumPy 2 (``np.float_``); this script runs it with small
compatibility shims for those three, marks the numbers so obtained, and reports any other failure
as a crash instead of a number. Each cell is the median over a few repeats of a pass over all five
severities. Target: every corruption of ours at >= 2,000 images/s at 32 px (CIFAR-10-C, 750,000
images, in under 10 minutes).

Pixelate is also timed against the reference generator's own call with the same table factors
(``make_cifar_c.py`` / ``make_imagenet_c.py``: Pillow BOX resize down, then up, one PIL image at
a time; only the resizes are timed), on the same images, one right after the other, so their
ratio is comparable even on a busy machine.

On a CPU shared with other jobs, pass ``--threads 1``: torch's OpenMP threads wait for each other
at every operation, and when another process holds one of two cores that wait dominates (we
measured 10-100x slowdowns); imagecorruptions is single-threaded NumPy and is not affected.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks._common import publish
from sncn.corruptions import CORRUPTIONS, TABLES, corrupt

TARGET = 2000.0  # images/s at 32 px
SEVERITIES = (1, 2, 3, 4, 5)


def sample_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``(n, 3, size, size)`` uint8 images with some structure (bilinearly upsampled noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, 256, (n, 3, max(size // 4, 2), max(size // 4, 2)), generator=g)
    up = F.interpolate(low.float(), size=size, mode="bilinear", align_corners=False)
    return up.round().clamp(0, 255).to(torch.uint8)


def rate(run: Callable[[], int], repeats: int, budget_s: float) -> float:
    """Median images/s of ``run`` (which returns how many images it did) over a few repeats.

    Stops early once ``budget_s`` seconds are spent (at least one timed repeat, after a warm-up).
    """
    run()  # warm-up: caches, lazy imports, file reads
    rates: list[float] = []
    spent = 0.0
    while len(rates) < repeats and (not rates or spent < budget_s):
        t0 = time.perf_counter()
        n = run()
        dt = time.perf_counter() - t0
        spent += dt
        rates.append(n / dt)
    return statistics.median(rates)


def ours(name: str, x: torch.Tensor, table: str) -> Callable[[], int]:
    """One pass of our corruption over all severities."""
    g = torch.Generator().manual_seed(0)

    def run() -> int:
        for s in SEVERITIES:
            corrupt(x, name, s, table=table, generator=g)
        return x.shape[0] * len(SEVERITIES)

    return run


def pillow_pixelate(x: torch.Tensor, table: str) -> Callable[[], int]:
    """One pass of the reference generator's pixelate over all severities, image by image.

    As ``pixelate`` of ``make_cifar_c.py`` / ``make_imagenet_c.py``: a PIL image resized with
    ``BOX`` to ``int(size * factor)`` and back. Only the two resizes are timed (the PIL images
    are made beforehand and the results not converted), a lower bound on the reference's cost.
    """
    images = [Image.fromarray(a) for a in x.permute(0, 2, 3, 1).numpy()]

    def run() -> int:
        for factor in TABLES[table]["pixelate"]:
            for img in images:
                w, h = img.size
                img.resize((int(w * factor), int(h * factor)), Image.BOX).resize((w, h), Image.BOX)
        return len(images) * len(SEVERITIES)

    return run


def load_imagecorruptions() -> tuple[types.ModuleType | None, str]:
    """Import imagecorruptions with compatibility shims; returns (module or None, note)."""
    shims = []
    if importlib.util.find_spec("imagecorruptions") is None:
        return None, "not installed (`pip install imagecorruptions`)"
    if importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, name: str) -> str:
            spec = importlib.util.find_spec(package)
            return os.path.join(os.path.dirname(spec.origin), name)

        shim.resource_filename = resource_filename
        sys.modules["pkg_resources"] = shim
        shims.append("pkg_resources.resource_filename")
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # noqa: NPY201 - NumPy 2 dropped it; imagecorruptions uses it
        shims.append("np.float_")
    try:
        import imagecorruptions
        import imagecorruptions.corruptions as icc
    except Exception as err:  # any import failure: no column
        return None, f"import failed ({type(err).__name__}: {err})"
    try:
        from skimage.filters import gaussian

        gaussian(np.zeros((4, 4, 3)), sigma=1, multichannel=True)
    except TypeError:

        def gaussian_compat(image, *args, multichannel=None, **kwargs):
            if multichannel:
                kwargs.setdefault("channel_axis", -1)
            return gaussian(image, *args, **kwargs)

        icc.gaussian = gaussian_compat  # scikit-image >= 0.19 dropped `multichannel`
        shims.append("skimage gaussian(multichannel=)")
    version = getattr(imagecorruptions, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("imagecorruptions")
    note = f"imagecorruptions {version}"
    if shims:
        note += " with shims for " + ", ".join(shims)
    return imagecorruptions, note


def theirs(module: types.ModuleType, name: str, x: torch.Tensor) -> Callable[[], int]:
    """One pass of imagecorruptions over all severities, image by image (HWC uint8)."""
    arrays = list(x.permute(0, 2, 3, 1).numpy())
    np.random.seed(0)  # noqa: NPY002 - imagecorruptions draws from NumPy's global RNG

    def run() -> int:
        for s in SEVERITIES:
            for a in arrays:
                module.corrupt(a, corruption_name=name, severity=s)
        return len(arrays) * len(SEVERITIES)

    return run


def fmt(v: float | str | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, print the table and write it to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n32", type=int, default=256, help="images per severity at 32 px")
    parser.add_argument("--n224", type=int, default=8, help="images per severity at 224 px")
    parser.add_argument("--theirs32", type=int, default=20, help="imagecorruptions, 32 px")
    parser.add_argument("--theirs224", type=int, default=2, help="imagecorruptions, 224 px")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per cell, about")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS))
    parser.add_argument("--no-theirs", action="store_true", help="skip imagecorruptions")
    parser.add_argument("--out", default="results/benchmarks/corruptions.md", help="markdown")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    module, note = (None, "skipped (--no-theirs)") if args.no_theirs else load_imagecorruptions()
    print(f"imagecorruptions: {note}", flush=True)
    x32, x224 = sample_images(args.n32, 32), sample_images(args.n224, 224, seed=1)
    t32, t224 = x32[: args.theirs32], x224[: args.theirs224]

    rows = []
    t_start = time.perf_counter()
    for name in args.corruptions:
        cells: dict[str, float | str | None] = {}
        cells["o32"] = rate(ours(name, x32, "cifar"), args.repeats, args.budget)
        cells["o224"] = rate(ours(name, x224, "imagenet"), args.repeats, args.budget)
        for key, imgs in (("t32", t32), ("t224", t224)):
            if module is None:
                cells[key] = None
                continue
            try:
                cells[key] = rate(theirs(module, name, imgs), args.repeats, args.budget)
            except Exception as err:  # report it, do not stop
                cells[key] = f"crash ({type(err).__name__})"
        rows.append((name, cells))
        print(
            f"{name:18s} ours 32px {fmt(cells['o32']):>8}  theirs {fmt(cells['t32']):>8}  "
            f"ours 224px {fmt(cells['o224']):>7}  theirs {fmt(cells['t224']):>7}",
            flush=True,
        )
    pillow = []
    if "pixelate" in args.corruptions:
        for size, table, imgs in ((32, "cifar", x32), (224, "imagenet", x224)):
            mine = rate(ours("pixelate", imgs, table), args.repeats, args.budget)
            ref = rate(pillow_pixelate(imgs, table), args.repeats, args.budget)
            pillow.append((size, table, mine, ref))
            print(f"pixelate {size}px: ours {fmt(mine)}  Pillow {fmt(ref)}", flush=True)
    elapsed = time.perf_counter() - t_start

    def ratio(a: float | str | None, b: float | str | None) -> str:
        ok = isinstance(a, float) and isinstance(b, float)
        return f"{a / b:,.1f}x" if ok else "-"

    cpu = platform.processor() or platform.machine()
    lines = [
        "# Corruption benchmark: images per second on the CPU",
        "",
        f"`python -m benchmarks.corruptions{' ' + ' '.join(argv) if argv else ''}`: "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), "
        f"{os.cpu_count()} CPUs "
        f"({cpu}); uint8 input; median of up to {args.repeats} passes over severities 1-5; "
        f"ours on batches of {args.n32} (32 px) and {args.n224} (224 px); {note}, one image at "
        f"a time ({args.theirs32} and {args.theirs224} images), with its 224-px constants at "
        f"both sizes. Total time {elapsed:.0f} s.",
        "",
        "| corruption | ours 32 px (cifar) | imagecorruptions 32 px | speed-up | "
        "ours 224 px (imagenet) | imagecorruptions 224 px | speed-up |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, c in rows:
        lines.append(
            f"| {name} | {fmt(c['o32'])} | {fmt(c['t32'])} | {ratio(c['o32'], c['t32'])} | "
            f"{fmt(c['o224'])} | {fmt(c['t224'])} | {ratio(c['o224'], c['t224'])} |"
        )
    slow = [name for name, c in rows if c["o32"] < TARGET]
    total = sum(50_000 / c["o32"] for _, c in rows)
    lines += [
        "",
        f"Target: every corruption >= {TARGET:,.0f} images/s at 32 px -> "
        + ("met." if not slow else f"NOT met for {', '.join(slow)}.")
        + f" At these rates CIFAR-10-C (15 x 5 x 10,000 images) takes about {total / 60:.1f} min"
        + (" (for the corruptions timed)." if len(rows) < len(CORRUPTIONS) else "."),
    ]
    if pillow:
        lines += [
            "",
            "Pixelate against the reference generator's call (Pillow `resize(BOX)` down and up, "
            "one PIL image at a time, the table's factors; only the two resizes timed), on the "
            "same images, timed back to back:",
            "",
            "| size (table) | ours | Pillow | speed-up |",
            "| --- | ---: | ---: | ---: |",
        ]
        for size, table, mine, ref in pillow:
            lines.append(f"| {size} px ({table}) | {fmt(mine)} | {fmt(ref)} | {ratio(mine, ref)} |")
    return publish(lines, args.out)


if __name__ == "__main__":
    main()
