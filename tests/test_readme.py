"""The README's claims about commands and speed, checked against the Makefile, the package
metadata and the committed benchmark tables (``results/benchmarks/``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BENCH = ROOT / "results" / "benchmarks"


def make_dry_run(*args: str, path: Path | None = None, env: dict | None = None) -> list[str]:
    """The commands ``make -n ARGS`` would run (nothing is run but ``$(shell ...)``)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {**os.environ, **(env or {})}
    if path is not None:
        env["PATH"] = f"{path}{os.pathsep}{env['PATH']}"
    done = subprocess.run(["make", "-n", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout.splitlines()


def sentence(text: str, words: str) -> str:
    """The sentence (up to a full stop followed by a space) of ``text`` that holds ``words``."""
    flat = " ".join(text.split())
    at = flat.index(words)
    start = max(flat.rfind(". ", 0, at) + 2, 0)
    end = flat.find(". ", at)
    return flat[start : end if end >= 0 else len(flat)]


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row of ``text`` (separator rows left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


# ---------------------------------------------------------------------------------------------
# make targets
# ---------------------------------------------------------------------------------------------


def test_every_make_command_of_the_readme_is_a_target():
    named = set(re.findall(r"`make ([\w-]+)", README))
    assert {"reproduce", "test", "lab", "bench", "lint"} <= named
    for target in named:
        make_dry_run(target)  # raises if make has no such target


def test_reproduce_and_test_run_what_the_readme_says():
    assert "PROFILE=smoke|quick|paper (default quick)" in README
    for args, profile in (((), "quick"), (("PROFILE=smoke",), "smoke")):
        lines = make_dry_run("reproduce", *args)
        assert any(f"-m sncn.pipeline --profile {profile}" in line for line in lines)
    assert "pytest, then nbval over every notebook at its smoke defaults" in README
    (line,) = [line for line in make_dry_run("test") if "-m pytest" in line]
    assert "--nbval-lax" in line and line.split()[-2:] == ["tests", "notebooks"]


def benchmark_outputs() -> dict[str, str]:
    """``{table name: module}`` for every benchmark module and the table it writes."""
    outputs = {}
    for path in (ROOT / "benchmarks").glob("*.py"):
        if not path.stem.startswith("_"):
            found = re.findall(r"results/benchmarks/(\w+)\.md", path.read_text())
            outputs.update({name: path.stem for name in found} or {path.stem: path.stem})
    return outputs


def test_make_bench_runs_every_benchmark_the_readme_names():
    outputs = benchmark_outputs()
    modules = set(outputs.values())
    assert {"layers", "corruptions", "train_step"} <= modules
    named = {m for m in re.findall(r"benchmarks\.(\w+)", README) if not m.startswith("_")}
    named |= {outputs[t] for t in re.findall(r"(\w+)\.md", README) if t in outputs}
    assert named >= {"layers", "train_step", "corruptions"}  # the README names all three

    def ran(target: str) -> set[str]:
        lines = make_dry_run(target)
        return {m for line in lines for m in re.findall(r"-m benchmarks\.(\w+)", line)}

    on_gpu = ran("gpu-check")  # what needs a GPU has its own target
    assert on_gpu == {"gpu_paper"}
    missing = (named | modules) - ran("bench") - on_gpu
    assert not missing, f"make bench skips {sorted(missing)}"


def test_make_gpu_check_installs_nothing(tmp_path: Path):
    # a GPU image has its own torch and no package registry: no venv is made there, no pip runs
    assert "installing nothing" in README
    for venv, python in ((".venv", ".venv/bin/python"), (str(tmp_path / "none"), "python3")):
        lines = make_dry_run("gpu-check", f"VENV={venv}")
        assert not any("pip" in line or "-m venv" in line for line in lines), lines
        (line,) = [line for line in lines if "-m benchmarks.gpu_paper" in line]
        assert f" {python} -m benchmarks.gpu_paper" in line and f"PYTHONPATH={ROOT}" in line


def fake_id(tmp_path: Path, uid: int) -> Path:
    """A folder holding an ``id`` command that reports ``uid``."""
    folder = tmp_path / f"uid{uid}"
    folder.mkdir()
    script = folder / "id"
    script.write_text(f"#!/bin/sh\necho {uid}\n")
    script.chmod(0o755)
    return folder


@pytest.mark.parametrize("uid", [0, 1000])
def test_make_lab_starts_jupyter_as_root_too(tmp_path, uid):
    """jupyter refuses to run as root without ``--allow-root``; ``make lab`` passes it then."""
    lines = [line for line in make_dry_run("lab", path=fake_id(tmp_path, uid)) if "jupyter" in line]
    start = [line for line in lines if " lab" in line and "ipykernel" not in line]
    assert len(start) == 1
    assert ("--allow-root" in start[0]) == (uid == 0)


def test_makefile_exports_the_data_root_unless_set():
    show = ["--eval", "show-data-root: ; @echo $$SNCN_DATA", "show-data-root"]
    env = {k: v for k, v in os.environ.items() if k != "SNCN_DATA"}
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    run = {"cwd": ROOT, "capture_output": True, "text": True, "check": True}
    assert subprocess.run(["make", "-s", *show], env=env, **run).stdout.strip() == str(
        ROOT / "data"
    )
    assert "SNCN_DATA=$(pwd)/data" in README
    env["SNCN_DATA"] = "/elsewhere"
    assert subprocess.run(["make", "-s", *show], env=env, **run).stdout.strip() == "/elsewhere"


def test_install_pins_and_conda_environment_match_the_lock_and_the_package():
    pins = re.findall(r"`((?:torch|torchvision)==[\d.]+)`", README)
    assert len(pins) == 2
    lock = (ROOT / "requirements" / "lock.txt").read_text().splitlines()
    assert all(pin in lock for pin in pins)  # the README's pins are the lock's
    pinned = [line for line in lock if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.]+", line) for line in pinned)  # exact
    pyproject = (ROOT / "pyproject.toml").read_text()
    core = re.search(r"^dependencies = \[(.*?)\]", pyproject, re.S | re.M).group(1)
    assert "==" not in core  # the library takes ranges
    names = sorted(re.findall(r'"([a-z]+)[><=]', core))
    assert names == ["filelock", "numpy", "torch", "torchvision"]  # filelock: torch needs it too
    conda = (ROOT / "environment.yml").read_text()
    assert "-e .[notebooks,dev]" in conda and "-c requirements/lock.txt" in conda
    assert "-c requirements/lock.txt -e '.[notebooks,dev]'" in (ROOT / "Makefile").read_text()


# ---------------------------------------------------------------------------------------------
# benchmark numbers
# ---------------------------------------------------------------------------------------------


def test_layer_ratios_are_the_benchmarks():
    ours = markdown_rows(README)
    ours = [r for r in ours if r[0].startswith(("WRN-40-2 block", "ResNet-50 stage"))]
    table = markdown_rows((BENCH / "layers.md").read_text())
    header = table[0]
    measured = {r[0]: dict(zip(header, r, strict=True)) for r in table[1:]}
    columns = ["SelfNorm (g)", "SelfNorm (f, g)", "CrossNorm (neither)", "CrossNorm (both)"]
    assert len(ours) == 5
    for row in ours:
        shape = row[0].split(" (")[0]
        assert row[1:] == [measured[shape][c] for c in columns], shape


def test_train_step_and_corruption_claims_are_the_benchmarks():
    step = (BENCH / "train_step.md").read_text()
    sncn = re.search(r"\| sncn \| \d+ \| ([\d.]+x) \|", step).group(1)
    assert f"SNCN {sncn} plain" in README and f"costs {sncn} the plain step" in README
    share = re.search(r"\(device-resident\) >= 90% of model-only: (\d+)%", step).group(1)
    assert f"at {share}% of the model-only rate" in README
    compiled = re.search(r"\| sncn \(compiled\) \| \d+ \| ([\d.]+x) \|", step)
    assert compiled is None or f"SNCN {compiled.group(1)} the compiled plain step" in README
    rows = markdown_rows((BENCH / "corruptions.md").read_text())
    ours32 = [float(r[1].replace(",", "")) for r in rows[1:16]]
    assert len(ours32) == 15
    floor = float(re.search(r"every corruption above ([\d,]+) images/s", README).group(1)
                  .replace(",", ""))  # fmt: skip
    assert min(ours32) > floor


def test_cifar_c_generation_time_says_under_which_threads_it_holds():
    """The make-c time holds for the benchmark's thread count on an idle CPU (on a busy one,
    torch's default threads ran several times slower than one thread), so the README says so."""
    claim = sentence(README, "750,000 images")
    bench = (BENCH / "corruptions.md").read_text()
    threads = int(re.search(r"(\d+) torch thread", bench).group(1))
    minutes = float(re.search(r"takes about ([\d.]+) min", bench).group(1))
    said = re.search(r"about (a|\d+) minutes?", claim)
    assert said, claim
    assert minutes <= (1.5 if said.group(1) == "a" else float(said.group(1)) * 1.25)
    assert re.search(rf"\b{threads} (torch )?threads?\b", claim), claim
    assert "--threads 1" in claim, claim


# ---------------------------------------------------------------------------------------------
# quick-profile results
# ---------------------------------------------------------------------------------------------


def test_quick_results_in_the_readme_are_the_committed_tables():
    """Every number the README quotes from the quick profile is in a committed table of
    ``results/quick/tables/`` (the README summarises the run files, it does not type results)."""
    section = README.split("### Quick-profile results")[1].split("\n## ")[0]
    first = section[section.index("| notebook |") :].split("\n\n")[0]  # the notebooks' table
    rows = markdown_rows(first)
    assert rows[0][-1] == "result" and len(rows) == 9  # header and the eight notebooks
    tables = ROOT / "results" / "quick" / "tables"
    printed = re.findall(r"\d+\.\d+", " ".join(p.read_text() for p in tables.glob("*.md")))
    measured = set(printed) | {f"{float(n):.1f}" for n in printed}  # the README rounds to 0.1
    quoted = [n for row in rows[1:] for n in re.findall(r"(?<![\d.])\d+\.\d+(?![\d.])", row[-1])]
    assert len(quoted) >= 20
    missing = sorted(set(quoted) - measured)
    assert not missing, f"README quick results not in results/quick/tables: {missing}"


def test_the_readme_scoreboard_is_generated_from_the_committed_claims():
    from sncn import claims

    profile = ROOT / "results" / "quick"
    block = claims.readme_block(profile, "quick")
    assert block in README, (
        "README scoreboard out of date: run python -m sncn.claims --profile quick"
    )
    assert len(markdown_rows(block)) == len(claims.CLAIMS) + 1
