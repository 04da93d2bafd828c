"""What every benchmark does with its table: print it and write it as markdown."""

from __future__ import annotations

from pathlib import Path


def publish(lines: list[str], out: str | Path) -> str:
    """Join ``lines`` into a markdown table, print it, write it to ``out``; return the text."""
    table = "\n".join(lines) + "\n"
    print(table)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)
    return table
