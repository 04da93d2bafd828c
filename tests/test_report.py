"""The one-page report (sncn.report): sections in the paper's order under their captions, every
table and figure a profile wrote, missing ones named, notebook times from the executed copies."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from sncn import report


class Collect(HTMLParser):
    """Headings, image sources and the tags left open, of an HTML page."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.headings: list[str] = []
        self.images: list[str] = []
        self._heading = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in self.VOID:
            self.open.append(tag)
        self._heading = tag == "h2"

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()
        self._heading = False

    def handle_data(self, data):
        if self._heading:
            self.headings.append(data)


def profile_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "quick"
    (folder / "tables").mkdir(parents=True)
    (folder / "figures").mkdir()
    (folder / "notebooks").mkdir()
    (folder / "claims.md").write_text("# Claims\n\n| claim | verdict |\n| --- | --- |\n| a | b |\n")
    (folder / "tables" / "table1.md").write_text(
        "# CIFAR-C\n\n| method | mCE |\n| --- | --- |\n| basic | 54.0 |\n\n- profile quick"
    )
    (folder / "tables" / "ablation_b.md").write_text("# B\n\n| arm |\n| --- |\n| x |\n")
    (folder / "tables" / "ablation_a.md").write_text("# A\n\n| arm |\n| --- |\n| y |\n")
    (folder / "figures" / "cifar_c_heatmap_cifar10_wrn.png").write_bytes(b"\x89PNG")
    meta = {"metadata": {"papermill": {"duration": 1592.5}}, "cells": []}
    (folder / "notebooks" / "01_cifar_c.ipynb").write_text(json.dumps(meta))
    return folder


def test_report_holds_every_section_in_the_papers_order(tmp_path):
    folder = profile_folder(tmp_path)
    path = report.build_report(folder, "quick")
    assert path == folder / "report.html"
    page = Collect()
    page.feed(path.read_text())
    page.close()
    assert page.open == []  # every tag closed
    assert page.headings == [s.caption for s in report.SECTIONS]
    assert page.headings[0].startswith("The paper's claims")
    assert page.images == ["figures/cifar_c_heatmap_cifar10_wrn.png"]
    assert all((folder / src).exists() for src in page.images)  # links resolve offline


def test_report_shows_tables_times_and_what_is_missing(tmp_path):
    text = report.build_report(profile_folder(tmp_path), "quick").read_text()
    assert "<td>54.0</td>" in text and "<li>profile quick</li>" in text
    assert text.index("<h3>A</h3>") < text.index("<h3>B</h3>")  # globbed tables in name order
    assert "notebooks/01_cifar_c.ipynb: its last execution took 26m32s (training included" in text
    assert "notebooks/05_segmentation.ipynb: no execution time recorded" in text
    assert "table2_imagenet_c: not written at this profile." in text
    assert "figures/figure4_fixmatch.png: not written." in text
    assert not re.search(r"<h1>CIFAR-C", text)  # a table's title sits under its section


def test_every_committed_quick_file_is_in_the_report():
    """Each table and figure the quick profile committed has its place in a section."""
    root = Path(__file__).resolve().parents[1] / "results" / "quick"
    covered = set()
    for section in report.SECTIONS:
        tables = root if section.tables == ("claims",) else root / "tables"
        covered |= {p.resolve() for p in report._files(tables, section.tables, ".md")}
        covered |= {p.resolve() for p in report._files(root / "figures", section.figures, ".png")}
    committed = {p.resolve() for p in (root / "tables").glob("*.md")}
    committed |= {p.resolve() for p in (root / "figures").glob("*.png")}
    assert committed, "no committed quick tables or figures"
    assert committed <= covered, sorted(p.name for p in committed - covered)


@pytest.mark.skipif(report.find_browser() is None, reason="no headless Chromium (apt-get install "
                    "chromium); make report-check needs one too")  # fmt: skip
def test_report_renders_offline_in_headless_chromium_with_its_figures(tmp_path):
    from PIL import Image

    folder = profile_folder(tmp_path)
    # a figure of one colour no other part of the page has: seen in the screenshot only if the
    # page found the PNG by its relative path, offline
    Image.new("RGB", (600, 300), (213, 94, 0)).save(folder / "figures" / "budget_curves_c_w.png")
    page = report.build_report(folder, "quick")
    png = report.screenshot(page, tmp_path / "shot.png", width=1000, height=3000)
    shot = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert shot.shape[:2] == (3000, 1000)
    figure = (np.abs(shot - [213, 94, 0]).sum(axis=2) < 12).sum()
    assert figure > 0.8 * 600 * 300, "the figure did not render"
    ink = (shot.sum(axis=2) < 200).sum()  # dark pixels: headings, tables and their text
    assert ink > 5000, "no text rendered"


def test_screenshot_says_what_to_install_without_a_browser(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "BROWSERS", ("no-such-browser-sncn",))
    page = report.build_report(profile_folder(tmp_path), "quick")
    with pytest.raises(FileNotFoundError, match="apt-get install chromium"):
        report.screenshot(page, tmp_path / "shot.png")
    with pytest.raises(FileNotFoundError, match="build_report first"):
        report.screenshot(tmp_path / "none.html", tmp_path / "shot.png")
