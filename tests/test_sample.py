"""The embedded sample (``sample_data/``) and fetching missing data (``sncn.data.prepare``): a
fresh clone with no data runs the tests and the smoke profile, and says so in what it makes."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import sncn.data
from sncn import results
from sncn.data import prepare as prep
from sncn.data.text import load_texts, read_tsv
from sncn.data.vision import ImageNetSample, load_cifar
from sncn.hparams import notebook_parameters
from sncn.pipeline import REPO, declared_parameters, find_notebooks, needed_data, run_pipeline

SAMPLE = REPO / "sample_data"


@pytest.fixture
def empty_root(tmp_path, monkeypatch):
    """An empty data root with the sample allowed, and a fresh record of what was sampled."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("SNCN_DATA", str(root))
    monkeypatch.delenv("SNCN_CACHE", raising=False)
    monkeypatch.setenv("SNCN_SAMPLE", "1")
    monkeypatch.setattr(sncn.data, "_SAMPLED", [])
    return root


def test_the_sample_is_found_and_holds_what_its_readme_says():
    assert sncn.data.sample_root() == SAMPLE
    for split, per_class in (("train", 60), ("test", 30)):
        folders = sorted((SAMPLE / "cifar10" / split).iterdir())
        assert len(folders) == 10
        assert {len(list(f.glob("*.jpg"))) for f in folders} == {per_class}
    for split, n in (("train", 400), ("test", 200)):
        texts, labels = read_tsv(SAMPLE / "imdb" / f"{split}.tsv.gz")
        assert len(texts) == n and labels.sum() == n // 2 and max(map(len, texts)) < 1000
    texts, labels = read_tsv(SAMPLE / "sst2" / "test.tsv")
    assert len(texts) == 300 and labels.sum() == 150
    assert len(list((SAMPLE / "imagenet_sample" / "images").glob("*.jpg"))) == 6


def test_missing_cifar_comes_from_the_sample_and_derived_data_go_elsewhere(empty_root):
    plain_cache = sncn.data.cache_root()
    with pytest.warns(UserWarning, match="embedded sample"):
        x, y = load_cifar("cifar10", "test")
    assert x.shape == (300, 32, 32, 3) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [30] * 10
    assert sncn.data.samples_used() == ("cifar10",)
    assert sncn.data.cache_root() == plain_cache / "embedded-sample"
    assert not plain_cache.exists()  # nothing decoded from the sample was cached
    train_x, _ = load_cifar("cifar10", "train")  # warned once per dataset
    assert len(train_x) == 600


def test_an_explicit_root_or_an_unset_switch_never_falls_back(empty_root, monkeypatch):
    with pytest.raises(FileNotFoundError, match="not found under the data root"):
        load_cifar("cifar10", "test", empty_root)  # explicit root: taken at its word
    monkeypatch.delenv("SNCN_SAMPLE")
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_cifar("cifar10", "test")
    assert sncn.data.samples_used() == ()
    assert sncn.data.sample_for("cifar100") is None


def test_real_data_win_over_the_sample(empty_root):
    for folder in sorted((SAMPLE / "cifar10" / "test").iterdir()):  # one image per class
        (empty_root / "cifar10" / "test" / folder.name).mkdir(parents=True)
        src = sorted(folder.glob("*.jpg"))[0]
        (empty_root / "cifar10" / "test" / folder.name / src.name).write_bytes(src.read_bytes())
    x, _ = load_cifar("cifar10", "test", cache=False)
    assert len(x) == 10 and sncn.data.samples_used() == ()


def test_texts_and_imagenet_images_come_from_the_sample(empty_root):
    with pytest.warns(UserWarning, match="embedded sample"):
        texts, labels, where = load_texts("sst2", "test")
    assert len(texts) == 300 and where.startswith(str(SAMPLE))
    with pytest.warns(UserWarning, match="embedded sample"):
        assert len(ImageNetSample()) == 6
    assert sncn.data.samples_used() == ("sst2", "imagenet_sample")


def test_runs_and_tables_made_from_the_sample_say_so(empty_root, tmp_path):
    run = tmp_path / "runs" / "a"
    assert "data_sample" not in results.save_run(run, {}, {"error": 1.0})
    table = results.save_table([{"x": 1}], "t", tmp_path)
    assert "EMBEDDED SAMPLE" not in table.read_text()

    with pytest.warns(UserWarning):
        load_cifar("cifar10", "test")
    sampled = results.save_run(tmp_path / "runs" / "b", {}, {"error": 2.0})
    assert sampled["data_sample"] == ["cifar10"]
    text = results.save_table([{"x": 1}], "t", tmp_path).read_text()
    assert "EMBEDDED SAMPLE" in text and "cifar10" in text
    # read back in another process (nothing sampled there), the runs still tell
    metrics = json.loads((run.parent / "b" / "metrics.json").read_text())
    rows = results.Rows([{"x": 1}], runs=[metrics])
    assert rows.samples == ["cifar10"]
    assert "cifar10" in results.sample_note(rows.samples)


def test_a_run_is_not_reused_across_real_and_sample_data(empty_root, tmp_path, monkeypatch, capsys):
    real, sampled = tmp_path / "real", tmp_path / "sampled"
    results.save_run(real, {}, {"error": 1.0})
    monkeypatch.setattr(sncn.data, "_SAMPLED", ["cifar10"])
    results.save_run(sampled, {}, {"error": 2.0})

    assert results.reuse(sampled)["error"] == 2.0  # the sample is allowed and in use here
    assert results.reuse(real) is None  # real-data run, but this process reads the sample
    assert "made from real data" in capsys.readouterr().out
    monkeypatch.delenv("SNCN_SAMPLE")
    monkeypatch.setattr(sncn.data, "_SAMPLED", [])
    assert results.reuse(sampled) is None  # a sample run where only real data may be read
    assert "made from the embedded sample" in capsys.readouterr().out


def test_prepare_reports_what_is_missing_offline_and_how_to_provide_it(empty_root, monkeypatch):
    def offline(root):
        raise OSError("could not download https://example.org/x: network unreachable")

    monkeypatch.setitem(prep.DATASETS, "cifar10", replace(prep.DATASETS["cifar10"], fetch=offline))
    report = prep.prepare(["cifar10", "cifar100", "imagenet_sample"])
    assert report.fetched == [] and report.sampled == []
    assert set(report.missing) == {"cifar10", "cifar100", "imagenet_sample"}
    message = report.message()
    assert "$SNCN_DATA" in message and "network unreachable" in message
    assert "EliSchwartz/imagenet-sample-images" in message  # not fetchable: how by hand

    monkeypatch.delenv("SNCN_SAMPLE")
    report = prep.prepare(["cifar10", "imagenet_sample", "cifar100"], fetch=False, sample=True)
    assert report.sampled == ["cifar10", "imagenet_sample"] and list(report.missing) == ["cifar100"]
    assert "embedded sample" in report.message()
    assert os.environ["SNCN_SAMPLE"] == "1"  # the notebooks it starts may read the sample

    with pytest.raises(ValueError, match="unknown datasets"):
        prep.prepare(["mnist"])


def test_prepare_fetches_texts_into_the_files_the_loaders_read(empty_root, monkeypatch):
    import datasets

    def load_dataset(hub, config, split):
        assert hub == "SetFit/sst2"
        return {"text": [f"a {split}\tsentence", "another\none"], "label": [1, 0]}

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    report = prep.prepare(["sst2"])
    assert report.fetched == ["sst2"] and not report.missing
    texts, labels = read_tsv(empty_root / "sst2" / "dev.tsv")
    assert texts == ["a validation sentence", "another one"] and labels.tolist() == [1, 0]
    assert "fetched into" in report.message()
    assert prep.prepare(["sst2"]).present == ["sst2"]


def test_the_notebooks_name_the_data_they_read():
    notebooks = {nb.stem: nb for nb in find_notebooks(REPO / "notebooks")}

    def needs(stem: str, profile: str) -> list[str]:
        declared = declared_parameters(notebooks[stem])[1]
        return needed_data(stem, {**declared, **notebook_parameters(stem, profile)})

    smoke = {s: needs(s, "smoke") for s in notebooks}
    assert smoke["01_cifar_c"] == ["cifar10"]
    assert smoke["03_imagenet_c"] == ["cifar10", "imagenet_sample"]
    assert smoke["06_sentiment"] == ["imdb", "sst2", "glove"]
    assert smoke["05_segmentation"] == [] and smoke["08_claims"] == []
    assert "cifar100" in needs("02_ablations", "paper")
    assert set().union(*smoke.values()) <= set(prep.DATASETS)


def test_quick_stops_before_any_notebook_when_data_are_missing(empty_root, tmp_path, capsys):
    code = run_pipeline("quick", REPO / "notebooks", tmp_path / "results", only=["01"],
                        fetch=False)  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "CIFAR-10" in err and "$SNCN_DATA" in err
    assert not (tmp_path / "results" / "quick" / "notebooks").exists()


def test_the_sample_is_rebuilt_byte_for_byte_from_the_mirror(tmp_path):
    source = sncn.data.data_root()
    if not (source / "cifar10" / "train").is_dir() or not (source / "imdb").exists():
        pytest.skip(f"the full data are not in {source}")
    import importlib.util

    spec = importlib.util.spec_from_file_location("sample_build", SAMPLE / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    build.build(source, tmp_path)

    def digests(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()
                and p.parts[len(folder.parts)] != "build.py" and p.name != "README.md"}  # fmt: skip

    assert digests(tmp_path) == digests(SAMPLE)


def test_the_scoreboard_says_when_its_tables_come_from_the_sample(empty_root, tmp_path):
    from sncn.claims import save_scoreboard

    results.save_table([{"x": 1}], "plain", tmp_path)
    save_scoreboard(tmp_path, "smoke")
    assert "EMBEDDED SAMPLE" not in (tmp_path / "claims.md").read_text()
    with pytest.warns(UserWarning):
        load_cifar("cifar10", "test")
    results.save_table([{"x": 1}], "sampled", tmp_path)
    save_scoreboard(tmp_path, "smoke")
    assert "EMBEDDED SAMPLE: 1 of the tables" in (tmp_path / "claims.md").read_text()
