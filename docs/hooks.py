"""mkdocs hook: the fidelity page and one page per notebook, generated before each build from
FIDELITY.md and the notebooks themselves (their markdown cells and parameters cell), so the
site never repeats by hand what those files say. The generated files are not committed."""

from __future__ import annotations

import json
import pprint
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def notebook_page(path: Path) -> str:
    """A page for one notebook: its markdown cells, its parameters cell (the smoke defaults)
    and the quick and paper values of sncn.hparams."""
    sys.path.insert(0, str(ROOT))
    from sncn.hparams import NOTEBOOKS

    cells = json.loads(path.read_text())["cells"]
    text = [c for c in cells if c["cell_type"] == "markdown"]
    code = [c for c in cells if c["cell_type"] == "code"]
    parameters = next(c for c in code if "parameters" in c.get("metadata", {}).get("tags", []))
    lines = ["".join(text[0]["source"]), "", f"Source: `notebooks/{path.name}`.", ""]
    lines += ["## Parameters", "", "The `smoke` defaults (the notebook's parameters cell):", ""]
    lines += ["```python", "".join(parameters["source"]).rstrip(), "```", ""]
    for profile, values in NOTEBOOKS.get(path.stem, {}).items():
        lines += [f"The `{profile}` profile (`sncn.hparams.NOTEBOOKS`) overrides:", ""]
        lines += ["```python", pprint.pformat(values, width=96, sort_dicts=False), "```", ""]
    lines += ["## Run it", "", "```bash",
              f"python -m sncn.pipeline --profile quick --only {path.stem[:2]}",
              f"papermill notebooks/{path.name} out.ipynb -p PROFILE quick", "```", ""]  # fmt: skip
    for cell in text[1:]:
        lines += ["".join(cell["source"]), ""]
    return "\n".join(lines)


def on_pre_build(config, **kwargs) -> None:
    (DOCS / "fidelity.md").write_text((ROOT / "FIDELITY.md").read_text())
    pages = DOCS / "notebooks"
    pages.mkdir(exist_ok=True)
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        (pages / f"{path.stem}.md").write_text(notebook_page(path))
