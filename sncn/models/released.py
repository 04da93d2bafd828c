"""Loading the paper's released checkpoints into our models (one function for every family)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

__all__ = ["load_released_checkpoint"]


def load_released_checkpoint(model: nn.Module, checkpoint: Mapping) -> nn.Module:
    """Load a checkpoint of the paper's released ``cifar.py`` or ``imagenet.py`` (or a
    torchvision / IBN-Net state dict) into ``model``, strictly.

    The released scripts save ``{"state_dict": DataParallel(net).state_dict(), ...}``, whose keys
    start with ``module.``; the module names are otherwise ours, so the prefix is all that is
    removed. A plain state dict (torchvision's, IBN-Net's) loads as is.

    Args:
        model: a model built with the checkpoint's settings, e.g.
            ``create_model("wrn", num_classes=100, cnsn_type="cnsn", pos="post")``, or the
            released ResNet-50 + CNSN, ``create_model("resnet50", cnsn_type="sn", pos="post",
            image_cn=True)`` (its CN acts on the input and has no weights), or + CNSN + IBN +
            AugMix, ``create_model("resnet50", ibn="b", cnsn_type="sn", pos="residual",
            image_cn=True)``.
        checkpoint: the loaded file (a dict with ``"state_dict"``) or a state dict itself.

    Returns:
        ``model``, with the weights loaded.
    """
    state = checkpoint.get("state_dict", checkpoint)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model
