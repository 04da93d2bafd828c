"""One page to read a profile's results: ``results/<profile>/report.html``.

The claims scoreboard first (``claims.md``, :mod:`sncn.claims`), then every table and figure the
notebooks wrote, in the paper's order, each section under the caption of the paper's table or
figure, with the wall time of the notebook that wrote it (its executed copy's papermill record).
Tables are the notebooks' markdown files (title, table, notes) turned into HTML; figures are
linked by relative path (``figures/<name>.png``), so the page works offline inside the results
folder and stays small. Files a profile did not write are listed as missing, never invented.
``python -m sncn.pipeline`` writes it after the notebooks; ``build_report`` writes it on demand,
``python -m sncn.report --profile quick --screenshot`` (``make report-check``) writes it and renders
it in headless Chromium to ``report.png``, to see it as a reader does.
"""

from __future__ import annotations

import argparse
import functools
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sncn import results
from sncn.utils import format_seconds


@dataclass(frozen=True)
class Section:
    """One part of the report.

    Attributes:
        caption: the paper's table or figure it stands for, with the paper's caption (shortened).
        notebook: the stem of the notebook that writes it.
        tables: table stems under ``tables/`` (``claims`` is the profile folder's own file); a
            stem with ``*`` takes every match, in name order.
        figures: figure stems under ``figures/``, the same way.
    """

    caption: str
    notebook: str
    tables: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()


#: The report's sections in the paper's order (claims first).
SECTIONS: tuple[Section, ...] = (
    Section("The paper's claims, each with a verdict from this profile's tables", "08_claims",
            ("claims",)),
    Section("Table 1 (and Tables 14/15): mean corruption error on CIFAR-10-C / CIFAR-100-C",
            "01_cifar_c", ("table1",), ("cifar_c_heatmap_*",)),
    Section("Not in the paper: where the effects appear, errors against the training budget "
            "(the cells of Table 1 trained for other lengths)", "01_cifar_c", ("budget_curves",),
            ("budget_curves_*",)),
    Section("Table 2 and Tables 16-19: ImageNet-C, ResNet-50 with SelfNorm, CrossNorm, IBN",
            "03_imagenet_c", ("table2_imagenet_c", "table16_imagenet_c", "table17_imagenet_c",
                              "table18_imagenet_c", "table19_imagenet_c", "imagenet_c_errors",
                              "imagenet_c_sample_check")),
    Section("Figure 4: CrossNorm for semi-supervised CIFAR-10 classification (FixMatch)",
            "04_semisupervised", ("figure4", "figure4_paper"), ("figure4_fixmatch",)),
    Section("Tables 3 and 20: GTAV -> Cityscapes domain generalization (mIoU)",
            "05_segmentation", ("table3_segmentation", "table20_segmentation",
                                "segmentation_per_class"), ("segmentation_predictions",)),
    Section("Table 4: out-of-distribution sentiment classification, IMDb -> SST-2",
            "06_sentiment", ("table4",), ("table4_sentiment",)),
    Section("Figure 9 and Tables 5-13: ablations (positions, variants, order, blocks, "
            "components, peers)", "02_ablations", ("ablation_*",), ("fig9_*",)),
    Section("Figures 1, 5, 11, 14: what CrossNorm and SelfNorm do, in image space",
            "07_visualization", ("visualization_inversion", "selfnorm_recalibration"),
            ("fig1_style_exchange", "fig5_crossnorm_inversion_block1",
             "fig11_crossnorm_inversion_block2_3", "fig14_image_crossnorm",
             "selfnorm_recalibration")),
)  # fmt: skip

_STYLE = """
body { font-family: sans-serif; max-width: 75em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: left; }
th { background: #eee; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.meta { color: #555; font-size: 0.9em; }
.missing { color: #a00; }
"""


def notebook_seconds(profile_dir: str | os.PathLike, stem: str) -> float | None:
    """Wall time of the last execution of notebook ``stem`` (papermill's record in the executed
    copy under ``notebooks/``), or None without one."""
    path = Path(profile_dir) / "notebooks" / f"{stem}.ipynb"
    if not path.exists():
        return None
    try:
        duration = json.loads(path.read_text())["metadata"]["papermill"]["duration"]
    except (ValueError, KeyError, TypeError):
        return None
    return float(duration) if duration is not None else None


@functools.cache
def _markdown():
    import mistune  # with nbconvert (the notebooks extra)

    return mistune.create_markdown(plugins=["table"])


def _markdown_to_html(text: str) -> str:
    body = _markdown()(text)
    return re.sub(r"<(/?)h1>", r"<\1h3>", body)  # a table's title sits under its section


def _files(folder: Path, stems: tuple[str, ...], suffix: str) -> list[Path]:
    """The files ``<folder>/<stem><suffix>`` (globbed when the stem has ``*``; a missing file
    without ``*`` is kept, to be reported)."""
    found = []
    for stem in stems:
        name = stem + suffix
        found += sorted(folder.glob(name)) if "*" in stem else [folder / name]
    return found


def build_report(profile_dir: str | os.PathLike, profile: str) -> Path:
    """Write ``<profile_dir>/report.html`` from the profile's tables, figures and executed
    notebooks (:data:`SECTIONS`) and return its path."""
    profile_dir = Path(profile_dir)
    parts = [f"<h1>SelfNorm and CrossNorm: results of the {html.escape(profile)} profile</h1>",
             '<p class="meta">Every number below was computed from this profile\'s run files by '
             "the notebooks; the paper's numbers appear only in columns or notes that say "
             "&quot;paper&quot;.</p>"]  # fmt: skip
    for section in SECTIONS:
        seconds = notebook_seconds(profile_dir, section.notebook)
        took = (
            "no execution time recorded"
            if seconds is None
            else f"its last execution took {format_seconds(seconds)} (training included only "
            "when runs were trained, not read back)"
        )
        parts.append(f"<h2>{html.escape(section.caption)}</h2>")
        parts.append(f'<p class="meta">notebooks/{section.notebook}.ipynb: {took}</p>')
        tables = profile_dir if section.tables == ("claims",) else profile_dir / "tables"
        for md in _files(tables, section.tables, ".md"):
            if md.exists():
                parts.append(_markdown_to_html(md.read_text()))
            else:
                parts.append(f'<p class="missing">{html.escape(md.stem)}: not written at this '
                             "profile.</p>")  # fmt: skip
        for png in _files(profile_dir / "figures", section.figures, ".png"):
            rel = png.relative_to(profile_dir).as_posix()
            if png.exists():
                parts.append(f'<p><img src="{html.escape(rel)}" alt="{html.escape(png.stem)}">'
                             "</p>")  # fmt: skip
            else:
                parts.append(f'<p class="missing">{html.escape(rel)}: not written.</p>')
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>sncn results: {html.escape(profile)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        "<body>\n" + "\n".join(parts) + "\n</body>\n</html>\n"
    )
    out = profile_dir / "report.html"
    results.atomic_write(out, page)
    return out


#: Headless browsers :func:`screenshot` looks for on the PATH, in this order (Debian's package:
#: ``apt-get install chromium``).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """The path of the first of :data:`BROWSERS` on the PATH, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(
    page: str | os.PathLike,
    png: str | os.PathLike,
    width: int = 1200,
    height: int = 4000,
    browser: str | None = None,
    timeout: float = 120.0,
) -> Path:
    """Render ``page`` (a local HTML file) in headless Chromium, offline, and save the top
    ``width`` x ``height`` pixels as ``png``: what a reader sees when opening the report.

    Raises:
        FileNotFoundError: no headless browser (:data:`BROWSERS`) is installed, or ``page`` is
            missing.
        RuntimeError: the browser failed or wrote no image (its output is in the message).
    """
    page, png = Path(page).resolve(), Path(png).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"{page}: no such page; write it with build_report first.")
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError(
            f"no headless browser found (looked for {', '.join(BROWSERS)} on the PATH); install "
            "one, e.g. apt-get install chromium."
        )
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:  # a fresh browser profile, left nowhere
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", f"--user-data-dir={profile}", f"--window-size={width},{height}",
            f"--screenshot={png}", page.as_uri(),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not png.is_file():
        raise RuntimeError(f"{Path(browser).name} exited {done.returncode} and wrote no "
                           f"{png.name}:\n{done.stderr[-2000:]}")  # fmt: skip
    return png


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m sncn.report --profile quick [--screenshot]``: write the profile's report from
    its files; with ``--screenshot``, also render it in headless Chromium to ``report.png`` (the
    render check: open the PNG to see the page as a reader does)."""
    parser = argparse.ArgumentParser(prog=prog or "python -m sncn.report", description=main.__doc__)
    parser.add_argument("--profile", default="quick", help="results/<profile> (default quick)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results root")
    parser.add_argument("--screenshot", action="store_true", help="render it to report.png too")
    args = parser.parse_args(argv)
    folder = args.results / args.profile
    if not folder.is_dir():
        parser.error(f"{folder}: no such results folder; run make reproduce PROFILE=... first.")
    page = build_report(folder, args.profile)
    print(f"report: {page}")
    if args.screenshot:
        print(f"screenshot: {screenshot(page, folder / 'report.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
