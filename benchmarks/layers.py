"""Forward+backward time of SelfNorm and CrossNorm as a ratio to nn.BatchNorm2d, side by side.

Run: ``python -m benchmarks.layers`` (writes ``results/benchmarks/layers.md``).

Each configuration is timed interleaved with BatchNorm at the same shape (round-robin over the
layers, many rounds), and the table reports medians and ratios of medians, so machine noise hits
all columns alike. Shapes are those of WRN-40-2 (batch 128) and ResNet-50 (batch 32).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from benchmarks._common import publish, steady_allocator
from sncn.layers import CrossNorm, SelfNorm

SHAPES = {
    "WRN-40-2 block 1": (128, 32, 32, 32),
    "WRN-40-2 block 2": (128, 64, 16, 16),
    "WRN-40-2 block 3": (128, 128, 8, 8),
    "ResNet-50 stage 1": (32, 256, 56, 56),
    "ResNet-50 stage 4": (32, 2048, 7, 7),
}
TARGETS = {"SelfNorm (g)": 1.6, "CrossNorm (neither)": 2.5, "CrossNorm (both)": 2.5}


def layers(c: int) -> dict[str, nn.Module]:
    """The layers compared at ``c`` channels, BatchNorm first."""
    out: dict[str, nn.Module] = {
        "BatchNorm2d": nn.BatchNorm2d(c),
        "SelfNorm (g)": SelfNorm(c),
        "SelfNorm (f, g)": SelfNorm(c, two_functions=True),
    }
    for crop in ("neither", "style", "content", "both"):
        cn = CrossNorm(c, crop=crop)
        cn.active = True
        out[f"CrossNorm ({crop})"] = cn
    return out


def fwd_bwd(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    """A closure running one forward and backward pass of ``layer``."""

    def step() -> None:
        x.grad = None
        layer(x).backward(grad)

    return step


def measure(
    shape: tuple[int, ...],
    rounds: int,
    warmup: int = 2,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
) -> dict[str, float]:
    """Median seconds of forward+backward per layer, interleaved round-robin.

    Args:
        shape: ``(N, C, H, W)``.
        rounds: timed rounds (after ``warmup`` untimed ones).
        warmup: untimed rounds first.
        device: where the layers run (CUDA is synchronised around each timed call).
        autocast: a dtype to run the layers under ``torch.autocast`` (e.g. bfloat16), or None.
    """
    device = torch.device(device)
    torch.manual_seed(0)
    x = torch.randn(shape, device=device, requires_grad=True)
    grad = torch.randn(shape, device=device)
    steps = {name: fwd_bwd(m.to(device).train(), x, grad)
             for name, m in layers(shape[1]).items()}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in steps}
    precision = (torch.autocast(device.type, dtype=autocast) if autocast is not None
                 else contextlib.nullcontext())  # fmt: skip
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with precision:
        for r in range(warmup + rounds):
            for name, step in steps.items():
                sync()
                t0 = time.perf_counter()
                step()
                sync()
                if r >= warmup:
                    times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, print the table and write it to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per layer")
    parser.add_argument("--out", default="results/benchmarks/layers.md", help="markdown table")
    parser.add_argument("--default-allocator", action="store_true",
                        help="glibc's default malloc (page faults: +-1x run to run)")  # fmt: skip
    args = parser.parse_args(argv)
    allocator = "default allocator" if args.default_allocator else steady_allocator()

    rows = []
    names: list[str] = []
    for label, shape in SHAPES.items():
        med = measure(shape, args.rounds)
        names = list(med)
        bn = med["BatchNorm2d"]
        rows.append((label, shape, bn, {n: med[n] / bn for n in names[1:]}))
        print(f"{label} {shape}: BatchNorm {bn * 1e3:.2f} ms", flush=True)

    head = "| shape | N, C, H, W | BatchNorm2d (ms) | " + " | ".join(names[1:]) + " |"
    lines = [
        f"# Layer benchmark: forward+backward, ratio to BatchNorm2d ({torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, CPU, median of {args.rounds} interleaved rounds; "
        f"{allocator})",
        "",
        head,
        "|" + " --- |" * (3 + len(names) - 1),
    ]
    for label, shape, bn, ratios in rows:
        cells = " | ".join(f"{ratios[n]:.2f}x" for n in names[1:])
        lines.append(f"| {label} | {', '.join(map(str, shape))} | {bn * 1e3:.2f} | {cells} |")
    lines += [
        "",
        "Targets at the WRN-40-2 shapes: "
        + ", ".join(f"{k} <= {v}x" for k, v in TARGETS.items())
        + ".",
    ]
    wrn = [r for r in rows if r[0].startswith("WRN")]
    for name, target in TARGETS.items():
        worst = max(r[3][name] for r in wrn)
        verdict = "met" if worst <= target else "NOT met"
        lines.append(f"- {name}: worst WRN ratio {worst:.2f}x -> target {verdict}.")
    return publish(lines, args.out)


if __name__ == "__main__":
    main()
