"""TextCNN with SN/CN on padded sequences, and the IMDb -> SST-2 recipe (Table 4)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from sncn import results
from sncn.data.text import Vocab
from sncn.experiments import sentiment
from sncn.layers import CNSN, activate_crossnorm, deactivate_crossnorm
from sncn.models import create_model, list_models
from sncn.train import Trainer, fit

UNITS = [None, "sn", "cn", "cnsn"]


def _model(cnsn_type=None, vocab=40, **kwargs):
    torch.manual_seed(0)
    kwargs = {"embed_dim": 6, "num_filters": 5, **kwargs}
    return create_model("textcnn", vocab_size=vocab, cnsn_type=cnsn_type, **kwargs)


def _batch(lengths, vocab=40, width=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), width or max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        tokens[i, :n] = torch.randint(2, vocab, (n,), generator=gen)
    return tokens


# ----------------------------------------------------------------------------------------------
# the model


def test_registered_with_the_units_between_embeddings_and_convolutions():
    assert "textcnn" in list_models()
    model = _model("cnsn", embed_dim=8)
    assert isinstance(model.cnsn, CNSN) and model.cnsn.selfnorm.num_channels == 8
    assert [c.kernel_size[0] for c in model.convs] == [3, 4, 5]
    assert model(_batch([7, 3, 1])).shape == (3, 2)
    assert _model().cnsn is None and _model("sn").cnsn.crossnorm is None
    with pytest.raises(ValueError, match="cnsn_type"):
        _model("se")
    with pytest.raises(ValueError, match="crop='neither'"):
        _model("cn", crop="both")


def test_glove_initialisation_and_padding_row():
    table = torch.randn(40, 7)
    model = _model(embeddings=table)
    assert model.embedding.embedding_dim == 7
    torch.testing.assert_close(model.embedding.weight[1:], table[1:])
    assert torch.all(model.embedding.weight[0] == 0)
    model(_batch([9, 2])).sum().backward()
    assert torch.all(model.embedding.weight.grad[0] == 0)  # <pad> is never trained
    frozen = _model(embeddings=table, freeze_embeddings=True)
    assert not frozen.embedding.weight.requires_grad


@pytest.mark.parametrize("cnsn_type", UNITS)
def test_output_does_not_depend_on_padding_eval(cnsn_type):
    """Extra padding changes nothing: statistics, convolutions and pooling skip it."""
    model = _model(cnsn_type).eval()
    tokens = _batch([8, 5, 2, 1])
    padded = torch.cat([tokens, torch.zeros(4, 9, dtype=torch.long)], 1)
    torch.testing.assert_close(model(padded), model(tokens), rtol=1e-5, atol=1e-6)
    alone = model(tokens[1:2, :5])  # one sequence without any padding
    torch.testing.assert_close(model(tokens)[1:2], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cnsn_type", ["sn", "cn", "cnsn"])
def test_output_does_not_depend_on_padding_train_with_crossnorm_on(cnsn_type):
    model = _model(cnsn_type).train()
    tokens = _batch([8, 5, 3, 6])
    padded = torch.cat([tokens, torch.zeros(4, 6, dtype=torch.long)], 1)
    outputs = []
    for x in (tokens, padded):
        torch.manual_seed(1)  # the same CrossNorm partners and dropout masks
        activate_crossnorm(model, 1.0, 1)
        outputs.append(model(x))
        deactivate_crossnorm(model)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)


def test_unit_statistics_exclude_padding():
    """The SN unit sees the embeddings of the real tokens only: its input statistics match."""
    model = _model("sn").eval()
    seen = {}
    model.cnsn.register_forward_hook(lambda m, args, out: seen.update(x=args[0], mask=args[1]))
    tokens = _batch([6, 2], width=10)
    model(tokens)
    assert seen["mask"].tolist() == [[True] * 6, [True] * 2 + [False] * 4]  # trimmed to 6
    assert seen["x"].shape == (2, 6, 6)  # (N, D, L): embedding dimensions are the channels


def test_short_and_empty_sequences():
    model = _model("cnsn").eval()
    tokens = torch.zeros(3, 1, dtype=torch.long)
    tokens[0, 0] = 5  # one token, shorter than every kernel; then two rows of padding only
    out = model(tokens)
    assert out.shape == (3, 2) and torch.isfinite(out).all()
    torch.testing.assert_close(out[:1], model(tokens[:1]))  # rows of padding change nothing
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.rand(2, 4))


def test_training_learns_a_toy_sentiment_task():
    """A few Adam steps of Trainer + fit learn positive vs negative words (SNCN, CN on)."""
    gen = torch.Generator().manual_seed(0)
    n, width = 256, 12
    labels = torch.arange(n) % 2
    tokens = torch.randint(10, 40, (n, width), generator=gen)  # neutral words
    cue = torch.randint(0, width, (n,), generator=gen)
    tokens[torch.arange(n), cue] = 2 + labels * 4 + torch.randint(0, 4, (n,), generator=gen)
    lengths = torch.randint(4, width + 1, (n,), generator=gen).maximum(cue + 1)
    tokens[torch.arange(width)[None, :] >= lengths[:, None]] = 0
    model = _model("cnsn", embed_dim=8, num_filters=8)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), 1e-2), cn_prob=0.5)

    def batches(epoch, generator):
        order = torch.randperm(n, generator=generator)
        return [(tokens[order[i : i + 32]], labels[order[i : i + 32]]) for i in range(0, n, 32)]

    history = fit(trainer, batches, epochs=6, progress=False)
    accuracy = (trainer.predict(tokens).argmax(1) == labels).float().mean()
    assert history[-1]["loss"] < history[0]["loss"] and accuracy > 0.9


# ----------------------------------------------------------------------------------------------
# the recipe


def _tiny_data(n=64, width=10, vocab=30):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, vocab, (n, width), generator=gen).numpy()
    labels = (np.arange(n) % 2).astype(np.int64)
    tokens[:, 0] = 2 + labels  # word 2 = negative, word 3 = positive
    split = (tokens, labels)
    return sentiment.SentimentData(
        Vocab(f"w{i}" for i in range(vocab - 2)), split, split, split,
        torch.randn(vocab, 4, generator=gen), {"vocab_size": vocab},
    )  # fmt: skip


def test_run_writes_a_run_folder_and_reads_it_back(tmp_path):
    data = _tiny_data()
    overrides = {"epochs": 2, "batch_size": 16, "num_filters": 4, "lr": 1e-2}
    metrics = sentiment.run("sncn", tmp_path, data, overrides=overrides, progress=False)
    (folder,) = (tmp_path / "runs").glob("imdb-sst2-textcnn-sncn-*-seed0")
    assert results.is_done(folder) and len(metrics["history"]) == 2
    assert 0 <= metrics["source_acc"] <= 100 and "target_acc" in metrics["history"][0]
    params = json.loads((folder / "params.json").read_text())
    assert params["cn_prob"] == 0.5 and params["method"] == "sncn"
    (folder / "checkpoint.pt").unlink()  # read back from metrics.json, not retrained
    assert sentiment.run("sncn", tmp_path, data, overrides=overrides) == metrics
    other = sentiment.run("sncn", tmp_path, data, overrides={**overrides, "epochs": 1})
    assert len(other["history"]) == 1  # a changed setting is a new run, never a stale one
    base = sentiment.run("baseline", tmp_path, data, overrides=overrides, progress=False)
    assert base["target_acc"] >= 0
    with pytest.raises(ValueError, match="unknown setting"):
        sentiment.run("sn", tmp_path, data, overrides={"epoch": 1})


def test_table_rows_and_figure():
    def fake(src, tgt):
        return {"source_acc": src, "target_acc": tgt, "history": [{"target_acc": tgt}]}

    runs = [("baseline", [fake(80, 60), fake(82, 62)]), ("sncn", [fake(83, 66), fake(83, 64)])]
    rows = sentiment.table_rows(runs)
    assert [r["method"] for r in rows] == ["baseline", "sncn"]
    assert rows[1]["source acc"] == 83 and rows[1]["target acc"] == 65
    assert rows[1]["target change"] == pytest.approx(4.0)
    assert rows[0]["target std"] == pytest.approx(np.std([60, 62], ddof=1))
    assert rows[1]["paper target"] == 74.91
    assert rows[1]["paper target change"] == pytest.approx(74.91 - 71.86)
    assert np.isnan(sentiment.table_rows([("sn", [fake(1, 2)])])[0]["source std"])
    assert sentiment.table_rows([("sn", [fake(1, 2)])])[0]["source change"] is None
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    fig = sentiment.figure(runs)
    assert len(fig.axes) == 2
    matplotlib.pyplot.close(fig)


def test_prepare_end_to_end_on_tiny_files(tmp_path):
    def write(path, lines):
        path.parent.mkdir(parents=True, exist_ok=True)
        data = "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in lines)
        if path.suffix == ".gz":
            path.write_bytes(gzip.compress(data.encode()))
        else:
            path.write_text(data)

    reviews = [('"Great" film!<br />Loved it.', 1), ("Awful film. Boring!", 0)] * 4
    write(tmp_path / "imdb" / "train.tsv.gz", reviews)
    write(tmp_path / "imdb" / "test.tsv.gz", reviews[:2])
    write(tmp_path / "sst2" / "test.tsv", [("a great film .", 1), ("boring .", 0)])
    (tmp_path / "glove.txt").write_text("film 1 0\ngreat 0 1\nboring -1 -1\n")
    data = sentiment.prepare(glove=str(tmp_path / "glove.txt"), root=tmp_path, max_len=3)
    assert data.train[0].shape == (8, 3) and data.target[0].shape == (2, 3)
    assert data.embeddings.shape == (len(data.vocab), 2) and data.info["glove_dim"] == 2
    assert data.info["target_unk_rate"] > 0  # "a" never occurs in IMDb
    assert data.info["train_truncated"] == 1.0
