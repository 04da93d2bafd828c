"""The one-command GPU check (benchmarks.gpu_paper): a clear stop without CUDA, and every stage at
toy scale on the CPU, each writing its section as soon as it is done."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_paper


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message of a machine without CUDA")
def test_without_cuda_it_stops_with_one_clear_message(tmp_path, capsys):
    assert gpu_paper.main(["--out", str(tmp_path / "gpu.md")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "gpu.md").exists()
    assert gpu_paper.main(["--device", "cpu"]) == 2  # the CPU only at toy scale
    assert "needs --smoke" in capsys.readouterr().err


@pytest.mark.slow
def test_every_stage_runs_at_toy_scale_on_the_cpu(tmp_path):
    out, paper = tmp_path / "gpu.md", tmp_path / "paper"
    argv = ["--smoke", "--device", "cpu", "--stages", "2", "3", "4", "--methods", "basic",
            "--compile", "none", "--out", str(out), "--results", str(paper)]  # fmt: skip
    assert gpu_paper.main(argv) == 0
    text = out.read_text()
    assert text.startswith("# GPU check") and "torch " + torch.__version__ in text
    assert "## 2. Layers" in text and "CrossNorm (both)" in text and "target <= 2.5x" in text
    assert "## 3. WRN-40-2 training step" in text
    assert all(f"| {m} | no |" in text for m in ("basic", "sn", "cn", "sncn"))
    assert "## 4. Paper-profile" in text and "| cifar10 | wrn | basic | 1 |" in text
    assert "Table 1: Basic" in text  # the paper's column beside ours
    assert "CIFAR-10-C (generated) made on cpu" in text and " evaluation (150 corrupted" in text
    assert (paper / "tables" / "table1_gpu_check.md").is_file()
    assert text.rstrip().endswith("budget.")


def test_a_section_is_on_disk_as_soon_as_its_stage_is_done(tmp_path):
    report = gpu_paper.Report(tmp_path / "gpu.md", torch.device("cpu"))
    assert "# GPU check" in (tmp_path / "gpu.md").read_text()
    report.add("## 1. first")
    assert (tmp_path / "gpu.md").read_text().rstrip().endswith("## 1. first")


def test_cuda_tests_run_past_test_files_that_cannot_be_imported(tmp_path):
    # a GPU image without the notebooks' packages: those files are listed, the CUDA tests still run
    (tmp_path / "test_broken.py").write_text("import a_package_this_machine_lacks\n")
    (tmp_path / "test_cuda.py").write_text(
        "import pytest\n\n@pytest.mark.gpu\ndef test_on_the_gpu():\n    assert True\n\n"
        "def test_elsewhere():\n    assert True\n"
    )
    section = gpu_paper.cuda_tests(300, smoke=False, tests=[str(tmp_path)])
    lines = section.splitlines()
    assert lines[2].startswith("Result: 1 passed, 1 deselected") and "1 error" in lines[2], section
    assert lines[3].startswith("- ERROR ") and lines[3].endswith("test_broken.py"), section


def test_a_failing_stage_or_row_is_reported_and_the_rest_runs(tmp_path, monkeypatch, capsys):
    # one run of the check per GPU lease: a failure (a compiler missing there) costs only itself
    def broken(*args, **kwargs):
        raise RuntimeError("no C compiler | found")

    timer = gpu_paper.step_timer

    def sn_broken(method, *args):
        return broken() if method == "sn" else timer(method, *args)

    monkeypatch.setattr(gpu_paper, "layer_timings", broken)
    monkeypatch.setattr(gpu_paper, "step_timer", sn_broken)
    out = tmp_path / "gpu.md"
    argv = ["--smoke", "--device", "cpu", "--stages", "2", "3", "--compile", "none",
            "--out", str(out)]  # fmt: skip
    assert gpu_paper.main(argv) == 0
    text = out.read_text()
    assert "## 2. Layers\n\nFailed: RuntimeError: no C compiler / found (the traceback" in text
    assert "| sn | no | failed: RuntimeError: no C compiler / found | - |" in text
    assert all(f"| {m} | no | " in text and f"| {m} | no | failed" not in text
               for m in ("basic", "cn", "sncn"))  # fmt: skip
    assert "Traceback" in capsys.readouterr().err and text.rstrip().endswith("budget.")


@pytest.mark.slow
def test_a_failing_wave_leaves_the_next_its_time(tmp_path, monkeypatch):
    from sncn.experiments import cifar_c

    run = cifar_c.run

    def basic_fails(**call):
        if call["method"] == "basic":
            raise RuntimeError("out of memory")
        return run(**call)

    monkeypatch.setattr(cifar_c, "run", basic_fails)
    out, paper = tmp_path / "gpu.md", tmp_path / "paper"
    argv = ["--smoke", "--device", "cpu", "--stages", "4", "--methods", "basic", "cn",
            "--out", str(out), "--results", str(paper)]  # fmt: skip
    assert gpu_paper.main(argv) == 0
    text = out.read_text()
    assert (
        "Failed (the tracebacks are in the console log): basic (RuntimeError: out of memory)"
        in text
    )
    assert "| cifar10 | wrn | cn | 1 |" in text and "| cifar10 | wrn | basic | 1 |" not in text
    assert "| cifar10 | wrn | cn | 1 |" in (paper / "tables" / "table1_gpu_check.md").read_text()


def test_compile_modes_reach_the_trainer_as_torch_compile_options():
    # --compile alone is torch.compile's default mode; --compile reduce-overhead adds CUDA graphs
    assert gpu_paper.compile_options(False) is False
    assert gpu_paper.compile_options("default") is True
    assert gpu_paper.compile_options("reduce-overhead") == {"mode": "reduce-overhead"}


def test_concurrent_must_be_one_or_more(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        gpu_paper.main(["--smoke", "--device", "cpu", "--concurrent", "0",
                        "--out", str(tmp_path / "gpu.md")])  # fmt: skip
    assert stopped.value.code == 2 and "--concurrent must be 1" in capsys.readouterr().err
    assert not (tmp_path / "gpu.md").exists()


@pytest.mark.slow
def test_stages_run_in_the_order_given_and_stage_4_times_what_it_projects(tmp_path):
    # --stages 4 1 2 3 on a GPU lent for minutes: the paper runs first, projected from step
    # rates stage 4 times itself
    out, paper = tmp_path / "gpu.md", tmp_path / "paper"
    argv = ["--smoke", "--device", "cpu", "--stages", "4", "2", "--methods", "basic",
            "--out", str(out), "--results", str(paper)]  # fmt: skip
    assert gpu_paper.main(argv) == 0
    text = out.read_text()
    assert text.index("## 4. Paper-profile") < text.index("## 2. Layers")
    assert "## 3." not in text and "| cifar10 | wrn | basic | 1 |" in text
    assert "Projected from the training step's images/s, eager: basic " in text


@pytest.mark.slow
def test_stage_4_trains_k_runs_at_once_and_says_so(tmp_path, monkeypatch):
    # the embedded sample as the data, in the workers too (they read the environment)
    monkeypatch.setenv("SNCN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SNCN_SAMPLE", "1")
    monkeypatch.delenv("SNCN_CACHE", raising=False)
    out, paper = tmp_path / "gpu.md", tmp_path / "paper"
    argv = ["--smoke", "--device", "cpu", "--stages", "4", "--methods", "basic", "cn",
            "--concurrent", "2", "--out", str(out), "--results", str(paper)]  # fmt: skip
    assert gpu_paper.main(argv) == 0
    text = out.read_text()
    assert "Runs at a time on the one cpu device (--concurrent): 2." in text
    assert "| cifar10 | wrn | basic | 1 |" in text and "| cifar10 | wrn | cn | 1 |" in text
    assert "- waves (wall time, and projected as one run after another): basic + cn: " in text
    table = (paper / "tables" / "table1_gpu_check.md").read_text()
    assert "trained on cpu by python -m benchmarks.gpu_paper, 2 at a time; AugMix views" in table


@pytest.mark.slow
def test_stage_4_makes_augmix_views_on_the_device_and_says_so(tmp_path):
    out, paper = tmp_path / "gpu.md", tmp_path / "paper"
    argv = ["--smoke", "--device", "cpu", "--stages", "4", "--methods", "augmix",
            "--out", str(out), "--results", str(paper)]  # fmt: skip
    assert gpu_paper.main(argv) == 0
    assert "| cifar10 | wrn | augmix | 1 |" in out.read_text()
    table = (paper / "tables" / "table1_gpu_check.md").read_text()
    assert "AugMix views: device (augmix_implementation)" in table
    (run,) = (paper / "runs").iterdir()
    params = (run / "params.json").read_text()
    assert '"augmix_implementation": "device"' in params


def test_untimed_methods_are_projected_per_view():
    # AugMix and the consistency loss pass three views per image through the model
    assert [gpu_paper._views(m) for m in ("basic", "sncn", "augmix", "sncn_consistency")] == [
        1,
        1,
        3,
        3,
    ]


@pytest.mark.slow
def test_stage_3_times_basic_and_sncn_compiled_by_default(tmp_path):
    # inductor on the CPU at toy scale: the compiled rows are there, for basic and SNCN only,
    # each step one graph (style layers included)
    out = tmp_path / "gpu.md"
    assert gpu_paper.main(["--smoke", "--device", "cpu", "--stages", "3", "--out", str(out)]) == 0
    text = out.read_text()
    assert all(f"| {m} | no |" in text for m in ("basic", "sn", "cn", "sncn"))
    assert "| basic | default |" in text and "| sncn | default |" in text
    compiled = [line for line in text.splitlines() if "| default |" in line]
    assert len(compiled) == 2 and all(line.endswith(" | 1 |") for line in compiled), compiled
    assert "| sn | default |" not in text and "| cn | default |" not in text


SCRIPT = Path(gpu_paper.REPO) / "benchmarks" / "device_check.sh"


def device_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``bash benchmarks/device_check.sh ARGS`` with ``env`` over this environment."""
    full = {k: v for k, v in os.environ.items() if k != "SNCN_CACHE"} | env
    return subprocess.run(["bash", str(SCRIPT), *args], env=full, capture_output=True, text=True,
                          timeout=900)  # fmt: skip


def test_device_script_stages_the_cifar_archive_or_says_where_it_looked(tmp_path):
    mirror, staged = tmp_path / "mirror", tmp_path / "staged"
    (mirror / "cifar10").mkdir(parents=True)
    (mirror / "cifar10" / "cifar10-jpeg.tar.gz").write_bytes(b"the archive")
    done = device_script("stage", str(mirror), env={"GPU_MIRROR": str(staged)})
    assert done.returncode == 0, done.stderr
    assert (staged / "cifar10" / "cifar10-jpeg.tar.gz").read_bytes() == b"the archive"
    missing = device_script("stage", str(tmp_path / "nowhere"), env={"GPU_MIRROR": str(staged)})
    assert missing.returncode == 2
    assert f"no CIFAR-10 archive at {tmp_path}/nowhere" in missing.stderr
    assert device_script("neither", env={}).returncode == 2


@pytest.mark.slow
def test_device_script_runs_the_check_and_packs_what_it_wrote(tmp_path):
    # an empty mirror and data root: the embedded sample, as on a machine without the data
    env = {"GPU_MIRROR": str(tmp_path / "mirror"), "OUT": str(tmp_path / "out"),
           "RESULTS": str(tmp_path / "paper"), "SNCN_DATA": str(tmp_path / "data"),
           "SNCN_SAMPLE": "1", "GPU_PY": sys.executable, "TQDM_DISABLE": "1"}  # fmt: skip
    done = device_script("run", "--smoke", "--device", "cpu", "--stages", "4", "--methods",
                         "basic", env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert names == {"gpu.md", "gpu_check.log", "nvidia-smi.csv", "table1_gpu_check.md",
                     "table1_gpu_check.csv", "paper_runs.tar.gz"}  # fmt: skip
    assert "| cifar10 | wrn | basic | 1 |" in (out / "gpu.md").read_text()
    assert "## 4. Paper-profile" in (out / "gpu_check.log").read_text()
    with tarfile.open(out / "paper_runs.tar.gz") as tar:
        packed = tar.getnames()
    assert any(n.startswith("paper/runs/") and n.endswith("/metrics.json") for n in packed)
    assert not any(n.endswith((".pt", ".pth")) for n in packed)  # no checkpoints
    if not torch.cuda.is_available():  # the check's exit status and message come through
        stopped = device_script("run", env=env)
        assert stopped.returncode == 2
        assert "no CUDA device" in (out / "gpu_check.log").read_text()
