"""pytest setup for the tests and the notebooks (nbval): datasets missing from the data root are
read from the embedded sample (``sample_data/``, :func:`sncn.data.sample_for`), so that a fresh
clone passes ``make test`` with no data and no network. The notebook kernels inherit this."""

import os

import pytest

os.environ.setdefault("SNCN_SAMPLE", "1")
# never reach for the Hugging Face hub from a test: a missing dataset is the sample's or an error
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _fresh_sample_record(monkeypatch):
    """Each test starts with nothing read from the embedded sample: what one test read must not
    change the cache folder, run records or table notes of the next (sncn.data.samples_used)."""
    import sncn.data

    monkeypatch.setattr(sncn.data, "_SAMPLED", [])
