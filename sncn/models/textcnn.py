"""Kim's (2014) CNN for sentence classification, with SelfNorm/CrossNorm on the embeddings.

The paper's sentiment experiment (§4.3, Table 4) trains this model on IMDb and tests it on
SST-2. SN and/or CN units sit between the embedding layer and the convolutions: the ``D``
embedding dimensions are the channels and the sequence is the spatial axis, so each unit sees a
``(N, D, L)`` feature map, and the padding mask (token id 0) keeps padded positions out of the
statistics (and unchanged).

Reference:
    Kim, "Convolutional Neural Networks for Sentence Classification", EMNLP 2014; the paper's
    §4.3 and the implementation it uses (bentrevett/pytorch-sentiment-analysis, notebook 4:
    kernel sizes 3, 4, 5 with 100 filters each, dropout 0.5 on the pooled features).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sncn.layers import CNSN
from sncn.models import register_model

__all__ = ["TextCNN", "textcnn"]

UNIT_TYPES = ("sn", "cn", "cnsn")


class TextCNN(nn.Module):
    """Embeddings -> [CN/SN unit] -> 1-d convolutions -> ReLU -> max over time -> dropout -> linear.

    Args:
        vocab_size: rows of the embedding table (``<pad>`` = ``padding_idx``).
        embed_dim: ``D``, the embedding size (the units' channels).
        num_classes: outputs.
        num_filters: filters per kernel size.
        kernel_sizes: n-gram widths of the convolutions.
        dropout: dropout probability on the pooled features.
        padding_idx: the padding token id; the model's mask is ``tokens != padding_idx``.
        embeddings: optional ``(vocab_size, D)`` initial embeddings (GloVe); ``D`` is taken from
            it. The row ``padding_idx`` is zeroed.
        freeze_embeddings: keep the embeddings fixed (the paper's reference fine-tunes them).
        cnsn_type: None, ``"sn"``, ``"cn"`` or ``"cnsn"``: the unit after the embeddings.
        order, instances, crop, beta, threshold, two_functions, pairing:
            :class:`~sncn.layers.CNSN` settings (with a mask CrossNorm supports
            ``crop="neither"`` only).

    Input: right-padded token ids ``(N, L)`` (int64). Output: logits ``(N, num_classes)``. The
    output of a sequence does not depend on how much padding follows it: the batch is trimmed to
    its longest sequence, the unit's statistics skip padding, and max pooling only covers the
    windows that lie inside the sequence (a sequence shorter than a kernel keeps its first window,
    which reads ``<pad>`` embeddings up to the kernel's width). A row of padding only is read as
    one ``<pad>`` token. The masked pooling is our choice: the reference implementation max-pools
    over every window of the padded batch, those over padding included, so its output for a
    sequence depends on the length of the longest sequence in its batch; it has no SN/CN units,
    so their padding mask is ours too.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 50,
        num_classes: int = 2,
        num_filters: int = 100,
        kernel_sizes: Sequence[int] = (3, 4, 5),
        dropout: float = 0.5,
        padding_idx: int = 0,
        embeddings: Tensor | None = None,
        freeze_embeddings: bool = False,
        cnsn_type: str | None = None,
        order: str = "cn-sn",
        instances: int = 2,
        crop: str = "neither",
        beta: float = 1.0,
        threshold: float = 0.1,
        two_functions: bool = False,
        pairing: str = "permutation",
    ) -> None:
        super().__init__()
        if cnsn_type is not None and cnsn_type not in UNIT_TYPES:
            raise ValueError(
                f"unknown cnsn_type {cnsn_type!r}; choose one of {UNIT_TYPES} or None."
            )
        if cnsn_type is not None and "cn" in cnsn_type and crop != "neither":
            raise ValueError(
                f"CrossNorm on padded sequences supports crop='neither' only, got crop={crop!r}."
            )
        if not kernel_sizes or min(kernel_sizes) < 1:
            raise ValueError(f"kernel_sizes must be positive widths, got {kernel_sizes}.")
        if embeddings is not None:
            embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
            if embeddings.dim() != 2 or embeddings.shape[0] != vocab_size:
                raise ValueError(
                    f"embeddings must be (vocab_size={vocab_size}, D), got "
                    f"{tuple(embeddings.shape)}."
                )
            embed_dim = embeddings.shape[1]
        self.padding_idx = padding_idx
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.cnsn_type = cnsn_type
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        if embeddings is not None:
            with torch.no_grad():
                self.embedding.weight.copy_(embeddings)
                self.embedding.weight[padding_idx].zero_()
        self.embedding.weight.requires_grad_(not freeze_embeddings)
        self.cnsn = (
            None
            if cnsn_type is None
            else CNSN(embed_dim, cn="cn" in cnsn_type, sn="sn" in cnsn_type, order=order,
                      instances=instances, crop=crop, beta=beta, threshold=threshold,
                      two_functions=two_functions, pairing=pairing)
        )  # fmt: skip
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, num_filters, k) for k in self.kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_filters * len(self.kernel_sizes), num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` of right-padded token ids ``(N, L)``."""
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"TextCNN expects integer token ids (N, L), got {tuple(tokens.shape)} "
                f"{tokens.dtype}."
            )
        lengths = (tokens != self.padding_idx).sum(1).clamp_min(1)  # (N,)
        width = max(int(lengths.max()), max(self.kernel_sizes))
        if tokens.shape[1] >= width:
            tokens = tokens[:, :width]  # drop columns that are padding in every row
        else:
            tokens = nn.functional.pad(tokens, (0, width - tokens.shape[1]), value=self.padding_idx)
        positions = torch.arange(width, device=tokens.device)
        mask = positions < lengths[:, None]  # (N, L), True at real tokens
        x = self.embedding(tokens).transpose(1, 2).contiguous()  # (N, L, D) -> (N, D, L)
        if self.cnsn is not None:
            x = self.cnsn(x, mask)  # statistics over real tokens only
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs, strict=True):
            h = conv(x)  # (N, F, L - k + 1); window t covers tokens t .. t + k - 1
            valid = positions[: h.shape[2]] < (lengths[:, None] - k + 1).clamp_min(1)  # (N, L')
            h = h.masked_fill(~valid[:, None, :], float("-inf"))
            pooled.append(h.amax(2).relu())  # max over time, then ReLU (they commute)
        return self.fc(self.dropout(torch.cat(pooled, 1)))  # (N, F * len(kernel_sizes)) -> (N, K)

    def extra_repr(self) -> str:
        return f"kernel_sizes={self.kernel_sizes}, cnsn_type={self.cnsn_type!r}"


@register_model
def textcnn(vocab_size: int, **kwargs) -> TextCNN:
    """Kim (2014) CNN; variants (``cnsn_type``, CN settings, widths) are kwargs of :class:`TextCNN`.

    Reference:
        The paper's §4.3 (sentiment classification, Table 4).
    """
    return TextCNN(vocab_size, **kwargs)
