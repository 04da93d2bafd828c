"""pytest setup for the tests and the notebooks (nbval): datasets missing from the data root are
read from the embedded sample (``sample_data/``, :func:`sncn.data.sample_for`), so that a fresh
clone passes ``make test`` with no data and no network. The notebook kernels inherit this."""

import os

os.environ.setdefault("SNCN_SAMPLE", "1")
# never reach for the Hugging Face hub from a test: a missing dataset is the sample's or an error
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
