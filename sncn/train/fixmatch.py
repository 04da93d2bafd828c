"""FixMatch, with CrossNorm on all of a batch or only on its unlabelled part (Figure 4).

A step sees ``B`` labelled images (weakly augmented) and ``mu B`` unlabelled images in a weak and
a strong view, all in one forward pass (BatchNorm statistics over the whole batch, as in the
PyTorch implementation the paper used). The loss is

    L = CE(p(y | x_l), y) + lambda_u * mean_u[ 1(max q_u >= tau) CE(p(y | A(u)), argmax q_u) ]

with ``q_u = softmax(logits(alpha(u)) / T)`` the prediction on the weak view, detached (the
pseudo-label), ``A`` the strong augmentation and ``tau`` the confidence threshold (Sohn et al.,
Eq. 2-4). An exponential moving average of the weights is the model that is evaluated.

CrossNorm: with probability ``cn_prob`` a step switches ``active_num`` CN units on. The batch is
split into groups that CN pairs within (:func:`sncn.layers.crossnorm_groups`): ``cn_data="all"``
restyles every image, labelled ones with labelled partners and unlabelled ones (either view) with
unlabelled partners; ``"unlabelled"`` leaves the labelled images alone; ``"mixed"`` pairs across
the whole batch (one group, what a CN'd model does to a concatenated batch by default).

Reference:
    Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
    Confidence", NeurIPS 2020; kekmodel/FixMatch-pytorch (the paper's footnote 2); the paper's
    §4.1 "Semi-supervised training on CIFAR" and Figure 4.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sncn.layers import crossnorm_groups
from sncn.train.base import Logs, Trainer, unwrap

__all__ = [
    "CN_DATA",
    "FixMatchTrainer",
    "ModelEMA",
    "cn_groups",
    "fixmatch_schedule",
    "fixmatch_sgd",
    "pseudo_labels",
]

CN_DATA = ("all", "unlabelled", "mixed")


def pseudo_labels(
    logits_weak: Tensor, threshold: float = 0.95, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Hard pseudo-labels and the confidence mask from the weak view's logits.

    Args:
        logits_weak: ``(N, K)`` logits of the weakly augmented unlabelled images (detached here).
        threshold: tau, the confidence a prediction needs to be trained on (0.95).
        temperature: T of the softmax (FixMatch: 1).

    Returns:
        ``(targets, mask)``: int64 ``(N,)`` argmax classes and float ``(N,)`` 1 where
        ``max softmax >= threshold``, else 0.

    Reference:
        Sohn et al., FixMatch, Eq. 3 (``1(max(q_b) >= tau)`` and ``q_hat_b = argmax(q_b)``).
    """
    if logits_weak.dim() != 2:
        raise ValueError(f"logits_weak must be (N, K), got shape {tuple(logits_weak.shape)}.")
    probs = torch.softmax(logits_weak.detach().float() / temperature, dim=1)  # (N, K)
    confidence, targets = probs.max(dim=1)  # (N,), (N,)
    return targets, (confidence >= threshold).float()


def fixmatch_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup: int = 0, cycles: float = 7 / 16
) -> torch.optim.lr_scheduler.LambdaLR:
    """FixMatch's learning rate: ``lr * cos(7 pi k / (16 K))``, after an optional linear warm-up.

    Stepped per update; ``k`` counts steps after the warm-up and ``K`` is ``total_steps`` minus
    it, so the rate ends at ``cos(7 pi / 16) ~ 0.2`` of the base rate.
    """
    if total_steps < 1 or not 0 <= warmup < total_steps:
        raise ValueError(
            f"need total_steps >= 1 and 0 <= warmup < total_steps, got {total_steps}, {warmup}."
        )

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        progress = min(step - warmup, total_steps - warmup) / (total_steps - warmup)
        return max(0.0, math.cos(math.pi * cycles * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fixmatch_sgd(
    model: nn.Module,
    lr: float = 0.03,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
) -> torch.optim.SGD:
    """SGD with Nesterov momentum; weight decay on weights only, not on biases and BatchNorm.

    The parameter split of the implementation the paper used (names containing ``bias`` or
    ``bn`` get no decay).
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if "bias" in name or "bn" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]  # fmt: skip
    return torch.optim.SGD(groups, lr, momentum=momentum, nesterov=nesterov)


class ModelEMA:
    """Exponential moving average of a model's weights: the model FixMatch evaluates.

    After each step ``ema = decay * ema + (1 - decay) * weights`` for the parameters; buffers
    (BatchNorm running statistics) are copied, as in the implementation the paper used
    (FixMatch-pytorch's ``models/ema.py``).

    Not ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``, which differs
    from that reference (tested): its first update copies the weights instead of averaging them
    with the initial ones (after k steps the reference still holds ``decay ** k`` of the
    initial weights: 5% after the quick profile's 300 steps at 0.99), and with
    ``use_buffers=True`` it averages the buffers instead of copying them.

    Args:
        model: the trained model (copied once; DDP wrappers are unwrapped).
        decay: the EMA decay (FixMatch: 0.999).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}.")
        self.decay = decay
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        source = unwrap(model)
        ema_params = list(self.module.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in source.parameters()], 1 - self.decay)
        for ema_b, b in zip(self.module.buffers(), source.buffers(), strict=True):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        """The averaged model's state dict."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.module.load_state_dict(state)


def cn_groups(n_labelled: int, n_unlabelled: int, cn_data: str) -> Tensor:
    """Group ids of ``cat(labelled, unlabelled)`` for :func:`sncn.layers.crossnorm_groups`.

    ``"all"``: labelled 0, unlabelled 1 (pairs never cross the parts); ``"unlabelled"``:
    labelled -1 (left alone), unlabelled 1; ``"mixed"``: all 0.
    """
    if cn_data not in CN_DATA:
        raise ValueError(f"cn_data must be one of {CN_DATA}, got {cn_data!r}.")
    first = {"all": 0, "unlabelled": -1, "mixed": 0}[cn_data]
    second = 0 if cn_data == "mixed" else 1
    return torch.cat([torch.full((n_labelled,), first), torch.full((n_unlabelled,), second)])


class FixMatchTrainer(Trainer):
    """FixMatch: supervised loss on labelled images, confident pseudo-labels on unlabelled ones.

    Batches are ``(x, y, u_weak, u_strong[, u_labels])`` (:class:`sncn.data.semisup.
    SemiSupervisedBatches`): ``u_labels``, when present, only feed the logged pseudo-label
    accuracy. :meth:`predict` uses the EMA of the weights.

    Args:
        model: the network.
        optimizer, scheduler: see :class:`~sncn.train.base.Trainer` (FixMatch:
            :func:`fixmatch_sgd`, :func:`fixmatch_schedule`).
        threshold: tau, the pseudo-label confidence threshold (0.95).
        lambda_u: weight of the unlabelled loss (1).
        temperature: T of the pseudo-label softmax (1).
        ema_decay: decay of the weights' EMA (0.999).
        cn_data: which images CrossNorm restyles when on: ``"all"``, ``"unlabelled"`` or
            ``"mixed"`` (module docstring).
        **kwargs: ``cn_prob``, ``active_num``, ``amp``, ... of :class:`~sncn.train.base.Trainer`.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        *,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        temperature: float = 1.0,
        ema_decay: float = 0.999,
        cn_data: str = "all",
        **kwargs,
    ) -> None:
        if cn_data not in CN_DATA:
            raise ValueError(f"cn_data must be one of {CN_DATA}, got {cn_data!r}.")
        if not 0 <= threshold <= 1 or temperature <= 0:
            raise ValueError(f"need 0 <= threshold <= 1 and temperature > 0, got {threshold}, "
                             f"{temperature}.")  # fmt: skip
        super().__init__(model, optimizer, scheduler, **kwargs)
        self.threshold = threshold
        self.lambda_u = lambda_u
        self.temperature = temperature
        self.cn_data = cn_data
        self.ema = ModelEMA(model, ema_decay)

    def loss(self, batch: Sequence[Tensor]) -> tuple[Tensor, Logs]:  # noqa: D102
        if len(batch) not in (4, 5):
            raise ValueError(
                f"FixMatchTrainer expects batches (x, y, u_weak, u_strong[, u_labels]), got "
                f"{len(batch)} items; use sncn.data.semisup.SemiSupervisedBatches."
            )
        x, y, u_weak, u_strong = (self._to_device(t) for t in batch[:4])
        if u_weak.shape != u_strong.shape:
            raise ValueError(f"the two unlabelled views differ in shape: {tuple(u_weak.shape)} "
                             f"and {tuple(u_strong.shape)}.")  # fmt: skip
        b, ub = len(x), len(u_weak)
        on = self._cn_on()
        with crossnorm_groups(self.model, cn_groups(b, 2 * ub, self.cn_data) if on else None):
            logits = self.forward_cn(torch.cat([x, u_weak, u_strong]), on)
        logits_x, logits_weak, logits_strong = logits.float().split([b, ub, ub])
        loss_x = F.cross_entropy(logits_x, y)
        targets, mask = pseudo_labels(logits_weak, self.threshold, self.temperature)
        loss_u = (F.cross_entropy(logits_strong, targets, reduction="none") * mask).mean()
        logs = {"loss_x": loss_x.detach(), "loss_u": loss_u.detach(),
                "mask": mask.mean(), "cn": float(on)}  # fmt: skip
        if len(batch) == 5:  # monitoring only: how often the used pseudo-labels are right
            right = (targets == self._to_device(batch[4])).float()
            logs["pseudo_acc"] = (right * mask).sum() / mask.sum().clamp_min(1)
        return loss_x + self.lambda_u * loss_u, logs

    def update(self, batch: Sequence[Tensor], *, sync: bool = True) -> dict[str, Any]:
        """One optimiser step, then the EMA update; returns the logged values (``sync``: see
        :meth:`sncn.train.base.Trainer.update`)."""
        logs = super().update(batch, sync=sync)
        self.ema.update(self.model)
        return logs

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Logits (float32) of the EMA model in eval mode."""
        self.ema.module.eval()
        with self._autocast():
            return self.ema.module(self._to_device(x)).float()

    def state_dict(self) -> dict:  # noqa: D102
        return {**super().state_dict(), "ema": self.ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:  # noqa: D102
        super().load_state_dict(state)
        self.ema.load_state_dict(state["ema"])
