"""The one registry of hyper-parameters, under the paper's names, per profile.

Profiles change numbers, never logic:

* ``smoke``: the notebooks' committed defaults (their ``parameters`` cell), a minute or two each on
  a CPU; what nbval runs.
* ``quick``: honest small-scale results on a 2-core CPU, about two hours for the whole pipeline
  on the 2-core host of December 2026 (the report prints each notebook's time).
* ``paper``: the paper's settings, on GPUs.

:func:`notebook_parameters` gives the values the pipeline injects into a notebook for a profile
(papermill parameters, overriding the smoke defaults); :func:`resolve_parameters`, called by each
notebook right after its parameters cell, applies a profile given as ``-p PROFILE <profile>`` to
the values not given explicitly and checks every value before any work.
"""

from __future__ import annotations

import ast
import copy
import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

PROFILES = ("smoke", "quick", "paper")

#: CrossNorm / SelfNorm settings of the paper (§3.2 and "Hyper-parameters" in §4): CN is turned
#: on with probability ``cn_prob`` in ``active_num`` randomly chosen units per step (grid: 1 or 2
#: units, 0.25 or 0.5); crop boxes have an area ratio above ``threshold`` (t = 0.1), from a
#: ratio drawn from Beta(``beta``, ``beta``) (uniform). ``box`` and ``pairing`` are the released
#: code's (``cn_rand_bbox``: clipped boxes of side int(S sqrt(r)), mean area ratio about 1/3;
#: ``torch.randperm`` partners). Options (FIDELITY.md): ``box="paper"``, the paper's text (a
#: square of ratio U(t, 1) inside the map); ``pairing="derangement"`` (always another sample).
LAYER_DEFAULTS: dict[str, Any] = {
    "cn_prob": 0.5,
    "active_num": 1,
    "instances": 2,
    "crop": "neither",
    "beta": 1.0,
    "threshold": 0.1,
    "order": "cn-sn",
    "box": "released",
    "pairing": "permutation",
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
    "SN_EPOCHS": 4,
    "TRAIN_SUBSET": 4000,
    "BATCH_SIZE": 128,
    "TEST_SUBSET": 100,
    "MODEL_KWARGS": {"depth": 16, "widen_factor": 2},
}
_WRN_STUDIES = (
    "fig9_positions",
    "fig9_crossnorm_variants",
    "table5_order",
    "table6_blocks",
    "table7_components",
    "peers",
)

#: FixMatch on CIFAR-10 (§4.1 "Semi-supervised training on CIFAR", Figure 4) under the names of
#: FixMatch (Sohn et al., 2020) and of the PyTorch implementation the paper used
#: (kekmodel/FixMatch-pytorch): WRN-28-2, B labelled images and mu * B unlabelled ones per step,
#: threshold tau, unlabelled weight lambda_u, softmax temperature T, SGD with Nesterov momentum,
#: lr * cos(7 pi k / 16 K), EMA of the weights for evaluation, ``epochs`` of ``eval_step`` steps,
#: labelled subsets drawn per class with ``label_seed`` (the paper: 1). ``labels``: the text's
#: 250 and 4,000 and Figure 4's 1,000. The paper does not give CrossNorm's settings for
#: FixMatch: the supervised ones (LAYER_DEFAULTS; CN units after every WRN block, ``pos="post"``).
#: The WRN and the image normalisation are FixMatch-pytorch's (``models/wideresnet.py``,
#: ``dataset/cifar.py``): leaky ReLU 0.1, BatchNorm momentum 0.001, only stage 1's first block
#: pre-activating both branches, Xavier-normal classifier, CIFAR-10 mean/std. The supervised
#: models' (AugMix, the released CNSN code) are ``leaky_slope=0.0, bn_momentum=0.1,
#: activate_before_residual="all", fc_init="pytorch"`` and mean = std = 0.5.
FIXMATCH: dict[str, Any] = {
    "arch": "wrn",
    "depth": 28,
    "widen_factor": 2,
    "leaky_slope": 0.1,
    "bn_momentum": 0.001,
    "activate_before_residual": (1,),
    "fc_init": "xavier_normal",
    "mean": (0.4914, 0.4822, 0.4465),
    "std": (0.2471, 0.2435, 0.2616),
    "batch_size": 64,
    "mu": 7,
    "threshold": 0.95,
    "lambda_u": 1.0,
    "T": 1.0,
    "lr": 0.03,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "warmup": 0,
    "ema_decay": 0.999,
    "epochs": 1024,
    "eval_step": 1024,
    "label_seed": 1,
    "labels": (250, 1000, 4000),
    "unlabelled": "all",
    "pos": "post",
    "crop": "neither",
    "cn_prob": 0.5,
    "active_num": 1,
}
_SEMISUP_QUICK: dict[str, Any] = {
    "VARIANTS": ["wa", "wa_cn_all", "wa_cn_unlabelled", "ra", "ra_cn_all", "ra_cn_unlabelled"],
    "LABELS": [250],
    "SEEDS": [0],
    "EPOCHS": 3,
    "EVAL_STEP": 100,
    "BATCH_SIZE": 16,
    "MU": 3,
    "EMA_DECAY": 0.99,
    "TEST_SUBSET": 200,
    "MODEL_KWARGS": {"depth": 16, "widen_factor": 1, "bn_momentum": 0.01},
}

#: ImageNet (Table 2, Tables 16-19), the paper's names: §4.1 and the released ``imagenet.py`` /
#: ``imagenet-scripts``: 90 epochs, lr 0.1 x batch/256 divided by 10 at epochs 30 and 60, SGD
#: momentum 0.9 (no Nesterov), weight decay 1e-4, CN on the input with probability 0.5, and the
#: global batch of each method's released script: 128 (peak lr 0.05) in run-sn.sh, run-cn.sh,
#: run-cnsn.sh and run-cnsn-consist.sh, 256 (peak lr 0.1) in run-cnsn-augmix.sh.
IMAGENET_SETTING: dict[str, Any] = {
    "epochs": 90,
    # "released": the global batch of the method's released script
    # (sncn.experiments.imagenet_c.RELEASED_SCRIPT): 128 for every method but the AugMix ones,
    # 256 for those. An int: that global batch for every method. 0 means "released".
    "batch_size": "released",
    "lr": 0.1,  # per 256 images: the optimiser's lr is lr x batch_size / 256
    "momentum": 0.9,
    "weight_decay": 1e-4,
    # "released": lr / 10 at epochs // 3 and 2 * (epochs // 3), the released adjust_learning_rate
    # (30 and 60 at 90 epochs, as §4.1 says; a shortened run decays too, below 3 epochs it runs
    # at lr / 100 throughout). Epochs, e.g. (30, 60): fixed steps (a run of <= 30 epochs never
    # decays).
    "milestones": "released",
    "image_size": 224,
    "cn_prob": 0.5,
    "active_num": 1,
    "consist_wt": 10.0,
    "jsd_wt": 12.0,
    "amp": True,
    "channels_last": True,
    "sync_bn": False,
    "workers": 8,
    "eval_batch_size": 250,
    "layers": (3, 4, 6, 3),
    "width": 64,
    # "": from scratch, as every released script but run-cn.sh (Table 2's SNCN, SNCN+AugMix and
    # AugMix* rows, Table 19's SN/SNCN/SNCN+Crop, Tables 16-18). "torchvision": fine-tune
    # torchvision's ImageNet ResNet-50 (ResNet50_Weights.IMAGENET1K_V1, run-cn.sh's
    # resnet50-19c8e357.pth re-saved), loaded non-strictly: Table 19's CN column (App. 6.4), our
    # method "cn_finetune". A path: a local state dict loaded the same way.
    "pretrained": "",
    # AugMix methods only (sncn.data.augmix.ImageAugMixViews, severity 1): "reference" samples
    # and mixes as the released imagenet.py / AugMix code (levels U(0.1, 1), float mixing);
    # "torchvision" is torchvision's transforms.AugMix (grid levels, uint8 mixture).
    "augmix_implementation": "reference",
}
_IMAGENET_C_QUICK: dict[str, Any] = {
    "METHODS": ["basic", "sn", "cn", "sncn"],
    "SEED": 0,
    "EPOCHS": 6,  # lr / 10 at epochs 2 and 4 (IMAGENET_SETTING["milestones"] = "released")
    "BATCH_SIZE": 64,
    "IMAGE_SIZE": 48,
    "LAYERS": [3, 4, 6, 3],
    "WIDTH": 8,
    "TRAIN_PER_CLASS": 500,
    "VAL_PER_CLASS": 50,
    "C_SUBSET": 100,
    "SAMPLE_C": 30,
    "DATA_DIR": "",
    "EVALUATION": "generated",
}

#: notebook stem -> profile -> parameter overrides. ``smoke`` has none by definition: it is what
#: the notebook itself says.
NOTEBOOKS: dict[str, dict[str, dict[str, Any]]] = {
    "03_imagenet_c": {
        # ResNet-50's depth at width 8 (planes 8-64) and 48 px on an ImageNet-format folder made
        # from CIFAR-10 (5,000 training images, 6 epochs), 4 methods, corruptions (224-px table)
        # on 100 validation crops, ImageNet-C generated from 30 ImageNet sample images.
        "quick": _IMAGENET_C_QUICK,
        # The paper: ImageNet in <data root>/imagenet, ImageNet-C in <data root>/ImageNet-C. Train
        # with torchrun first (see sncn.experiments.imagenet_c); the notebook reads the runs.
        "paper": {
            **_IMAGENET_C_QUICK,
            "METHODS": [
                "basic",
                "sn",
                "cn",
                "cn_finetune",
                "sncn",
                "sncn_crop",
                "sncn_consistency",
                "augmix",
                "ibn_a",
                "ibn_a_cn",
                "ibn_a_cn_cr",
                "ibn_a_cn_augmix",
                "ibn_b",
                "ibn_b_sn",
                "ibn_b_sn_augmix",
                "ibn_b_sncn_augmix",
                "sn_identity",
                "sn_pre",
                "sn_residual",
                "sn_post",
                "cn_identity",
                "cn_pre",
                "cn_residual",
                "cn_post",
            ],
            "EPOCHS": 90,
            "BATCH_SIZE": None,  # each method's released script's: 128, the AugMix methods 256
            "IMAGE_SIZE": 224,
            "WIDTH": 64,
            "TRAIN_PER_CLASS": 0,
            "VAL_PER_CLASS": 0,
            "C_SUBSET": 0,
            "SAMPLE_C": 1000,
            "DATA_DIR": "imagenet",
            "EVALUATION": "auto",
        },
    },
    "01_cifar_c": {
        # Chosen from the pilot (results/pilot/README.md: seed 100, never reported; the runs
        # reported here use seeds 0-2), before any reported run was made:
        # - WRN-16-2 (6 CN/SN units, one per block) on 4,000 class-balanced images: on this CPU
        #   a WRN-40-2 step costs 3.6x a WRN-16-2 one (48 vs 174 images/s training), and the
        #   paper's effects need many steps more than many images; the issue measured WRN-16-2
        #   on 4k images closest to a tie.
        # - 4 epochs (125 steps of 128) x 3 seeds x 4 methods: the pilot shows no crossing of
        #   CN and basic up to 496 steps (it puts CN's mCE 3.5-8.2 points above basic while CN
        #   narrows the corruption gap by 2.6-6.4), so no affordable length shows the paper's
        #   mCE claim; the budget goes to 3 seeds (the minimum), which resolve the gap
        #   and clean-error differences the pilot saw (5-10 points). LADDER [1, 2] (seed 0)
        #   draws the curve below that; the pilot's curve (124-496 steps) reaches further.
        # - 100 test images per corruption and severity, each corruption and severity its own
        #   draw (cifar_c.cell_subsets): the mCE's standard error is at most
        #   100 sqrt(75 x 0.25 / 100) / 75 = 0.58 point (binomial cells), below the 1 point
        #   asked; clean error on all 10,000 test images.
        # Cost here (2-core EPYC): ~23 s of training an epoch, ~50 s of evaluation a run; the
        # notebook took 47m50s (the 12 reported runs and the 8 ladder runs).
        "quick": {
            "DATASETS": ["cifar10"],
            "BACKBONES": ["wrn"],
            "METHODS": ["basic", "sn", "cn", "sncn"],
            "SEEDS": [0, 1, 2],
            "EPOCHS": 4,
            "BATCH_SIZE": 128,
            "TRAIN_SUBSET": 4000,
            "TEST_SUBSET": 100,
            "MODEL_KWARGS": {"depth": 16, "widen_factor": 2},
            "LADDER": [1, 2],
            "LADDER_SEEDS": [0],
            "CONCURRENT": 1,  # two cores: one run at a time is the fastest
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
            "EPOCHS": None,  # the released scripts': 100, or 200 for DenseNet and ResNeXt
            "BATCH_SIZE": None,  # the released scripts': 128 (64 in two CIFAR-100 runs)
            "TRAIN_SUBSET": 0,
            "TEST_SUBSET": 0,
            "MODEL_KWARGS": {},
            # One run at a time until a GPU measures the gain of sharing it
            # (python -m benchmarks.gpu_paper --concurrent K); -p CONCURRENT K sets it.
            "CONCURRENT": 1,
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
        # Inversions on 01's WRN-16-2 runs read back: the one-epoch CN run of its ladder and the
        # 4-epoch SNCN run (seed 0); ~3 min on 2 cores. TRAIN_SUBSET etc. only matter when those
        # runs are missing (a model is trained here, with 01's budget).
        "quick": _VISUALIZATION_QUICK,
        # The paper: CN on a 1-epoch WRN-40-2 trained on all images, SN on 01's well-trained run.
        "paper": {
            **_VISUALIZATION_QUICK,
            "DEVICE": "",
            "SN_EPOCHS": 0,
            "TRAIN_SUBSET": 0,
            "BATCH_SIZE": None,
            "TEST_SUBSET": 0,
        },
    },
    "02_ablations": {
        # WRN-10-2 (one block a stage, so every position and block study still has its units)
        # on CIFAR-10, every WRN study (Figure 9, Tables 5-7, peers: 40 distinct runs), one
        # seed: 32 steps of 128 images (2 epochs of 2,048) and 40 test images per corruption
        # and severity (independent draws: mCE standard error at most 0.82). WRN-40-2 evaluates
        # 103 images/s here (97 s for the 10,000 clean test images alone), WRN-10-2 615 (~19 s a
        # run with its corrupted images) and trains 294 images/s; the notebook took 30 minutes
        # here. One seed and 32 steps cannot tell the rows apart: each table's resolution note
        # says so, and the paper profile resolves them.
        "quick": {
            "DATASET": "cifar10",
            "BACKBONE": "wrn",
            "STUDIES": list(_WRN_STUDIES),
            "BACKBONE_TABLES": [],
            "SEEDS": [0],
            "EPOCHS": 2,
            "BATCH_SIZE": 128,
            "TRAIN_SUBSET": 2048,
            "TEST_SUBSET": 40,
            "MODEL_KWARGS": {"depth": 10, "widen_factor": 2},
        },
        # The paper's WRN studies on CIFAR-100-C and its Tables 8, 9, 12 (CIFAR-10-C) for all
        # four backbones; BACKBONE_DATASET "cifar100" would run Tables 10, 11, 13 instead.
        "paper": {
            "DATASET": "cifar100",
            "BACKBONE": "wrn",
            "STUDIES": list(_WRN_STUDIES),
            "BACKBONE_TABLES": ["allconv", "densenet", "wrn", "resnext"],
            "BACKBONE_DATASET": "cifar10",
            "SEEDS": [0],
            "EPOCHS": None,  # the released scripts'
            "BATCH_SIZE": None,
            "TRAIN_SUBSET": 0,
            "TEST_SUBSET": 0,
            "MODEL_KWARGS": {},
        },
    },
    "04_semisupervised": {
        # FixMatch (WA, RA) with and without CN at 250 labels on a 2-core CPU in under 10
        # minutes: WRN-16-1, 300 steps of 16 labelled + 48 unlabelled images, EMA 0.99 (0.999
        # would still mostly hold the initial weights after 300 steps) and for the same reason
        # BatchNorm momentum 0.01 (FixMatch-pytorch's 0.001 would leave the running statistics
        # at a quarter of the way), 200 test images per corruption and severity.
        "quick": _SEMISUP_QUICK,
        # The paper: WRN-28-2, 1,024 epochs of 1,024 steps, B = 64, mu = 7, EMA 0.999, all test
        # images, 250 / 1,000 / 4,000 labels. Days per run on a GPU: checkpointed every epoch.
        "paper": {
            **_SEMISUP_QUICK,
            "LABELS": [250, 1000, 4000],
            "EPOCHS": 1024,
            "EVAL_STEP": 1024,
            "BATCH_SIZE": 64,
            "MU": 7,
            "EMA_DECAY": 0.999,
            "TEST_SUBSET": 0,
            "MODEL_KWARGS": {},
        },
    },
}

#: GTA5 -> Cityscapes segmentation (§4.2, Tables 3 and 20): the paper's text (FCN-ResNet50,
#: 80 epochs, batch 16, ImageNet initialisation, random scale/flip/rotation/crop 713 x 713,
#: 2-instance CrossNorm with style crop) and, where the text is silent, its released configuration
#: (``segmentation/config/gtav/gtav_fcn50_cnsn.yaml``): base lr 0.01 (heads x10), poly power
#: 0.9, momentum 0.9, weight decay 1e-4, auxiliary loss 0.4, scale 0.5-2, rotation +-10 degrees,
#: CN on in half of the steps (``mix_prob``) with one unit (``active_num``), box threshold 0.1.
#: ``eval_window``: 713-pixel sliding window (0 = whole images). ``backbone_weights``: a local
#: ImageNet ResNet-50 state dict ("" = from scratch, since nothing is downloaded).
SEGMENTATION: dict[str, Any] = {
    "epochs": 80,
    "batch_size": 16,
    "lr": 0.01,
    "head_lr_mult": 10.0,
    "power": 0.9,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "aux_weight": 0.4,
    "crop_size": 713,
    "scale": (0.5, 2.0),
    "rotate": (-10.0, 10.0),
    # released RandomGaussianBlur (util/transform.py, after scale and rotation in train_cnsn.py):
    # OpenCV's 5 x 5 kernel with sigma 0 on half of the images; blur_prob 0 turns it off
    "blur_prob": 0.5,
    "blur_kernel": 5,
    "cn_prob": 0.5,
    "active_num": 1,
    "instances": 2,
    "beta": 1.0,
    "threshold": 0.1,
    # False: CrossNorm after every bottleneck of blocks 1-4 only, the released config
    # (gtav_fcn50_cnsn.yaml, block_idxs 1_2_3_4, no block 0); True adds one on the input images,
    # as the caption of the paper's Figure 14 says ("both image and feature level")
    "image_cn": False,
    "depth": 50,
    "width": 64,
    "eval_window": 713,
    # "zero": mIoU over all 19 classes, one absent from labels and predictions counting 0 (the
    # released validate() in train_cnsn.py); "skip": over the classes present only
    "miou_absent": "zero",
    "backbone_weights": "",
}

_SEGMENTATION_QUICK: dict[str, Any] = {
    "DATASET": "proxy",
    "METHODS": ["baseline", "sn", "cn", "cn_crop", "sncn", "sncn_crop"],
    "SEEDS": [0],
    "EPOCHS": 8,
    "BATCH_SIZE": 16,
    "LR": 0.01,
    "CROP_SIZE": 64,
    "IMAGE_SIZE": [64, 128],
    "TRAIN_IMAGES": 1024,
    "TEST_IMAGES": 100,
    "DEPTH": 14,
    "WIDTH": 16,
    "CN_PROB": 0.5,
    "ACTIVE_NUM": 1,
    "EVAL_WINDOW": 0,
    "BACKBONE_WEIGHTS": "",
}
NOTEBOOKS["05_segmentation"] = {
    # The proxy (generated street scenes), six small FCNs (ResNet-14 of bottlenecks, width 16),
    # 8 epochs of 1,024 scenes, on a 2-core CPU within 10 minutes. A test of the style gap, not
    # of GTA5 -> Cityscapes.
    "quick": _SEGMENTATION_QUICK,
    # The paper: GTA5's quarter -> Cityscapes val, FCN-ResNet50, 80 epochs, batch 16, 713 crops,
    # sliding-window evaluation (frames kept at 1052 x 1914, GTA5's size; see the notebook).
    "paper": {
        **_SEGMENTATION_QUICK,
        "DATASET": "gta5",
        "EPOCHS": 80,
        "CROP_SIZE": 713,
        "IMAGE_SIZE": [1052, 1914],
        "TRAIN_IMAGES": 0,
        "TEST_IMAGES": 0,
        "DEPTH": 50,
        "WIDTH": 64,
        "EVAL_WINDOW": 713,
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
# Notebook parameters: names, types and values checked before any work
# ---------------------------------------------------------------------------------------------

#: Notebook parameters whose value None means "the paper's" (the released scripts' value, which
#: the notebook's parameters cell names). Nowhere else is None a value, and 0 never means it.
PAPER_WHEN_NONE: dict[str, tuple[str, ...]] = {
    "01_cifar_c": ("EPOCHS", "BATCH_SIZE"),
    "02_ablations": ("EPOCHS", "BATCH_SIZE"),
    "07_visualization": ("BATCH_SIZE",),
    "03_imagenet_c": ("BATCH_SIZE",),
}

_Rule = tuple[str, Callable[[Any], bool]]


def _at_least(low: int) -> _Rule:
    return f"at least {low}", lambda v: v >= low


def _between(low: float, high: float) -> _Rule:
    return f"between {low} and {high}", lambda v: low <= v <= high


def _ints_at_least(low: int, length: int | None = None) -> _Rule:
    size = f"{length}" if length else "a non-empty list of"
    return (
        f"{size} ints of at least {low}",
        lambda v: (
            (len(v) == length if length else len(v) > 0)
            and all(isinstance(x, int) and x >= low for x in v)
        ),
    )


_NONEMPTY: _Rule = ("a non-empty list", lambda v: len(v) > 0)
_POSITIVE = (
    "EPOCHS", "BATCH_SIZE", "EVAL_STEP", "MU", "ITERATIONS", "LR_STEP", "N_CONTENT", "N_STYLE",
    "CROP_DRAWS", "DEPTH", "WIDTH", "CROP_SIZE", "MAX_VOCAB", "ACTIVE_NUM", "CONCURRENT",
)  # fmt: skip
_COUNTS = (  # may be 0: all images/tokens, whole images, any finished run (SN_EPOCHS), seed 0
    "TRAIN_SUBSET", "TEST_SUBSET", "C_SUBSET", "TRAIN_PER_CLASS", "VAL_PER_CLASS", "TRAIN_IMAGES",
    "TEST_IMAGES", "MAX_LEN", "EVAL_WINDOW", "SN_EPOCHS", "SEED",
)  # fmt: skip

#: What each notebook parameter's value must satisfy beyond its declared type, by name (a name
#: means the same in every notebook). Counts where 0 means "all" (the cells say so) may be 0.
PARAMETER_RULES: dict[str, _Rule] = {
    **{name: _at_least(1) for name in _POSITIVE},
    **{name: _at_least(0) for name in _COUNTS},
    **{name: _NONEMPTY for name in ("DATASETS", "BACKBONES", "METHODS", "VARIANTS", "STUDIES")},
    "SN_CORRUPTIONS": _NONEMPTY,
    "SEEDS": _ints_at_least(0),
    "LADDER_SEEDS": _ints_at_least(0),
    "LADDER": (
        "a list of ints of at least 1 (may be empty)",
        lambda v: all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v),
    ),
    "LABELS": _ints_at_least(1),
    "LAYERS": _ints_at_least(1, 4),
    "IMAGE_SIZE": (
        "at least 1 (a list: [H, W], each at least 1)",
        lambda v: v >= 1 if isinstance(v, int) else _ints_at_least(1, 2)[1](v),
    ),
    "LR": ("above 0", lambda v: v > 0),
    "CN_PROB": _between(0, 1),
    "ADJUST_STRENGTH": _between(0, 1),
    "EMA_DECAY": ("at least 0 and below 1", lambda v: 0 <= v < 1),
    "SN_SEVERITY": _between(1, 5),
    "SAMPLE_C": _between(1, 1000),
}

#: Rules of one notebook that differ from :data:`PARAMETER_RULES`.
NOTEBOOK_RULES: dict[tuple[str, str], _Rule] = {}

_CIFAR_DATASETS = ("cifar10", "cifar100")
#: The names a parameter (a string, or each entry of a list) may take, per notebook: a tuple, or
#: ``"module:ATTRIBUTE"``, a registry whose entries (a dict's keys) are the names, imported when
#: checked.
PARAMETER_CHOICES: dict[str, dict[str, tuple[str, ...] | str]] = {
    "01_cifar_c": {
        "DATASETS": _CIFAR_DATASETS,
        "BACKBONES": "sncn.hparams:CIFAR_BACKBONES",
        "METHODS": "sncn.hparams:CIFAR_METHODS",
    },
    "02_ablations": {
        "DATASET": _CIFAR_DATASETS,
        "BACKBONE": "sncn.hparams:CIFAR_BACKBONES",
        "STUDIES": "sncn.experiments.ablations:WRN_STUDIES",
        "BACKBONE_TABLES": "sncn.hparams:CIFAR_BACKBONES",
        "BACKBONE_DATASET": _CIFAR_DATASETS,
    },
    "03_imagenet_c": {
        "METHODS": "sncn.experiments.imagenet_c:METHODS",
        "EVALUATION": ("auto", "imagenet-c", "generated"),
    },
    "04_semisupervised": {"VARIANTS": "sncn.experiments.semisupervised:VARIANTS"},
    "05_segmentation": {
        "DATASET": ("proxy", "gta5"),
        "METHODS": "sncn.experiments.segmentation:METHODS",
    },
    "06_sentiment": {"METHODS": "sncn.experiments.sentiment:METHODS"},
    "07_visualization": {
        "DATASET": _CIFAR_DATASETS,
        "CN_METHOD": "sncn.hparams:CIFAR_METHODS",
        "SN_METHOD": ("sn", "sncn", "sncn_consistency", "sncn_augmix"),  # methods with SN units
        "SN_CORRUPTIONS": "sncn.corruptions:CORRUPTIONS",
    },
}


def _choices(stem: str, name: str) -> tuple[str, ...] | None:
    """The valid names of parameter ``name`` of notebook ``stem`` (None: not a name)."""
    if name == "PROFILE":
        return PROFILES
    where = PARAMETER_CHOICES.get(stem, {}).get(name)
    if isinstance(where, str):
        module, attribute = where.split(":")
        where = tuple(getattr(importlib.import_module(module), attribute))
    return where


def _type_problem(value: Any, kind: Any, nullable: bool) -> str | None:
    """Why ``value`` is not of the declared type ``kind`` (None when it is)."""
    if value is None:
        return None if nullable else "None is not a value here"
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is list:
        ok = isinstance(value, (list, tuple))
    else:
        ok = not isinstance(kind, type) or isinstance(value, kind)
    if ok:
        return None
    got = f"got {type(value).__name__} {value!r}"
    if kind in (list, dict) and isinstance(value, str):
        got += " (papermill -p passes text; give lists and dicts as YAML: -y 'NAME: [...]')"
    elif kind is str:
        got += " (papermill -r NAME VALUE passes a value as text)"
    return f"must be {getattr(kind, '__name__', kind)}, {got}"


def check_parameters(stem: str, values: Mapping[str, Any], types: Mapping[str, Any]) -> None:
    """Raise a ValueError naming every invalid parameter value of notebook ``stem``.

    Each value must have its declared type (an int is a valid float, a tuple a valid list; None
    only where :data:`PAPER_WHEN_NONE` allows it), satisfy its rule (:data:`NOTEBOOK_RULES`, else
    :data:`PARAMETER_RULES`) and, for a name of a registry entry, be one
    (:data:`PARAMETER_CHOICES`; ``PROFILE`` one of :data:`PROFILES`).

    Args:
        stem: the notebook's name without ``.ipynb``.
        values: parameter name -> value.
        types: parameter name -> declared type (the parameters cell's annotations).
    """
    problems = []
    for name, kind in types.items():
        value = values[name]
        nullable = name in PAPER_WHEN_NONE.get(stem, ())
        problem = _type_problem(value, kind, nullable)
        if problem is None and value is not None:
            what, rule = NOTEBOOK_RULES.get((stem, name), PARAMETER_RULES.get(name, ("", None)))
            try:
                valid = rule is None or bool(rule(value))
            except TypeError:
                valid = False
            if not valid:
                problem = f"must be {what}, got {value!r}"
            elif (choices := _choices(stem, name)) is not None:
                wrong = [v for v in ([value] if isinstance(value, str) else value)
                         if v not in choices]  # fmt: skip
                if wrong:
                    problem = f"has unknown {wrong}; choose from {', '.join(choices)}"
        if problem and nullable:
            problem += "; None gives the paper's value" + (", 0 does not" if value == 0 else "")
        if problem:
            problems.append(f"{name} {problem}")
    if problems:
        raise ValueError(f"invalid parameters of {stem}:\n  " + "\n  ".join(problems))


def _injected_names(history: Sequence[str]) -> list[str]:
    """The names that papermill's injected cell assigned, from IPython's input history.

    The injected cell is the last input whose first line is ``# Parameters``, if no cell of
    annotated names (a parameters cell) ran after it.
    """
    for source in reversed(history):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        if source.lstrip().startswith("# Parameters\n"):
            return [
                target.id
                for node in tree.body
                if isinstance(node, ast.Assign)
                for target in node.targets
                if isinstance(target, ast.Name)
            ]
        if any(isinstance(node, ast.AnnAssign) for node in tree.body):
            return []
    return []


def resolve_parameters(
    stem: str,
    namespace: Mapping[str, Any],
    given: Iterable[str] | None = None,
    report: bool = True,
) -> dict[str, Any]:
    """A notebook's parameters under its profile, checked before any work.

    Called right after the parameters cell with the notebook's ``globals()``. The parameters are
    the names that cell declares with a type (``namespace["__annotations__"]``). ``PROFILE``
    picks the profile: its values (:data:`NOTEBOOKS`; none for ``smoke``, which is the cell
    itself) replace the cell's, except for the parameters given explicitly, which keep their
    value. A given name that is not a parameter (a misspelt ``-p EPOCH 3``), an unknown profile
    or an invalid value (:func:`check_parameters`) raises a ValueError that lists what is valid.

    Args:
        stem: the notebook's name without ``.ipynb``, its key in :data:`NOTEBOOKS`.
        namespace: the notebook's globals after the parameters cell (and papermill's injected
            cell): the annotations and the values.
        given: the names given explicitly. None: those that papermill's injected cell assigned,
            read from IPython's input history ``namespace["In"]`` (none without it).
        report: print the profile and the values given explicitly (the executed notebook then
            records them).

    Returns:
        Every parameter's value, for ``globals().update(...)``.
    """
    types = dict(namespace.get("__annotations__", {}))
    if not types:
        raise ValueError(
            f"{stem}: no parameters declared; call resolve_parameters right after the "
            "parameters cell, with globals()."
        )
    given = list(_injected_names(namespace.get("In", ())) if given is None else given)
    valid = ", ".join(types)
    unknown = [name for name in given if name not in types]
    if unknown:
        raise ValueError(
            f"unknown parameter(s) of {stem}: {', '.join(unknown)}. The parameters are: {valid}."
        )
    values = {name: namespace[name] for name in types}
    profile = check_profile(values["PROFILE"])
    preset = {k: v for k, v in notebook_parameters(stem, profile).items() if k != "PROFILE"}
    wrong = [name for name in preset if name not in types]
    if wrong:
        raise ValueError(
            f"sncn.hparams.NOTEBOOKS[{stem!r}][{profile!r}] sets {', '.join(wrong)}, not "
            f"parameters of {stem}. The parameters are: {valid}."
        )
    values.update({name: value for name, value in preset.items() if name not in given})
    check_parameters(stem, values, types)
    if report:
        explicit = [
            f"{name}={values[name]!r}"
            for name in given
            if name not in ("PROFILE", "RESULTS")
            and (name not in preset or preset[name] != values[name])
        ]
        source = "sncn.hparams.NOTEBOOKS" if preset else "the parameters cell"
        print(
            f"{stem}: profile {profile}, values from {source}"
            + (f"; given explicitly: {', '.join(explicit)}" if explicit else "")
            + "."
        )
    return values


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
        "lr", "momentum", "weight_decay"}``, and for AugMix methods ``"augmix_implementation"``:
        ``"reference"`` (the released code's and AugMix's sampling and float mixing, severity 3)
        or ``"torchvision"`` (torchvision's ``transforms.AugMix``); see
        :class:`sncn.data.augmix.AugMixViews`; or ``"device"`` (the reference's sampling and
        mixing on whole batches on the training device,
        :func:`sncn.data.augmix.augmix_views_batch`).
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
        # AugMix's views: "reference" as the released cifar.py (AugMixDataset); "torchvision" the
        # library transform; "device" the reference's sampling on whole batches on the device.
        # Only AugMix cells carry it, so other cells keep their run names.
        **({"augmix_implementation": "reference"} if trainer == "augmix" else {}),
    }
