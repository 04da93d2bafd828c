"""The trainer interface: ``update(batch) -> dict`` and ``predict(x)``; optimisers and schedules.

A trainer owns the model, the optimiser step, the learning-rate schedule (stepped per update),
mixed precision and the CrossNorm switch. Notebooks and :func:`sncn.train.fit` only loop.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sncn.layers import crossnorm_step

__all__ = [
    "Trainer",
    "compile_model",
    "traced_autograd",
    "cosine_schedule",
    "jsd_consistency",
    "sgd",
    "step_schedule",
    "unwrap",
]


def sgd(
    model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, nesterov=True
) -> torch.optim.SGD:
    """SGD with Nesterov momentum over all parameters (weight decay on all, as AugMix's code)."""
    return torch.optim.SGD(
        model.parameters(), lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, lr_min_ratio: float = 1e-5
) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine annealing per step from the base lr to ``lr_min_ratio`` times it.

    AugMix's and the paper's CIFAR scripts use ``lr_min = 1e-6`` with base lr 0.1: ratio 1e-5.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")

    def factor(step: int) -> float:
        progress = min(step, total_steps) / total_steps
        return lr_min_ratio + (1 - lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_schedule(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, milestones: Sequence[int] = (30, 60)
) -> torch.optim.lr_scheduler.LambdaLR:
    """Divide the lr by 10 at each milestone epoch (ImageNet: 30 and 60), stepped per update."""

    def factor(step: int) -> float:
        epoch = step // steps_per_epoch
        return 0.1 ** sum(epoch >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / DataParallel wrapper (or the model itself)."""
    return (
        model.module
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))
        else model
    )


def jsd_consistency(logits: Sequence[Tensor]) -> Tensor:
    """Jensen-Shannon divergence among the softmax outputs of several views of a batch.

    ``mean_i KL(p_i || M)`` with ``M`` the mixture of the ``p_i``, clamped to [1e-7, 1] as in
    AugMix. Reference: Hendrycks et al., AugMix (ICLR 2020), Eq. 2-3.
    """
    probs = [F.softmax(z.float(), dim=1) for z in logits]
    log_mixture = torch.clamp(sum(probs) / len(probs), 1e-7, 1).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / len(probs)


#: What a trainer logs per step: detached 0-d tensors on the device, or numbers.
Logs = dict[str, Tensor | float]


def _number(value: Tensor | float) -> float:
    """A logged value as a Python float (reads a tensor from its device)."""
    return float(value.detach()) if isinstance(value, Tensor) else value


def compile_model(model: nn.Module, options: bool | Mapping[str, Any] = True) -> nn.Module:
    """``torch.compile(model)`` with its style layers inside the graph.

    SelfNorm and CrossNorm read no value on the host and keep their shapes whatever their
    crop boxes (:mod:`sncn.layers`), and a style layer traced by ``torch.compile`` reads its
    switch as a tensor (:class:`sncn.layers.StyleLayer`): one graph serves every on/off pattern
    of the units, so switching them per step never recompiles. Call the compiled module inside
    :func:`traced_autograd` so that the fused layers' backward (``torch.autograd.grad`` on
    their small coefficient graph) is traced too rather than broken out of the graph.

    Args:
        model: the network (DDP wrappers are fine); parameters, buffers and state-dict keys are
            unchanged, and the model called directly behaves as before.
        options: True, or keyword arguments of ``torch.compile`` (``backend``, ``mode``, ...).

    Returns:
        The compiled module (calling it trains and evaluates ``model``'s parameters).
    """
    return torch.compile(model, **({} if options is True else dict(options)))


def traced_autograd() -> contextlib.AbstractContextManager:
    """Dynamo set to trace ``torch.autograd.grad`` inside autograd functions (the fused layers'
    backward), where the installed torch can (``trace_autograd_ops``); else nothing changes."""
    import torch._dynamo

    if not hasattr(torch._dynamo.config, "trace_autograd_ops"):
        return contextlib.nullcontext()
    return torch._dynamo.config.patch(trace_autograd_ops=True)


class Trainer:
    """Supervised training: cross-entropy, with CrossNorm switched on per step (§3.2).

    Plain, SN, CN and SNCN training are all this trainer: what differs is the model (which units
    it has) and ``cn_prob`` (0 turns the switch off).

    With batches already on the device, :meth:`update` with ``sync=False`` makes no host-device
    synchronisation of its own: the logged values stay on the device as tensors
    (:func:`sncn.train.fit` reads them once per epoch), bfloat16 autocast needs no loss scaling
    (float16's scaler reads the device every step), and whether CrossNorm is on (and which
    units) is drawn from ``generator``, a CPU generator, which waits for nothing on the device.
    What a CrossNorm layer draws when on (partners, boxes) is drawn in :mod:`sncn.layers`, on
    the host, and copied to the device there.

    Args:
        model: the network (may be wrapped in DDP).
        optimizer: its optimiser.
        scheduler: stepped after every update (None: constant lr).
        cn_prob: probability that CrossNorm is on for a step.
        active_num: CrossNorm units switched on when it is.
        amp: mixed precision: autocast to ``amp_dtype`` in training and :meth:`predict`.
        amp_dtype: ``torch.bfloat16`` (default; no loss scaling needed) or ``torch.float16``
            (with a gradient scaler, whose overflow check reads the device every step).
        channels_last: feed the model channels_last batches (convert the model too, once).
        device: where batches go (default: the model's parameters' device).
        generator: CPU generator for the switch (default: torch's global one).
        compile: train through ``torch.compile(model)`` (True, or a dict of ``torch.compile``
            keyword arguments such as ``{"backend": "aot_eager"}`` or ``{"mode":
            "max-autotune-no-cudagraphs"}``); forward and backward are compiled, the loss and
            the optimiser step run eagerly, :meth:`predict` runs the model eagerly. The style
            layers are in the graph and read their switch as a tensor, so switching them on
            and off never recompiles (:func:`compile_model`); compiled, every CrossNorm unit
            restyles at every step and the switch selects, which costs more per step than the
            eager layers and draws other random numbers. State dicts are unchanged.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        *,
        cn_prob: float = 0.0,
        active_num: int = 1,
        amp: bool = False,
        amp_dtype: torch.dtype = torch.bfloat16,
        channels_last: bool = False,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        compile: bool | Mapping[str, Any] = False,
    ) -> None:
        if amp_dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"amp_dtype must be torch.bfloat16 or torch.float16, got {amp_dtype}")
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.cn_prob = cn_prob
        self.active_num = active_num
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.amp = amp
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        self.generator = generator
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=amp and amp_dtype == torch.float16
        )
        self.step = 0
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.compiled = None if compile is False else compile_model(model, compile)

    # -- helpers ---------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _cn_on(self) -> bool:
        """Draw whether CrossNorm is on for this step (probability ``cn_prob``).

        A draw from the CPU ``generator``: no synchronisation with the device.
        """
        return self.cn_prob > 0 and float(torch.rand((), generator=self.generator)) < self.cn_prob

    def forward_cn(self, x: Tensor, on: bool) -> Tensor:
        """Model output with ``active_num`` CrossNorm units on (``on``) or none (the compiled
        model when ``compile``)."""
        switch = crossnorm_step(self.model, 1.0 if on else 0.0, self.active_num, self.generator)
        if self.compiled is None:
            with switch:
                return self.model(x)
        with switch, traced_autograd():
            return self.compiled(x)

    # -- the interface ---------------------------------------------------------------------------

    def loss(self, batch: Sequence[Tensor]) -> tuple[Tensor, Logs]:
        """The training loss of one batch and extra values to log (detached tensors or
        numbers)."""
        x, y = (self._to_device(t) for t in batch)
        return F.cross_entropy(self.forward_cn(x, self._cn_on()), y), {}

    def update(self, batch: Sequence[Tensor], *, sync: bool = True) -> dict[str, Any]:
        """One optimiser step on ``batch``; returns the loss, the lr and other logged values.

        Args:
            batch: the training batch.
            sync: return the values as Python floats (reading them from the device waits for the
                step to finish). False returns the device values as detached 0-d tensors
                (numbers known on the host, like the lr, stay numbers), so the host can queue the
                next step at once; :func:`sncn.train.fit` reads them once per epoch.

        Returns:
            ``{"loss", "lr", ...}``.
        """
        self.model.train()
        with self._autocast():
            loss, logs = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        logs = {"loss": loss.detach(), "lr": lr, **logs}
        return {k: _number(v) for k, v in logs.items()} if sync else logs

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Logits (float32) of the model in eval mode."""
        self.model.eval()
        with self._autocast():
            return self.model(self._to_device(x)).float()

    def state_dict(self) -> dict:
        """Everything needed to resume: model, optimiser, schedule, scaler, step, generator."""
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "generator": None if self.generator is None else self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`."""
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty: saved without loss scaling (bfloat16 or fp32)
            self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        if self.generator is not None and state["generator"] is not None:
            self.generator.set_state(state["generator"])
