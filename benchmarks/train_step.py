"""WRN-40-2 training step, plain vs SN vs CN vs SNCN, and the end-to-end input pipeline.

Run: ``python -m benchmarks.train_step`` (writes ``results/benchmarks/train_step.md``).

1. Model-only step (forward, backward, SGD update) on a fixed batch, for the four variants of
   Table 14 at the released scripts' WRN-40-2 CIFAR-10 settings (units at ``post``, CN switched on
   with ``cn_prob``/``active_num``), interleaved round-robin; medians and ratios to plain.
2. End to end, the plain step through :class:`sncn.train.Trainer` on CIFAR-10, fed two ways,
   interleaved round-robin, as images/s next to the model-only rate:

   - host loader: a ``torch.utils.data.DataLoader`` over the arrays with torchvision's
     per-image ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()`` and ``Normalize`` (the
     released ``cifar.py``'s pipeline), each batch sent to the device, the loss read every
     step (``update(batch)``);
   - device-resident: the run's own pipeline (:func:`sncn.experiments.cifar_c.training_batches`:
     the uint8 arrays on the device once, permutation, crop, flip and normalisation there on
     whole batches), the loss kept on the device (``update(batch, sync=False)``) and read once.

   Each pipeline is also timed alone (batches made, no training), which is where the two differ
   on a CPU, whose model step outweighs either.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import transforms

from benchmarks._common import publish, steady_allocator
from sncn.data.vision import CIFAR_MEAN, CIFAR_STD, ArrayDataset, load_cifar, normalize
from sncn.experiments.cifar_c import training_batches
from sncn.hparams import cifar_setting
from sncn.layers import crossnorm_step
from sncn.models import create_model
from sncn.train import Trainer, compile_model, sgd
from sncn.train.base import traced_autograd

VARIANTS = ("basic", "sn", "cn", "sncn")


def make_step(method: str, x: torch.Tensor, y: torch.Tensor, compiled: bool = False):
    """A closure doing one training step of WRN-40-2 under ``method``'s settings (through
    ``torch.compile``, the style layers in the graph, when ``compiled``:
    :func:`sncn.train.compile_model`)."""
    setting = cifar_setting("cifar10", "wrn", method)
    torch.manual_seed(0)
    model = create_model("wrn", num_classes=10, **setting["model"]).train()
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, nesterov=True)
    forward = compile_model(model) if compiled else model
    tracing = traced_autograd if compiled else contextlib.nullcontext

    def step(xb: torch.Tensor = x, yb: torch.Tensor = y) -> None:
        with crossnorm_step(model, setting["cn_prob"], setting["active_num"]), tracing():
            loss = F.cross_entropy(forward(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def host_loader(images, labels, batch: int, workers: int, generator: torch.Generator):
    """The released ``cifar.py``'s input pipeline: per-image torchvision transforms."""
    per_image = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ConvertImageDtype(torch.float32),
        transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
    ])  # fmt: skip
    dataset = ArrayDataset(images, labels, transform=per_image)
    return DataLoader(dataset, batch, shuffle=True, drop_last=True, num_workers=workers,
                      generator=generator)  # fmt: skip


def loader_rates(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, float]]:
    """Images/s of each input pipeline alone and feeding the plain step through a Trainer
    (median of interleaved rounds)."""
    images, labels = load_cifar("cifar10", "train")
    setting = cifar_setting("cifar10", "wrn", "basic")
    torch.manual_seed(0)
    model = create_model("wrn", num_classes=10, **setting["model"]).to(device)
    trainer = Trainer(model, sgd(model, 0.1), amp=device.type == "cuda",
                      channels_last=device.type == "cuda", device=device)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    loaders = {
        "host loader": lambda: iter(host_loader(images, labels, args.batch, args.workers, g)),
        "device-resident": lambda: iter(training_batches(images, labels, args.batch, device)(0, g)),
    }
    batches = {name: make() for name, make in loaders.items()}

    def batch(name: str):
        try:
            return next(batches[name])
        except StopIteration:
            batches[name] = loaders[name]()
            return next(batches[name])

    def host_steps(n: int) -> None:
        for _ in range(n):
            trainer.update(batch("host loader"))  # a float loss: waits for every step

    def device_steps(n: int) -> None:
        losses = [trainer.update(batch("device-resident"), sync=False)["loss"] for _ in range(n)]
        torch.stack(losses).tolist()  # read once

    def alone(name: str, n: int) -> None:
        xs = [batch(name)[0] for _ in range(n)]
        torch.stack([x.sum() for x in xs]).tolist()  # every batch made, then one read

    runs = {
        ("host loader", "train"): host_steps,
        ("device-resident", "train"): device_steps,
        ("host loader", "pipeline"): partial(alone, "host loader"),
        ("device-resident", "pipeline"): partial(alone, "device-resident"),
    }
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for run in runs.values():
        run(1)  # warm-up
    for r in range(args.loader_rounds):
        for key, run in list(runs.items())[:: -1 if r % 2 else 1]:  # ABBA: drift cancels
            n = args.pipeline_steps * (1 if key[1] == "train" else args.pipeline_repeat)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run(n)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[key].append(n * args.batch / (time.perf_counter() - t0))
            if args.verbose:
                print(f"round {r + 1} {key[0]} {key[1]}: {times[key][-1]:.1f} images/s")
    return {name: {what: statistics.median(times[name, what]) for what in ("train", "pipeline")}
            for name in loaders}  # fmt: skip


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, print the table and write it to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="batch size (paper: 128)")
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds per variant")
    parser.add_argument("--pipeline-steps", type=int, default=6,
                        help="steps per timed round of each input pipeline")  # fmt: skip
    parser.add_argument("--loader-rounds", type=int, default=2,
                        help="timed rounds per input pipeline (interleaved)")  # fmt: skip
    parser.add_argument("--pipeline-repeat", type=int, default=10,
                        help="batches made per step in the pipeline-alone rounds")  # fmt: skip
    parser.add_argument("--workers", type=int, default=0, help="host loader worker processes")
    parser.add_argument("--device", default="cpu", help="device of the end-to-end part")
    parser.add_argument("--verbose", action="store_true", help="print every timed round")
    parser.add_argument("--compile", action="store_true",
                        help="also time each variant through torch.compile (part 1)")  # fmt: skip
    parser.add_argument("--out", default="results/benchmarks/train_step.md")
    parser.add_argument("--default-allocator", action="store_true",
                        help="glibc's default malloc (page faults: noisier ratios)")  # fmt: skip
    args = parser.parse_args(argv)
    allocator = "default allocator" if args.default_allocator else steady_allocator()

    g = torch.Generator().manual_seed(0)
    x = normalize(torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8, generator=g))
    y = torch.randint(0, 10, (args.batch,), generator=g)
    steps = {m: make_step(m, x, y) for m in VARIANTS}
    if args.compile:  # compiled by the warm-up rounds (minutes on a CPU)
        steps |= {f"{m} (compiled)": make_step(m, x, y, compiled=True) for m in VARIANTS}
    times: dict[str, list[float]] = {m: [] for m in steps}
    for r in range(args.rounds + 2):
        for m, step in steps.items():
            t0 = time.perf_counter()
            step()
            if r >= 2:  # two warm-up rounds
                times[m].append(time.perf_counter() - t0)
            if args.verbose:
                print(f"round {r} {m}: {time.perf_counter() - t0:.2f} s", flush=True)
    med = {m: statistics.median(t) for m, t in times.items()}
    model_only = args.batch / med["basic"]
    device = torch.device(args.device)
    rates = loader_rates(args, device)

    lines = [
        f"# WRN-40-2 training step, CPU ({torch.get_num_threads()} threads, torch "
        f"{torch.__version__}), batch {args.batch}, median of {args.rounds} interleaved rounds; "
        f"{allocator}",
        "",
        "| variant | step (ms) | ratio to plain | images/s |",
        "| --- | --- | --- | --- |",
    ]
    for m in steps:
        plain = "basic (compiled)" if m.endswith("(compiled)") else "basic"
        lines.append(f"| {m} | {med[m] * 1e3:.0f} | {med[m] / med[plain]:.2f}x | "
                     f"{args.batch / med[m]:.0f} |")  # fmt: skip
    if args.compile:
        lines += ["", "Compiled rows: `torch.compile` (default mode, inductor) with the style "
                  "layers in the graph; their ratio is to the compiled plain step. Compiled, "
                  "every CrossNorm unit restyles at every step and its switch "
                  "selects."]  # fmt: skip
    host, resident = rates["host loader"], rates["device-resident"]
    share = resident["train"] / model_only
    sncn = med["sncn"] / med["basic"]
    lines += [
        "",
        f"## End to end on {device.type}: plain step through the Trainer, CIFAR-10, "
        f"{args.pipeline_steps} steps x {args.loader_rounds} interleaved rounds per pipeline "
        f"(median), host loader with {args.workers} workers",
        "",
        "| input pipeline | training images/s | ratio to host loader | share of model-only | "
        "pipeline alone, images/s | ratio to host loader |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, rate in rates.items():
        lines.append(f"| {name} | {rate['train']:.0f} | {rate['train'] / host['train']:.2f}x | "
                     f"{100 * rate['train'] / model_only:.0f}% | {rate['pipeline']:.0f} | "
                     f"{rate['pipeline'] / host['pipeline']:.2f}x |")  # fmt: skip
    lines += [
        f"| model only (fixed batch, no trainer) | {model_only:.0f} | "
        f"{model_only / host['train']:.2f}x | 100% | - | - |",
        "",
        f"- Target SNCN <= 1.10x plain: {sncn:.2f}x -> {'met' if sncn <= 1.10 else 'NOT met'}.",
        f"- Target end to end (device-resident) >= 90% of model-only: {100 * share:.0f}% -> "
        f"{'met' if share >= 0.9 else 'NOT met'}.",
        "- Settings: the released WRN-40-2 CIFAR-10 scripts (SN at pre; CN at post, p 0.5, 2 "
        "units; SNCN at post, crop both, p 0.25, 2 units).",
    ]
    return publish(lines, args.out)


if __name__ == "__main__":
    main()
