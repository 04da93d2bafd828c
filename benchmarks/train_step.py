"""WRN-40-2 training step, plain vs SN vs CN vs SNCN, and the end-to-end input pipeline.

Run: ``python -m benchmarks.train_step`` (writes ``results/benchmarks/train_step.md``).

1. Model-only step (forward, backward, SGD update) on a fixed batch, for the four variants of
   Table 14 at the released scripts' WRN-40-2 CIFAR-10 settings (units at ``post``, CN switched on
   with ``cn_prob``/``active_num``), interleaved round-robin; medians and ratios to plain.
2. End to end: the same plain step fed by the real input pipeline (CIFAR-10 arrays held in memory,
   random crop + flip + normalisation of each batch on the training device,
   :class:`sncn.data.vision.ArrayLoader`), as images/s next to the model-only rate.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks._common import publish
from sncn.data.vision import ArrayLoader, load_cifar, normalize, random_crop_flip
from sncn.hparams import cifar_setting
from sncn.layers import crossnorm_step
from sncn.models import create_model

VARIANTS = ("basic", "sn", "cn", "sncn")


def make_step(method: str, x: torch.Tensor, y: torch.Tensor):
    """A closure doing one training step of WRN-40-2 under ``method``'s settings."""
    setting = cifar_setting("cifar10", "wrn", method)
    torch.manual_seed(0)
    model = create_model("wrn", num_classes=10, **setting["model"]).train()
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, nesterov=True)

    def step(xb: torch.Tensor = x, yb: torch.Tensor = y) -> None:
        with crossnorm_step(model, setting["cn_prob"], setting["active_num"]):
            loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, print the table and write it to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="batch size (paper: 128)")
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds per variant")
    parser.add_argument("--pipeline-steps", type=int, default=12, help="steps fed by the loader")
    parser.add_argument("--out", default="results/benchmarks/train_step.md")
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    x = normalize(torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8, generator=g))
    y = torch.randint(0, 10, (args.batch,), generator=g)
    steps = {m: make_step(m, x, y) for m in VARIANTS}
    times: dict[str, list[float]] = {m: [] for m in VARIANTS}
    for r in range(args.rounds + 2):
        for m, step in steps.items():
            t0 = time.perf_counter()
            step()
            if r >= 2:  # two warm-up rounds
                times[m].append(time.perf_counter() - t0)
    med = {m: statistics.median(t) for m, t in times.items()}

    images, labels = load_cifar("cifar10", "train")
    loader = ArrayLoader(images, labels, args.batch, shuffle=True, generator=g, drop_last=True,
                         transform=lambda b: normalize(random_crop_flip(b, g)))  # fmt: skip
    plain = steps["basic"]
    batches = iter(loader)
    plain(*next(batches))  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.pipeline_steps):
        plain(*next(batches))
    end_to_end = args.pipeline_steps * args.batch / (time.perf_counter() - t0)
    model_only = args.batch / med["basic"]

    lines = [
        f"# WRN-40-2 training step, CPU ({torch.get_num_threads()} threads, torch "
        f"{torch.__version__}), batch {args.batch}, median of {args.rounds} interleaved rounds",
        "",
        "| variant | step (ms) | ratio to plain | images/s |",
        "| --- | --- | --- | --- |",
    ]
    for m in VARIANTS:
        lines.append(f"| {m} | {med[m] * 1e3:.0f} | {med[m] / med['basic']:.2f}x | "
                     f"{args.batch / med[m]:.0f} |")  # fmt: skip
    ratio = end_to_end / model_only
    sncn = med["sncn"] / med["basic"]
    lines += [
        "",
        f"End to end (plain, CIFAR-10 arrays, crop+flip+normalise per batch): {end_to_end:.0f} "
        f"images/s = {100 * ratio:.0f}% of the model-only {model_only:.0f} images/s.",
        "",
        f"- Target SNCN <= 1.10x plain: {sncn:.2f}x -> {'met' if sncn <= 1.10 else 'NOT met'}.",
        f"- Target end to end >= 90% of model-only: {100 * ratio:.0f}% -> "
        f"{'met' if ratio >= 0.9 else 'NOT met'}.",
        "- Settings: the released WRN-40-2 CIFAR-10 scripts (SN at pre; CN at post, p 0.5, 2 "
        "units; SNCN at post, crop both, p 0.25, 2 units).",
    ]
    return publish(lines, args.out)


if __name__ == "__main__":
    main()
