"""Trainers (``update(batch) -> dict``, ``predict(x)``) and the training loop."""

from sncn.train.base import (
    Trainer,
    compile_model,
    cosine_schedule,
    jsd_consistency,
    sgd,
    step_schedule,
    unwrap,
)
from sncn.train.consistency import AugMixTrainer, ConsistencyTrainer, ImageCrossNormAugMixTrainer
from sncn.train.fixmatch import FixMatchTrainer, ModelEMA
from sncn.train.loop import epoch_seed, fit

__all__ = [
    "AugMixTrainer",
    "ConsistencyTrainer",
    "FixMatchTrainer",
    "ImageCrossNormAugMixTrainer",
    "ModelEMA",
    "Trainer",
    "compile_model",
    "cosine_schedule",
    "epoch_seed",
    "fit",
    "jsd_consistency",
    "sgd",
    "step_schedule",
    "unwrap",
]
