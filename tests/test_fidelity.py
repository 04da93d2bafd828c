"""FIDELITY.md: linked from the README, well-formed, naming every fidelity option of the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from sncn import corruptions, layers, metrics
from sncn.data import augmix
from sncn.models import cifar

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "FIDELITY.md"

#: Options whose values choose between the released behaviour and another reading: every value
#: must be named on the page as ``keyword="value"``. Taken from the code's own constants.
OPTIONS = {
    "box": layers.BOX_SAMPLERS,
    "pairing": layers.PAIRINGS,
    "implementation": augmix.IMPLEMENTATIONS,
    "swap": corruptions.GLASS_SWAPS,
    "absent": metrics.ABSENT,
    "peer_sites": cifar.PEER_SITES,
}


def table_rows(text: str) -> list[list[str]]:
    """Cells of every markdown table row that is not a header separator."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|- "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def test_readme_links_the_page():
    assert "(FIDELITY.md)" in (ROOT / "README.md").read_text()


def test_every_row_has_five_filled_cells():
    rows = table_rows(PAGE.read_text())
    headers = [r for r in rows if r[0] == "component"]
    assert headers and all(
        h == ["component", "reference", "difference", "why", "tables affected"] for h in headers
    )
    body = [r for r in rows if r[0] != "component"]
    assert len(body) >= 30
    for row in body:
        assert len(row) == 5 and all(row), row


@pytest.mark.parametrize("keyword", sorted(OPTIONS))
def test_every_option_value_is_documented(keyword):
    text = PAGE.read_text()
    for value in OPTIONS[keyword]:
        assert f'{keyword}="{value}"' in text, f'FIDELITY.md does not name {keyword}="{value}"'
