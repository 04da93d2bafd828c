"""The one-command GPU check: CUDA tests, layer and step timings, and paper-scale Table 1 cells.

Run on a machine with one CUDA GPU, the data root laid out (``bash .ci/prepare-data``):

    python -m benchmarks.gpu_paper            # or: make gpu-check

It installs nothing and stops with a clear message when no CUDA device exists. Within
``--budget`` seconds of wall time (default 570, under the 10 minutes the check is sized for) it:

1. runs the CUDA-only tests (``pytest -m gpu``);
2. times SelfNorm and CrossNorm (every crop mode) forward+backward against ``nn.BatchNorm2d`` in
   bfloat16 autocast at the WRN-40-2 and ResNet-50 shapes, side by side (``benchmarks.layers``);
3. times the WRN-40-2 training step (plain, SN, CN, SNCN eagerly; plain and SNCN through
   ``torch.compile`` too, in ``--compile``'s mode) and projects the wall time of a 100-epoch
   paper run;
4. trains as many paper-profile WRN-40-2 CIFAR-10 runs (100 epochs, the released settings; basic
   and SNCN first, then the other Table 1 methods; ``--concurrent K`` of them at once, as K
   processes sharing the GPU; AugMix views made on the device unless ``--augmix reference``)
   as the time left allows, evaluates them on generated CIFAR-10-C (made on the GPU first) and
   writes their Table 1 cells, the paper's numbers beside them, to
   ``results/paper/tables/table1_gpu_check.md``.

Each stage appends its section to ``results/benchmarks/gpu.md`` (with the GPU model and the
software versions at the top) as soon as it is done, so a check cut off by a time limit leaves
what it finished. ``--stages`` picks the stages and their order: ``--stages 4 1 2 3`` trains
first (timing the basic and SNCN steps its projections need itself), for a GPU lent for minutes.
``--smoke`` runs every stage at toy scale, on the CPU too, for the tests.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from benchmarks.layers import SHAPES

REPO = Path(__file__).resolve().parent.parent

#: The Table 1 methods in the order they are trained: the two the issue asks for first.
METHODS = ("basic", "sncn", "sn", "cn", "sncn_consistency", "augmix", "sncn_augmix")

#: Shapes of ``--smoke`` (stage 2 otherwise times ``benchmarks.layers.SHAPES``).
SMOKE_SHAPES = {"WRN-40-2 block 3 (smoke: batch 8)": (8, 128, 8, 8)}

#: Targets of issue 17 (ratio to BatchNorm2d on CUDA in bf16 at the WRN-40-2 shapes).
LAYER_TARGETS = {"SelfNorm (g)": 1.3, "CrossNorm (neither)": 2.0, "CrossNorm (both)": 2.5}

#: The methods stage 3 also times compiled (each compilation takes a minute or more).
COMPILED_METHODS = ("basic", "sncn")

#: Images of CIFAR-10's training set: a paper epoch.
TRAIN_IMAGES = 50_000


class Report:
    """``results/benchmarks/gpu.md``, appended to stage by stage (each write a whole file)."""

    def __init__(self, path: Path, device: torch.device) -> None:
        self.path = path
        self.sections: list[str] = [_header(device)]
        self.write()

    def add(self, section: str) -> None:
        """Append a section (markdown) and rewrite the file."""
        self.sections.append(section.rstrip() + "\n")
        self.write()
        print(section, flush=True)

    def write(self) -> None:
        """Write the file (atomically)."""
        from sncn.results import atomic_write

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, "\n".join(self.sections))


def _header(device: torch.device) -> str:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    import torchvision

    from sncn import __version__

    return (
        "# GPU check (python -m benchmarks.gpu_paper)\n\n"
        f"- started {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {device.type}: {gpu or 'CPU'}\n"
        f"- sncn {__version__}, Python {platform.python_version()}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), torchvision "
        f"{torchvision.__version__}\n"
    )


class Clock:
    """The check's time budget."""

    def __init__(self, budget: float) -> None:
        self.start, self.budget = time.monotonic(), budget

    def left(self) -> float:
        """Seconds left."""
        return self.budget - (time.monotonic() - self.start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# stage 1


def cuda_tests(timeout: float, smoke: bool, tests: Sequence[str] = ("tests",)) -> str:
    """Run the tests marked ``gpu`` in a subprocess; their summary line, the failures and the
    test files that could not be collected, as a section. pytest's whole output goes to the
    console.

    A GPU image need not hold the notebooks' packages (nbformat, papermill): the test files that
    import them cannot be collected there, and they hold no CUDA test, so collection errors do not
    stop the others (``--continue-on-collection-errors``); the section lists them."""
    args = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-m", "gpu",
            "--continue-on-collection-errors"]  # fmt: skip
    args += ["tests/test_layers.py"] if smoke else list(tests)
    try:
        done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        print(done.stdout, done.stderr, sep="\n", flush=True)
        tail = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    except subprocess.TimeoutExpired:
        tail, failed = f"cut off after {timeout:.0f} s", []
    lines = ["## 1. CUDA-only tests (pytest -m gpu)", "", f"Result: {tail.strip('= ')}"]
    lines += [f"- {f}" for f in failed]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# stage 2


def layer_timings(device: torch.device, rounds: int, shapes: dict[str, tuple[int, ...]]) -> str:
    """SelfNorm / CrossNorm forward+backward as ratios to BatchNorm2d (bf16 autocast on CUDA)."""
    from benchmarks.layers import measure

    dtype = torch.bfloat16 if device.type == "cuda" else None
    rows, names = [], []
    for label, shape in shapes.items():
        med = measure(shape, rounds, device=device, autocast=dtype)
        names = list(med)
        bn = med["BatchNorm2d"]
        rows.append((label, shape, bn, {n: med[n] / bn for n in names[1:]}))
    precision = "bf16 autocast" if dtype else "float32"
    lines = [
        f"## 2. Layers: forward+backward, ratio to BatchNorm2d ({device.type}, {precision}, "
        f"median of {rounds} interleaved rounds)",
        "",
        "| shape | N, C, H, W | BatchNorm2d (ms) | " + " | ".join(names[1:]) + " |",
        "|" + " --- |" * (2 + len(names)),
    ]
    for label, shape, bn, ratios in rows:
        cells = " | ".join(f"{ratios[n]:.2f}x" for n in names[1:])
        lines.append(f"| {label} | {', '.join(map(str, shape))} | {bn * 1e3:.3f} | {cells} |")
    wrn = [r for r in rows if r[0].startswith("WRN")]
    lines.append("")
    for name, target in LAYER_TARGETS.items():
        worst = max(r[3][name] for r in wrn)
        verdict = "met" if worst <= target else "NOT met"
        lines.append(f"- {name}: worst WRN-40-2 ratio {worst:.2f}x, target <= {target}x: {verdict}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# stage 3


def step_timer(
    method: str, device: torch.device, batch: int, compile_model: bool | str, model_kwargs: dict
) -> Callable[[], None]:
    """One training step of WRN-40-2 under ``method``'s released settings on a fixed batch, as
    the paper profile trains it (:func:`sncn.experiments.cifar_c.build_trainer`);
    ``compile_model``: False, or a ``torch.compile`` mode (``"default"``, ``"reduce-overhead"``:
    CUDA graphs, ``"max-autotune"``, ...)."""
    from sncn.experiments.cifar_c import build_trainer
    from sncn.hparams import cifar_setting
    from sncn.models import create_model

    setting = cifar_setting("cifar10", "wrn", method)
    torch.manual_seed(0)
    model = create_model("wrn", num_classes=10, **setting["model"], **model_kwargs)
    trainer = build_trainer(setting, model, 10_000, device, compile=compile_options(compile_model))
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=device, generator=g)
    y = torch.randint(0, 10, (batch,), device=device, generator=g)

    def step() -> None:
        trainer.update((x, y), sync=False)  # as fit calls it: no host sync in the step

    return step


def step_timings(
    device: torch.device, methods: Sequence[str], compiled: Sequence[bool | str], steps: int,
    batch: int, model_kwargs: dict, clock: Clock,
    compiled_methods: Sequence[str] = COMPILED_METHODS,
    timed: dict[tuple[str, bool | str], tuple[float, int]] | None = None,
) -> tuple[str, dict[tuple[str, bool | str], float]]:  # fmt: skip
    """Images/s of the training step per method and compile mode (False: eager; the compiled
    modes for ``compiled_methods`` only, each a compilation of a minute or more); the section
    and the rates. ``timed``: ``(images/s, graphs)`` of rows measured before, reported again
    rather than timed again; the rows measured here are added to it."""
    timed = {} if timed is None else timed
    rates: dict[tuple[str, bool | str], float] = {}
    failed: dict[tuple[str, bool | str], str] = {}
    graphs: dict[tuple[str, bool | str], int] = {}  # compiled by dynamo, warm-up included
    for method in methods:
        for compile_model in compiled:
            key = method, compile_model
            if compile_model and method not in compiled_methods:
                continue
            if key in timed:  # measured before (stage 4 times what it projects from)
                rates[key], graphs[key] = timed[key]
                continue
            if clock.left() < 60:
                break
            graphs_before = _graphs()
            try:
                step = step_timer(method, device, batch, compile_model, model_kwargs)
                for _ in range(3 if not compile_model else 5):  # warm-up (and compilation)
                    step()
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(steps):
                    step()
                _sync(device)
            except Exception as error:  # a row that fails (a compiler missing) costs only itself
                failed[key] = _failure(error)
                continue
            rates[key] = steps * batch / (time.perf_counter() - t0)
            graphs[key] = _graphs() - graphs_before
            timed[key] = rates[key], graphs[key]
    lines = [
        f"## 3. WRN-40-2 training step ({device.type}, batch {batch}, {steps} timed steps after "
        "warm-up; the step as the paper profile trains it)",
        "",
        "| method | torch.compile | images/s | 100-epoch run (projected) | graphs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (method, compile_model), rate in rates.items():
        projected = 100 * TRAIN_IMAGES / rate
        count = graphs[method, compile_model] if compile_model else "-"
        lines.append(f"| {method} | {compile_model or 'no'} | {rate:,.0f} | "
                     f"{_minutes(projected)} | {count} |")  # fmt: skip
    for (method, compile_model), why in failed.items():
        lines.append(f"| {method} | {compile_model or 'no'} | failed: {why} | - | - |")
    lines += ["", "Target: a 100-epoch SNCN (crop both) run in at most 10 minutes; aim for 2.",
              "graphs: the graphs dynamo compiled for the step (1: the whole forward and "
              "backward, style layers included; more: a break or a recompilation)."]  # fmt: skip
    return "\n".join(lines), rates


def _graphs() -> int:
    """The graphs dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _failure(error: BaseException) -> str:
    """One line for the report on ``error``; its traceback goes to the console (the log)."""
    traceback.print_exception(error)
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {first}".replace("|", "/")


def _stage(heading: str, make: Callable[[], str]) -> str:
    """``make()``'s section, or, when it raises, ``heading`` and the error: a stage that fails
    leaves the time to the others."""
    try:
        return make()
    except Exception as error:
        return f"{heading}\n\nFailed: {_failure(error)} (the traceback is in the console log)."


def _views(method: str) -> int:
    """Forward passes per training image of a method's step (AugMix, consistency: 3)."""
    from sncn.hparams import cifar_setting

    return 3 if cifar_setting("cifar10", "wrn", method)["trainer"] != "supervised" else 1


def compile_options(mode: bool | str) -> bool | dict[str, str]:
    """``Trainer(compile=...)`` for a compile mode: False (eager), True or ``"default"``, or
    another ``torch.compile`` mode."""
    if isinstance(mode, bool):
        return mode
    return True if mode == "default" else {"mode": mode}


def _minutes(seconds: float) -> str:
    """A duration for the report: seconds below two minutes, else minutes."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# ----------------------------------------------------------------------------------------------
# stage 4


def paper_runs(
    device: torch.device, methods: Sequence[str], rates: dict[tuple[str, bool | str], float],
    clock: Clock, results_dir: Path, smoke: bool, compile_model: bool | str = False,
    concurrent: int = 1, augmix_views: str = "reference",
) -> str:  # fmt: skip
    """Train the methods in order, ``concurrent`` at a time, while the projected time fits; write
    their Table 1 cells.

    The methods train in waves of at most ``concurrent`` runs sharing the GPU
    (:func:`sncn.experiments.cifar_c.run_concurrently`). A wave is projected to take
    as long as its runs one after another: the sum of their single-run projections from stage 3's
    rate (30 s each for evaluation and setup), as if K runs at once got no more of the GPU in
    aggregate than one. Stage 3 times one run alone, so any gain of sharing is not counted:
    the projection errs long. A method stage 3 did not time is projected from basic's rate
    divided by its views per step (3 for AugMix and the consistency loss). A method whose
    projection does not fit the time left, even alone, is not trained; one that fits alone but
    not in the current wave waits for the next. The AugMix methods make their views as
    ``augmix_views`` says (``augmix_implementation``: ``"reference"``, PIL per image on the host,
    or ``"device"``, batched on the device; recorded in the run's setting).
    """
    from sncn import results
    from sncn.experiments import cifar_c
    from sncn.hparams import cifar_setting

    budget = dict(epochs=1, batch_size=16, train_subset=64, test_subset=2,
                  model_kwargs={"depth": 10, "widen_factor": 1}) if smoke else {}  # fmt: skip

    def projected(method: str) -> float:  # seconds of one run alone
        rate = rates.get((method, compile_model))
        if rate is None and rates.get(("basic", compile_model)):  # not timed: from basic's,
            rate = rates["basic", compile_model] / _views(method)  # each view a forward pass
        return 30 + (100 * TRAIN_IMAGES / rate if rate and not smoke else 0)

    def call(method: str, position: tuple[int, int]) -> dict:  # cifar_c.run's arguments
        augmix = cifar_setting("cifar10", "wrn", method)["trainer"] == "augmix"
        overrides = {"augmix_implementation": augmix_views} if augmix else {}
        return dict(dataset="cifar10", backbone="wrn", method=method, results_dir=results_dir,
                    seed=0, device=str(device), progress=False, position=position,
                    compile=compile_options(compile_model), overrides=overrides,
                    **budget)  # fmt: skip

    started = time.monotonic()  # the CIFAR-10-C every run evaluates on, made once, on the device
    _, source = cifar_c.corrupted_test_set("cifar10", budget.get("test_subset") or None,
                                           device=device)  # fmt: skip
    made = time.monotonic() - started
    print(f"CIFAR-10-C ({source}) ready in {_minutes(made)}", flush=True)
    queue, runs, skipped, waves, failed = list(methods), [], [], [], []
    profile = "smoke scale (toy budget)" if smoke else "paper profile, seed 0"
    notes = [f"{profile}; trained on {device.type} by python -m benchmarks.gpu_paper, "
             f"{concurrent} at a time; AugMix views: {augmix_views} (augmix_implementation).",
             "CIFAR-C 'generated': corruptions made by sncn.corruptions from the local CIFAR "
             "test images, not the official CIFAR-10-C files."]  # fmt: skip

    def write_table() -> Path:  # after every wave: a check cut off keeps what it trained
        title = "Table 1 cells from the GPU check"
        rows = cifar_c.table_rows(runs)
        return results.save_table(rows, "table1_gpu_check", results_dir, title=title, notes=notes)

    while queue:
        wave, planned = [], 0.0
        for method in list(queue):
            needed = projected(method)
            if needed > clock.left():
                left = _minutes(clock.left())
                skipped.append(f"{method} (projected {_minutes(needed)}, {left} left)")
                queue.remove(method)
            elif len(wave) < concurrent and planned + needed <= clock.left():
                wave.append(method)
                planned += needed
                queue.remove(method)
        if not wave:  # every method left was skipped
            break
        started = time.monotonic()
        calls = [call(m, (len(runs) + k + 1, len(methods))) for k, m in enumerate(wave)]
        try:
            if len(wave) == 1:
                trained = [cifar_c.run(**calls[0])]
            else:  # the wave's runs at once, as processes sharing the device
                trained = cifar_c.run_concurrently(calls, len(wave))
        except Exception as error:  # the next wave still gets the time left
            failed.append(f"{' + '.join(wave)} ({_failure(error)})")
            continue
        grid = [("cifar10", "wrn", m, [metrics]) for m, metrics in zip(wave, trained, strict=True)]
        seconds = time.monotonic() - started
        waves.append(f"{' + '.join(wave)}: {_minutes(seconds)} (projected {_minutes(planned)})")
        for _, _, method, (metrics,) in grid:
            print(f"{method}: clean {metrics['clean_error']:.2f}, mCE {metrics['mce']:.2f}",
                  flush=True)  # fmt: skip
        print(f"wave {waves[-1]}", flush=True)
        runs += grid
        write_table()
    heading = "## 4. Paper-profile WRN-40-2 CIFAR-10 runs (100 epochs, released settings)"
    lines = [heading, "", f"Runs at a time on the one {device.type} device (--concurrent): "
             f"{concurrent}."]  # fmt: skip
    used = [f"{m} {rates[m, compile_model]:,.0f}" for m in methods if (m, compile_model) in rates]
    if used:
        kind = f"compiled ({compile_model})" if compile_model else "eager"
        lines.append(f"Projected from the training step's images/s, {kind}: {', '.join(used)}.")
    if runs:
        path = write_table()
        table = path.read_text()
        lines += ["", table.split("\n", 2)[2].strip(), "", f"Written to {path}."]
        times = [f"{m}: {_minutes(s[0]['train_seconds'])} training, "
                 f"{_minutes(s[0]['eval_seconds'])} evaluation ({s[0]['c_images'] * 75:,} "
                 "corrupted + the clean test images)" for _, _, m, s in runs]  # fmt: skip
        lines += ["", "- " + "; ".join(times),
                  f"- CIFAR-10-C ({source}) made on {device.type} (or found complete) in "
                  f"{_minutes(made)}"]  # fmt: skip
        lines += ["- waves (wall time, and projected as one run after another): "
                  + "; ".join(waves)]  # fmt: skip
    if skipped:
        lines += ["", "Not trained (time): " + "; ".join(skipped)]
    if failed:
        lines += ["", "Failed (the tracebacks are in the console log): " + "; ".join(failed)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; 0 when it ran (whatever it measured), 2 without CUDA."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=570, help="wall-time budget in seconds")
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4],
                        help="the stages to run, in this order (default: 1 2 3 4; 4 1 2 3 trains "
                             "first, timing the steps it projects with itself)")  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="stage 4, in order")
    parser.add_argument("--compile", default="default", metavar="MODE",
                        help="stage 3: also time basic and SNCN through torch.compile in MODE "
                             "(default: 'default'; reduce-overhead: CUDA graphs; max-autotune; "
                             "none: eager only)")  # fmt: skip
    parser.add_argument("--train-compiled", action="store_true",
                        help="stage 4: train through torch.compile in --compile's MODE (default: "
                             "eagerly)")  # fmt: skip
    parser.add_argument("--concurrent", type=int, default=1, metavar="K",
                        help="stage 4: train K runs at once on the GPU, as K processes (default "
                        "1). The time projection assumes no gain from sharing: a wave of K runs "
                        "is projected as its runs one after another")  # fmt: skip
    parser.add_argument("--augmix", choices=("device", "reference"), default="device",
                        help="stage 4: the AugMix methods' views made in batches on the "
                             "device (default; the reference's distributions, PIL-exact "
                             "operations) or per image with PIL on the host (the package's "
                             "default, slow)")  # fmt: skip
    parser.add_argument("--smoke", action="store_true",
                        help="toy scale, any device (the tests run it on the CPU)")  # fmt: skip
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu with --smoke")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "gpu.md")
    parser.add_argument("--results", type=Path, default=REPO / "results" / "paper",
                        help="stage 4's results folder (runs and the table)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.concurrent < 1:
        parser.error(f"--concurrent must be 1 (one run at a time) or more, got {args.concurrent}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: benchmarks.gpu_paper checks the GPU path and needs one GPU "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Run it on a GPU "
              "machine; on the CPU, --smoke --device cpu runs every stage at toy scale.",
              file=sys.stderr)  # fmt: skip
        return 2
    if device.type != "cuda" and not args.smoke:
        print(f"--device {device.type} needs --smoke: the check's numbers mean a GPU.",
              file=sys.stderr)  # fmt: skip
        return 2
    clock = Clock(args.budget)
    report = Report(args.out, device)
    small = {"depth": 10, "widen_factor": 1} if args.smoke else {}
    timed: dict[tuple[str, bool | str], tuple[float, int]] = {}  # step rows, measured once
    timing = dict(steps=2 if args.smoke else 30, batch=8 if args.smoke else 128,
                  model_kwargs=small, clock=clock, timed=timed)  # fmt: skip
    trained_as = args.train_compiled and args.compile != "none" and args.compile

    def layers() -> str:  # stage 2
        shapes = SMOKE_SHAPES if args.smoke else SHAPES
        return layer_timings(device, 3 if args.smoke else 25, shapes)

    def steps() -> str:  # stage 3
        modes = [False] if args.compile == "none" else [False, args.compile]
        return step_timings(device, ("basic", "sn", "cn", "sncn"), modes, **timing)[0]

    def runs() -> str:  # stage 4; its projections need the step's rate: timed here if not yet
        if ("basic", trained_as) not in timed:
            step_timings(device, ("basic", "sncn"), [trained_as], **timing)
        rates = {key: rate for key, (rate, _) in timed.items()}
        return paper_runs(device, args.methods, rates, clock, args.results, args.smoke,
                          trained_as, args.concurrent, args.augmix)  # fmt: skip

    for stage in dict.fromkeys(args.stages):  # in the order given
        if stage == 1:
            report.add(cuda_tests(min(150.0, clock.left() / 4), args.smoke))
        elif stage == 2:
            report.add(_stage("## 2. Layers", layers))
        elif stage == 3:
            report.add(_stage("## 3. WRN-40-2 training step", steps))
        else:
            report.add(_stage("## 4. Paper-profile WRN-40-2 CIFAR-10 runs", runs))
    report.add(f"Done in {_minutes(args.budget - clock.left())} of the "
               f"{_minutes(args.budget)} budget.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
