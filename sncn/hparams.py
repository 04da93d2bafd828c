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

_SENTIMENT_QUICK: dict[str, Any] = {
    "METHODS": ["baseline", "sn", "cn", "sncn"],
    "SEEDS": [0, 1, 2],
    "EPOCHS": 1,
    "BATCH_SIZE": 64,
    "LR": 0.001,
    "MAX_LEN": 400,
    "MAX_VOCAB": 25000,
    "CN_PROB": 0.5,
    "ACTIVE_NUM": 1,
    "GLOVE": "auto",
    "TRAIN_SUBSET": 0,
    "TEST_SUBSET": 5000,
}
_VISUALIZATION_QUICK: dict[str, Any] = {
    "N_CONTENT": 4,
    "N_STYLE": 5,
    "ITERATIONS": 200,
    "LR_STEP": 40,
    "SN_EPOCHS": 1,
    "TRAIN_SUBSET": 4000,
    "BATCH_SIZE": 128,
    "TEST_SUBSET": 100,
    "MODEL_KWARGS": {},
}
_WRN_STUDIES = (
    "fig9_positions",
    "fig9_crossnorm_variants",
    "table5_order",
    "table6_blocks",
    "table7_components",
    "peers",
)

#: notebook stem -> profile -> parameter overrides. ``smoke`` has none by definition: it is what
#: the notebook itself says.
NOTEBOOKS: dict[str, dict[str, dict[str, Any]]] = {
    "01_cifar_c": {
        # WRN-40-2 on CIFAR-10, 4 methods, on a 2-core CPU in about 25 minutes: one pass over
        # 32,000 training images (250 steps of 128; WRN-40-2 does ~100 images/s there) and 200
        # test images per corruption and severity.
        "quick": {
            "DATASETS": ["cifar10"],
            "BACKBONES": ["wrn"],
            "METHODS": ["basic", "sn", "cn", "sncn"],
            "SEEDS": [0],
            "EPOCHS": 1,
            "BATCH_SIZE": 128,
            "TRAIN_SUBSET": 32000,
            "TEST_SUBSET": 200,
            "MODEL_KWARGS": {},
        },
        # The whole of Table 1 and Tables 14/15 (CIFAR-100 needs CIFAR-100 in the data root).
        "paper": {
            "DATASETS": ["cifar10", "cifar100"],
            "BACKBONES": ["allconv", "densenet", "wrn", "resnext"],
            "METHODS": [
                "basic",
                "sn",
                "cn",
                "sncn",
                "sncn_consistency",
                "augmix",
                "sncn_augmix",
            ],  # fmt: skip
            "SEEDS": [0],
            "EPOCHS": 0,
            "BATCH_SIZE": 0,
            "TRAIN_SUBSET": 0,
            "TEST_SUBSET": 0,
            "MODEL_KWARGS": {},
        },
    },
    "06_sentiment": {
        # Close to paper scale: all 25,000 IMDb reviews, 1 epoch, 3 seeds, 5,000 IMDb test reviews
        # and all 1,821 SST-2 test sentences; about 7 minutes on 2 quiet cores.
        "quick": _SENTIMENT_QUICK,
        # The paper: 20 epochs, no truncation, the whole IMDb test set.
        "paper": {**_SENTIMENT_QUICK, "EPOCHS": 20, "MAX_LEN": 0, "TEST_SUBSET": 0},
    },
    "07_visualization": {
        # Inversions on 01's one-epoch WRN-40-2 runs (cn, sncn), read back; ~2.5 min on 2 cores.
        # TRAIN_SUBSET etc. only matter when those runs are missing (a model is trained here).
        "quick": _VISUALIZATION_QUICK,
        # The paper: CN on a 1-epoch WRN-40-2 trained on all images, SN on 01's well-trained run.
        "paper": {
            **_VISUALIZATION_QUICK,
            "DEVICE": "",
            "SN_EPOCHS": 0,
            "TRAIN_SUBSET": 0,
            "BATCH_SIZE": 0,
            "TEST_SUBSET": 0,
        },
    },
    "02_ablations": {
        # WRN-40-2 on CIFAR-10, every WRN study (Figure 9, Tables 5-7, peers: 37 distinct runs)
        # in about 20 minutes on a 2-core CPU: 16 steps of 128 images per run and 20 test
        # images per corruption and severity. At this budget the differences are mostly noise.
        "quick": {
            "DATASET": "cifar10",
            "BACKBONE": "wrn",
            "STUDIES": list(_WRN_STUDIES),
            "BACKBONE_TABLES": [],
            "SEEDS": [0],
            "EPOCHS": 1,
            "BATCH_SIZE": 128,
            "TRAIN_SUBSET": 2048,
            "TEST_SUBSET": 20,
            "MODEL_KWARGS": {},
        },
        # The paper's studies on CIFAR-100-C and Tables 8, 9, 12 for all four backbones.
        "paper": {
            "DATASET": "cifar100",
            "BACKBONE": "wrn",
            "STUDIES": list(_WRN_STUDIES),
            "BACKBONE_TABLES": ["allconv", "densenet", "wrn", "resnext"],
            "SEEDS": [0],
            "EPOCHS": 0,
            "BATCH_SIZE": 0,
            "TRAIN_SUBSET": 0,
            "TEST_SUBSET": 0,
            "MODEL_KWARGS": {},
        },
    },
}


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


# ---------------------------------------------------------------------------------------------
# CIFAR-10-C / CIFAR-100-C (Table 1, Tables 14/15): the paper's released run scripts
# ---------------------------------------------------------------------------------------------

CIFAR_BACKBONES = ("allconv", "densenet", "wrn", "resnext")

#: Our method names (Table 14's columns) -> the released script that defines their settings.
#: ``basic`` and ``augmix`` take the backbone's optimiser settings from the CN script and have no
#: SN/CN units; ``sncn`` is "SN+CN+Crop" (script ``run-cnsn.sh``) and ``sncn_consistency`` is
#: Table 1's "SNCN" (``run-cnsn-consist.sh``).
CIFAR_METHODS = {
    "basic": "cn",
    "sn": "sn",
    "cn": "cn",
    "sncn": "cnsn",
    "sncn_consistency": "cnsn_consist",
    "augmix": "cnsn_augmix",
    "sncn_augmix": "cnsn_augmix",
}


def cifar_setting(dataset: str, backbone: str, method: str) -> dict[str, Any]:
    """The paper's settings for one Table 1/14/15 cell, resolved into sncn's names.

    Args:
        dataset: ``cifar10`` or ``cifar100``.
        backbone: one of :data:`CIFAR_BACKBONES`.
        method: one of :data:`CIFAR_METHODS`.

    Returns:
        ``{"model": create_model kwargs (without num_classes), "trainer": "supervised" |
        "consistency" | "augmix", "cn_prob", "active_num", "consist_wt", "epochs", "batch_size",
        "lr", "momentum", "weight_decay"}``.
    """
    from sncn.released_settings import RELEASED_SCRIPTS

    if dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"dataset must be 'cifar10' or 'cifar100', got {dataset!r}.")
    if backbone not in CIFAR_BACKBONES:
        raise ValueError(f"backbone must be one of {CIFAR_BACKBONES}, got {backbone!r}.")
    if method not in CIFAR_METHODS:
        raise ValueError(f"method must be one of {tuple(CIFAR_METHODS)}, got {method!r}.")
    script = RELEASED_SCRIPTS[(dataset, backbone, CIFAR_METHODS[method])]
    with_units = method not in ("basic", "augmix")
    model: dict[str, Any] = {"cnsn_type": script["cnsn_type"] if with_units else None}
    if with_units:
        model["pos"] = script["pos"]
        if "cn" in script["cnsn_type"]:
            model.update(crop=script["crop"], beta=float(script["beta"]))
    uses_cn = with_units and "cn" in script["cnsn_type"]
    trainer = (
        "augmix"
        if "augmix" in method
        else "consistency"
        if "consistency" in method
        else ("supervised")
    )
    return {
        "model": model,
        "trainer": trainer,
        "cn_prob": float(script["cn_prob"]) if uses_cn else 0.0,
        "active_num": int(script.get("active_num", 1)) if uses_cn else 1,
        "consist_wt": float(script.get("consist_wt", 10.0)),
        "epochs": int(script["epochs"]),
        "batch_size": int(script["batch_size"]),
        "lr": float(script["lr"]),
        "momentum": float(script["momentum"]),
        "weight_decay": float(script["weight_decay"]),
    }
