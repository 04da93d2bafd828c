"""Peers of CrossNorm that also perturb feature statistics: MixStyle, pAdaIN and DSU.

Each is a :class:`sncn.layers.StyleLayer`: the identity in ``eval()`` and unless switched on from
outside (:func:`sncn.layers.crossnorm_step`), so it drops into the same slots as CrossNorm and is
trained with the same switch. Within a step where it is on, each applies its own paper's
probability ``p`` (drawn once per forward, from torch's global generator), so switching every
unit on at every step (``crossnorm_step(model, 1.0, active_num=<number of units>)``) reproduces
the peer's own training recipe.

Statistics are the instance mean and ``sqrt(var + eps)`` of :func:`sncn.layers.instance_stats`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sncn.layers import StyleLayer, _check_features, _check_mask, instance_stats, random_partner

__all__ = ["DSU", "MixStyle", "PermutedAdaIN"]


def _standardise(x: Tensor, eps: float, detach: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(x - mu) / sigma`` and the ``(N, C, 1, ...)`` statistics (detached if asked)."""
    mean, std = instance_stats(x, eps=eps, keepdim=True)
    if detach:
        mean, std = mean.detach(), std.detach()
    mean, std = mean.to(x.dtype), std.to(x.dtype)
    return (x - mean) / std, mean, std


class _Peer(StyleLayer):
    """Shared checks: channels, probability ``p``; masks are not supported by the peers."""

    def __init__(self, num_channels: int | None, p: float, eps: float) -> None:
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}.")
        self.num_channels, self.p, self.eps = num_channels, p, eps

    def _fires(self) -> bool:
        return self.p >= 1 or float(torch.rand(())) < self.p

    def transform(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_features(x, self.num_channels, type(self).__name__)
        if mask is not None:
            _check_mask(mask, x)
            raise ValueError(f"{type(self).__name__} does not support padding masks.")
        if x.shape[0] < 2 or not self._fires():
            return x
        return self.perturb(x)

    def perturb(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class MixStyle(_Peer):
    """MixStyle: mix each sample's statistics with those of a random other sample.

    ``gamma = lam * sigma + (1 - lam) * sigma[perm]``, ``beta = lam * mu + (1 - lam) * mu[perm]``,
    ``out = gamma * (x - mu) / sigma + beta``, with ``lam ~ Beta(alpha, alpha)`` per sample and the
    statistics detached from the graph (no gradient through them). ``lam = 1`` is the identity.

    Args:
        num_channels: C, checked when given.
        p: probability of mixing in a forward pass while on (paper: 0.5).
        alpha: Beta parameter (paper: 0.1).
        eps: variance epsilon (paper: 1e-6).

    Reference:
        Zhou et al., "Domain Generalization with MixStyle", ICLR 2021 (random shuffle variant).
    """

    def __init__(
        self, num_channels: int | None = None, p: float = 0.5, alpha: float = 0.1, eps=1e-6
    ) -> None:
        super().__init__(num_channels, p, eps)
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}.")
        self.alpha = alpha

    def mix(self, x: Tensor, lam: Tensor, perm: Tensor) -> Tensor:
        """MixStyle with given mixing weights ``lam`` ``(N,)`` and partner indices ``perm``."""
        normed, mean, std = _standardise(x, self.eps, detach=True)
        lam = lam.to(x).view(-1, *([1] * (x.dim() - 1)))  # (N, 1, 1[, 1])
        mean_mix = lam * mean + (1 - lam) * mean[perm]
        std_mix = lam * std + (1 - lam) * std[perm]
        return normed * std_mix + mean_mix

    def perturb(self, x: Tensor) -> Tensor:
        """Draw ``lam`` and a random permutation, then :meth:`mix`."""
        n = x.shape[0]
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((n,))
        return self.mix(x, lam, torch.randperm(n).to(x.device))

    def extra_repr(self) -> str:
        return f"{self.num_channels}, p={self.p}, alpha={self.alpha}"


class PermutedAdaIN(_Peer):
    """pAdaIN: with small probability, AdaIN of each sample to a randomly permuted other sample.

    ``out = sigma[perm] * (x - mu) / sigma + mu[perm]`` (the statistics are not detached). The
    paper applies it independently at many layers with ``p = 0.01``.

    Args:
        num_channels: C, checked when given.
        p: probability of swapping in a forward pass while on (paper: 0.01).
        eps: variance epsilon.

    Reference:
        Nuriel, Benaim and Wolf, "Permuted AdaIN: Reducing the Bias Towards Global Statistics in
        Image Classification", CVPR 2021.
    """

    def __init__(self, num_channels: int | None = None, p: float = 0.01, eps: float = 1e-5):
        super().__init__(num_channels, p, eps)

    def swap(self, x: Tensor, perm: Tensor) -> Tensor:
        """AdaIN of sample ``i`` to the statistics of sample ``perm[i]``."""
        normed, mean, std = _standardise(x, self.eps, detach=False)
        return normed * std[perm] + mean[perm]

    def perturb(self, x: Tensor) -> Tensor:
        """Swap with a random derangement of the batch."""
        return self.swap(x, random_partner(x.shape[0]).to(x.device))

    def extra_repr(self) -> str:
        return f"{self.num_channels}, p={self.p}"


class DSU(_Peer):
    """DSU: feature statistics perturbed by Gaussian noise scaled by their batch variation.

    ``Sigma_mu = sqrt(Var_batch(mu) + eps)``, ``Sigma_sigma = sqrt(Var_batch(sigma) + eps)`` per
    channel; ``beta = mu + N(0, 1) * Sigma_mu``, ``gamma = sigma + N(0, 1) * Sigma_sigma``;
    ``out = gamma * (x - mu) / sigma + beta``.

    Args:
        num_channels: C, checked when given.
        p: probability of perturbing in a forward pass while on (paper: 0.5).
        eps: epsilon of the variances (paper: 1e-6).

    Reference:
        Li et al., "Uncertainty Modeling for Out-of-Distribution Generalization", ICLR 2022.
    """

    def __init__(self, num_channels: int | None = None, p: float = 0.5, eps: float = 1e-6):
        super().__init__(num_channels, p, eps)

    def scales(self, mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
        """Noise scales ``(Sigma_mu, Sigma_sigma)``: batch standard deviations, ``(1, C, ...)``."""
        sigma_mu = (mean.var(dim=0, keepdim=True, unbiased=False) + self.eps).sqrt()
        sigma_sigma = (std.var(dim=0, keepdim=True, unbiased=False) + self.eps).sqrt()
        return sigma_mu, sigma_sigma

    def perturb(self, x: Tensor, noise: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Perturb with standard normal ``noise`` ``(N, C, 1, ...)`` pairs (drawn if None)."""
        normed, mean, std = _standardise(x, self.eps, detach=False)
        sigma_mu, sigma_sigma = self.scales(mean, std)
        if noise is None:
            noise = (torch.randn_like(mean), torch.randn_like(std))
        beta = mean + noise[0] * sigma_mu
        gamma = std + noise[1] * sigma_sigma
        return normed * gamma + beta

    def extra_repr(self) -> str:
        return f"{self.num_channels}, p={self.p}"
