"""Trainers with a Jensen-Shannon consistency loss: SNCN + consistency, AugMix, SNCN + AugMix."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sncn.train.base import Logs, Trainer, jsd_consistency


class ConsistencyTrainer(Trainer):
    """SNCN + consistency: JSD over the clean view and two CrossNorm views.

    With probability ``cn_prob`` a step runs three forward passes of the same batch: clean (CN
    off), then twice with ``active_num`` randomly chosen CN units on (drawn anew for each view);
    the loss is the clean cross-entropy plus ``consist_wt`` times the JSD of the three softmax
    outputs. Otherwise the step is plain cross-entropy. This is the paper's released
    ``train_cn_consistency``.

    Args:
        consist_wt: weight of the consistency term (the paper's ``consist_wt``).
        **kwargs: see :class:`~sncn.train.base.Trainer`.
    """

    def __init__(self, *args, consist_wt: float = 10.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.consist_wt = consist_wt

    def loss(self, batch: Sequence[Tensor]) -> tuple[Tensor, Logs]:  # noqa: D102
        x, y = (self._to_device(t) for t in batch)
        logits_clean = self.forward_cn(x, False)
        ce = F.cross_entropy(logits_clean, y)
        if not self._cn_on():
            return ce, {"ce": ce.detach(), "consistency": 0.0}
        views = [logits_clean, self.forward_cn(x, True), self.forward_cn(x, True)]
        consistency = jsd_consistency(views)
        logs = {"ce": ce.detach(), "consistency": consistency.detach()}
        return ce + self.consist_wt * consistency, logs


class AugMixTrainer(Trainer):
    """AugMix with its JSD loss (weight 12), optionally with CrossNorm consistency on top.

    Batches are ``((clean, augmix_1, augmix_2), labels)`` (see
    :class:`sncn.data.augmix.AugMixViews`). The three views go through the model together with
    CN off; the loss is the clean cross-entropy plus ``jsd_wt`` times their JSD. For SNCN + AugMix
    (``cn_prob > 0``), with probability ``cn_prob`` the clean images also go through the model
    twice with CN on, adding ``consist_wt`` times the JSD of (clean, CN view 1, CN view 2), as the
    paper's released ``train_cn_augmix``.

    Args:
        jsd_wt: weight of the AugMix JSD term (AugMix: 12).
        consist_wt: weight of the CrossNorm consistency term.
        **kwargs: see :class:`~sncn.train.base.Trainer`.

    Reference:
        Hendrycks et al., "AugMix", ICLR 2020.
    """

    #: the dataset wrapper that makes this trainer's batches (named in errors)
    views_dataset = "sncn.data.augmix.AugMixViews"

    def __init__(self, *args, jsd_wt: float = 12.0, consist_wt: float = 10.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.jsd_wt = jsd_wt
        self.consist_wt = consist_wt

    def augmix_loss(
        self, batch: Sequence, cn: bool
    ) -> tuple[list[Tensor], list[Tensor], Tensor, Logs]:
        """The AugMix part of the loss: the three views through the model together (CN ``cn``).

        Returns:
            ``(views, logits, loss, logs)``: the views on the device, their logits, the clean
            cross-entropy plus ``jsd_wt`` times the JSD of the three outputs, and its parts.
        """
        views, y = batch
        if len(views) != 3:
            raise ValueError(
                f"{type(self).__name__} expects batches ((clean, aug1, aug2), labels), got "
                f"{len(views)} views; wrap the dataset in {self.views_dataset}."
            )
        views = [self._to_device(v) for v in views]
        logits = self.forward_cn(torch.cat(views), cn).split(views[0].shape[0])
        ce = F.cross_entropy(logits[0], self._to_device(y))
        jsd = jsd_consistency(logits)
        logs = {"ce": ce.detach(), "jsd": jsd.detach()}
        return views, logits, ce + self.jsd_wt * jsd, logs

    def loss(self, batch: Sequence) -> tuple[Tensor, Logs]:  # noqa: D102
        views, logits, loss, logs = self.augmix_loss(batch, cn=False)
        logs["consistency"] = 0.0
        if self._cn_on():
            cn_views = [logits[0], self.forward_cn(views[0], True), self.forward_cn(views[0], True)]
            consistency = jsd_consistency(cn_views)
            loss = loss + self.consist_wt * consistency
            logs["consistency"] = consistency.detach()
        return loss, logs


class ImageCrossNormAugMixTrainer(AugMixTrainer):
    """AugMix (JSD weight 12) with CrossNorm on the stacked views: the paper's ImageNet recipe.

    With probability ``cn_prob`` the three views go through the model together with
    ``active_num`` CrossNorm layers on (for ``image_cn`` models: CrossNorm on the input batch of
    all three views, pairing across them), otherwise with none; the loss is the clean
    cross-entropy plus ``jsd_wt`` times the JSD of the three outputs. There is no separate CN
    consistency term, unlike :class:`AugMixTrainer` (released ``train_cn_image_augmix``).
    """

    views_dataset = "sncn.data.augmix.ImageAugMixViews"

    def loss(self, batch: Sequence) -> tuple[Tensor, Logs]:  # noqa: D102
        _, _, loss, logs = self.augmix_loss(batch, cn=self._cn_on())
        return loss, logs
