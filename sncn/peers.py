"""Peers of CrossNorm that also perturb feature statistics: MixStyle, pAdaIN and DSU.

Each is a :class:`sncn.layers.StyleLayer`, the identity in ``eval()``. Two ways to run one:

* ``switched=True`` (default; CrossNorm's slots): the identity unless switched on from outside
  (:func:`sncn.layers.crossnorm_step`), so it is trained with the same switch as CrossNorm.
* ``switched=False`` (its own paper's sites, :func:`sncn.models.cifar.place_peers`): on at every
  training forward, as in its paper's code; the outside switch does not affect it.

While on, each applies its own paper's probability ``p``, drawn once per forward from torch's
global generator (seed it once per run: :func:`sncn.utils.seed_everything`). Switching every unit
on at every step (``crossnorm_step(model, 1.0, active_num=<number of units>)``) therefore makes a
switched peer behave as an unswitched one.

Statistics are the instance mean and ``sqrt(var + eps)`` of :func:`sncn.layers.instance_stats`
(``var`` Bessel-corrected, as ``torch.var`` in the three papers' code).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sncn.layers import (
    PAIRINGS,
    StyleLayer,
    _check_features,
    _check_mask,
    _traced,
    instance_stats,
    random_partner,
)

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

    def __init__(self, num_channels: int | None, p: float, eps: float, switched: bool) -> None:
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}.")
        self.num_channels, self.p, self.eps, self.switched = num_channels, p, eps, switched

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``transform(x, mask)`` while training and on (switched on, or ``switched=False``).

        The input is checked in every case (:meth:`check_input`), as for CrossNorm.
        """
        if self.switched:  # StyleLayer's switch (a tensor when compiled)
            return super().forward(x, mask)
        self.check_input(x, mask)
        return self.transform(x, mask) if self.training else x

    def check_input(self, x: Tensor, mask: Tensor | None = None) -> None:
        """Raise a ValueError unless ``x`` is a floating-point ``(N, C, ...)`` feature tensor with
        the layer's C (no data read)."""
        _check_features(x, self.num_channels, type(self).__name__)

    def _fires(self) -> bool:
        return self.p >= 1 or float(torch.rand(())) < self.p

    def transform(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_features(x, self.num_channels, type(self).__name__)
        if mask is not None:
            _check_mask(mask, x)
            raise ValueError(f"{type(self).__name__} does not support padding masks.")
        if x.shape[0] < 2:
            return x
        if _traced():  # the draw stays a tensor: one graph whether it fires or not
            fires = torch.rand((), device=x.device) < self.p
            return torch.where(fires, self.perturb(x), x)
        return self.perturb(x) if self._fires() else x

    def perturb(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{self.num_channels}, p={self.p}, switched={self.switched}"


class MixStyle(_Peer):
    """MixStyle: mix each sample's statistics with those of a random other sample.

    ``gamma = lam * sigma + (1 - lam) * sigma[perm]``, ``beta = lam * mu + (1 - lam) * mu[perm]``,
    ``out = gamma * (x - mu) / sigma + beta``, with ``sigma = sqrt(var + eps)``,
    ``lam ~ Beta(alpha, alpha)`` per sample, ``perm`` a uniform random permutation of the batch
    (a sample may keep its own statistics) and the statistics detached from the graph (no
    gradient through them). ``lam = 1`` is the identity.

    Args:
        num_channels: C, checked when given.
        p: probability of mixing in a forward pass while on (paper: 0.5).
        alpha: Beta parameter (paper: 0.1).
        eps: variance epsilon (paper: 1e-6).
        switched: on only while switched on from outside (True) or at every training forward.

    Reference:
        Zhou et al., "Domain Generalization with MixStyle", ICLR 2021 (random shuffle variant;
        KaiyangZhou/mixstyle-release ``reid/models/mixstyle.py``: ``MixStyle``).
    """

    def __init__(
        self,
        num_channels: int | None = None,
        p: float = 0.5,
        alpha: float = 0.1,
        eps: float = 1e-6,
        switched: bool = True,
    ) -> None:
        super().__init__(num_channels, p, eps, switched)
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
        return f"{super().extra_repr()}, alpha={self.alpha}"


class PermutedAdaIN(_Peer):
    """pAdaIN: with small probability, AdaIN of each sample to a randomly permuted other sample.

    With ``perm`` the partner of each sample and ``sg`` stop-gradient (detach)::

        mu_c, sigma_c = mu(x), sqrt(var(x) + eps) + content_eps       # content, differentiable
        mu_s, sigma_s = mu(sg(x))[perm], sqrt(var(sg(x)) + eps)[perm]   # partner, detached
        out = sigma_s * (x - mu_c) / sigma_c + mu_s

    ``content_eps`` defaults to ``eps``: eps inside the square root for both and once more on
    the content's standard deviation, as in the paper's layer. A map of one position is left
    unchanged. The paper applies it independently after every convolution with ``p = 0.01``
    (:func:`sncn.models.cifar.place_peers`).

    Args:
        num_channels: C, checked when given.
        p: probability of swapping in a forward pass while on (paper: 0.01).
        eps: variance epsilon of both statistics (paper's layer: 1e-5).
        content_eps: added to the content's standard deviation (None: ``eps``). The paper's
            CIFAR-C code (``corruption/architectures/permuteAdaIN.py``) uses ``eps=0``,
            ``content_eps=1e-4``.
        detach: no gradient through the partner's statistics (paper: True; False is this
            module's earlier form, with ``content_eps=0`` and ``pairing="derangement"``).
        pairing: ``"permutation"`` (paper: ``torch.randperm``, a sample may be its own partner)
            or ``"derangement"`` (every sample takes another's statistics:
            :func:`sncn.layers.random_partner`).
        switched: on only while switched on from outside (True) or at every training forward.

    Reference:
        Nuriel, Benaim and Wolf, "Permuted AdaIN: Reducing the Bias Towards Global Statistics in
        Image Classification", CVPR 2021 (onuriel/PermutedAdaIN ``permutedAdaIN.py``:
        ``PermuteAdaptiveInstanceNorm2d``, ``adaptive_instance_normalization``).
    """

    def __init__(
        self,
        num_channels: int | None = None,
        p: float = 0.01,
        eps: float = 1e-5,
        content_eps: float | None = None,
        detach: bool = True,
        pairing: str = "permutation",
        switched: bool = True,
    ) -> None:
        super().__init__(num_channels, p, eps, switched)
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}.")
        self.content_eps = eps if content_eps is None else content_eps
        self.detach = detach
        self.pairing = pairing

    def swap(self, x: Tensor, perm: Tensor) -> Tensor:
        """AdaIN of sample ``i`` to the statistics of sample ``perm[i]`` (formula above)."""
        if x[0, 0].numel() == 1:  # one position: no statistics to exchange
            return x
        mean, std = instance_stats(x, eps=self.eps, keepdim=True)  # (N, C, 1[, 1])
        if self.detach:
            style_mean, style_std = instance_stats(x.detach(), eps=self.eps, keepdim=True)
        else:
            style_mean, style_std = mean, std
        std = std + self.content_eps
        mean, std = mean.to(x.dtype), std.to(x.dtype)
        style_mean, style_std = style_mean[perm].to(x.dtype), style_std[perm].to(x.dtype)
        return (x - mean) / std * style_std + style_mean

    def perturb(self, x: Tensor) -> Tensor:
        """Swap with a random permutation (or derangement) of the batch."""
        n = x.shape[0]
        perm = torch.randperm(n) if self.pairing == "permutation" else random_partner(n)
        return self.swap(x, perm.to(x.device))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, eps={self.eps}, content_eps={self.content_eps}, "
            f"detach={self.detach}, pairing={self.pairing!r}"
        )


class DSU(_Peer):
    """DSU: feature statistics perturbed by Gaussian noise scaled by their batch variation.

    ``Sigma_mu = sqrt(Var_batch(mu) + eps)``, ``Sigma_sigma = sqrt(Var_batch(sigma) + eps)`` per
    channel, with ``Var_batch`` the Bessel-corrected variance over the batch;
    ``beta = mu + N(0, 1) * Sigma_mu``, ``gamma = sigma + N(0, 1) * Sigma_sigma`` (one draw per
    sample and channel); ``out = gamma * (x - mu) / sigma + beta``. Nothing is detached.

    Args:
        num_channels: C, checked when given.
        p: probability of perturbing in a forward pass while on (paper: 0.5).
        eps: epsilon of the variances (paper: 1e-6).
        unbiased: Bessel-corrected batch variance (paper's code: ``torch.var``, True); False
            divides by N (this module's earlier form).
        switched: on only while switched on from outside (True) or at every training forward.

    Reference:
        Li et al., "Uncertainty Modeling for Out-of-Distribution Generalization", ICLR 2022
        (lixiaotong97/DSU ``dsu.py``: ``DistributionUncertainty``).
    """

    def __init__(
        self,
        num_channels: int | None = None,
        p: float = 0.5,
        eps: float = 1e-6,
        unbiased: bool = True,
        switched: bool = True,
    ) -> None:
        super().__init__(num_channels, p, eps, switched)
        self.unbiased = unbiased

    def scales(self, mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
        """Noise scales ``(Sigma_mu, Sigma_sigma)``: batch standard deviations, ``(1, C, ...)``."""
        sigma_mu = (mean.var(dim=0, keepdim=True, unbiased=self.unbiased) + self.eps).sqrt()
        sigma_sigma = (std.var(dim=0, keepdim=True, unbiased=self.unbiased) + self.eps).sqrt()
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
        return f"{super().extra_repr()}, unbiased={self.unbiased}"
