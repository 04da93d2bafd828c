"""The one registry of hyper-parameters, under the paper's names, per profile.

Profiles change numbers, never logic:

* ``smoke``: the notebooks' committed defaults (their ``parameters`` cell), a minute or two each on
  a CPU; what nbval runs.
* ``quick``: honest small-scale results on a 2-core CPU, about an hour for the whole pipeline.
* ``paper``: the paper's settings, on GPUs.

:func:`notebook_parameters` gives the values the pipeline injects into a notebook for a profile
(papermill parameters, overriding the smoke defaults).
"""

from __future__ import annotations

import copy
from typing import Any

PROFILES = ("smoke", "quick", "paper")

#: CrossNorm / SelfNorm settings of the paper (§3.2 and "Hyper-parameters" in §4): CN is turned
#: on with probability ``cn_prob`` in ``active_num`` randomly chosen units per step (grid: 1 or 2
#: units, 0.25 or 0.5); crop boxes have an area ratio of at least ``threshold`` (t = 0.1), drawn
#: from Beta(``beta``, ``beta``) (uniform).
LAYER_DEFAULTS: dict[str, Any] = {
    "cn_prob": 0.5,
    "active_num": 1,
    "instances": 2,
    "crop": "neither",
    "beta": 1.0,
    "threshold": 0.1,
    "order": "cn-sn",
}

#: notebook stem (e.g. ``"02_cifar_c"``) -> profile -> parameter overrides. ``smoke`` has none by
#: definition: it is what the notebook itself says.
NOTEBOOKS: dict[str, dict[str, dict[str, Any]]] = {}


def check_profile(profile: str) -> str:
    """Return ``profile`` or raise a ValueError listing the valid ones."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}.")
    return profile


def notebook_parameters(stem: str, profile: str) -> dict[str, Any]:
    """Parameters the pipeline passes to notebook ``stem`` under ``profile``.

    Always includes ``PROFILE``; the rest are the registry's overrides (none for ``smoke``).
    """
    check_profile(profile)
    overrides = {} if profile == "smoke" else NOTEBOOKS.get(stem, {}).get(profile, {})
    return {"PROFILE": profile, **copy.deepcopy(overrides)}
