"""FCN with a dilated ResNet backbone (output stride 8) and SelfNorm/CrossNorm units (Table 3).

The paper's segmentation model (§4.2) is torchvision's FCN-ResNet50: a ResNet-50 whose last two
stages are dilated instead of strided (output stride 8), an ``FCNHead`` on ``layer4`` and an
auxiliary ``FCNHead`` on ``layer3`` (weight 0.4 in the loss). The default follows the released
GTA5 configuration (amazon-science/crossnorm-selfnorm, ``segmentation/config/gtav/
gtav_fcn50_cnsn.yaml``: ``block_idxs: 1_2_3_4``, ``pos: residual``, ``cn_pos: post``), which places

* a SelfNorm in the *residual* position of every bottleneck of stages 1-4 (on the residual
  branch, after its last BatchNorm, before the addition);
* a 2-instance CrossNorm with *style* crop after every bottleneck of stages 1-4 (threshold 0.1,
  Beta(1, 1)), and none on the input images.

The caption of the paper's Figure 14 says CrossNorm is used "in both image and feature level";
``image_cn=True`` adds that image-level CrossNorm on the normalised input images (off by
default, as in the released configuration). All CrossNorms are switched from outside
(:func:`sncn.layers.crossnorm_step`; the released code: one unit on in half of the steps).

The paper's network size is the default (``depth=50, width=64``: torchvision's ``fcn_resnet50``
built with ``weights=None, weights_backbone=None``). ``depth`` and ``width`` only shrink it for CPU
profiles: the same blocks, dilations and heads with ``width`` base channels (64 in ResNet-50) and
fewer bottlenecks per stage.

Reference:
    Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015; He et al.,
    "Deep Residual Learning for Image Recognition", CVPR 2016; §4.2, Table 3 and Table 20 of the
    SNCN paper.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import Bottleneck
from torchvision.models.segmentation import fcn_resnet50
from torchvision.models.segmentation.fcn import FCN, FCNHead

from sncn.layers import CrossNorm, SelfNorm, wrap_output
from sncn.models import register_model

__all__ = ["DEPTHS", "FCNResNet", "dilated_resnet", "fcn_resnet"]

#: Bottlenecks per stage for each depth (50: ResNet-50; the others are small CPU variants).
DEPTHS = {14: (1, 1, 1, 1), 26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
UNIT_TYPES = ("sn", "cn", "cnsn")


def dilated_resnet(depth: int = 50, width: int = 64) -> nn.Module:
    """A ResNet of bottlenecks with stages 3 and 4 dilated (output stride 8), no classifier.

    Module names and initialisation are torchvision's (``conv1, bn1, relu, maxpool, layer1..4``),
    so at ``width=64`` an ImageNet ResNet-50 state dict loads into it.

    Args:
        depth: a key of :data:`DEPTHS`.
        width: base channels (stage ``k`` has ``width * 2**(k-1)`` bottleneck channels and
            ``4`` times that at its output).
    """
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}.")
    if width < 4:
        raise ValueError(f"width must be >= 4, got {width}.")
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv2d(3, width, 7, 2, 3, bias=False),
        bn1=nn.BatchNorm2d(width),
        relu=nn.ReLU(inplace=True),
        maxpool=nn.MaxPool2d(3, 2, 1),
    )
    inplanes, dilation = width, 1
    dilated = (False, False, True, True)  # torchvision's replace_stride_with_dilation, + stage 1
    for stage, (blocks, dilate) in enumerate(zip(DEPTHS[depth], dilated, strict=True), 1):
        planes = width * 2 ** (stage - 1)
        stride = 1 if stage == 1 else 2
        previous = dilation
        if dilate:  # stride -> dilation (output stride 8)
            dilation, stride = dilation * stride, 1
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False),
                                       nn.BatchNorm2d(out))  # fmt: skip
        stage_blocks = [Bottleneck(inplanes, planes, stride, downsample, dilation=previous)]
        stage_blocks += [Bottleneck(out, planes, dilation=dilation) for _ in range(blocks - 1)]
        layers[f"layer{stage}"] = nn.Sequential(*stage_blocks)
        inplanes = out
    net = nn.Sequential(layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


class FCNResNet(nn.Module):
    """An FCN (``net``, torchvision's :class:`~torchvision.models.segmentation.fcn.FCN`) behind
    an optional image-level CrossNorm.

    ``forward`` returns torchvision's dict: ``"out"`` (N, K, H, W) logits at the input size and,
    with the auxiliary head, ``"aux"``.
    """

    def __init__(self, net: FCN, image_cn: CrossNorm | None = None) -> None:
        super().__init__()
        self.image_cn = image_cn
        self.net = net

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.image_cn is not None:
            x = self.image_cn(x)  # (N, 3, H, W): identity unless switched on
        return self.net(x)


def load_backbone_weights(model: FCNResNet, path: str | os.PathLike) -> None:
    """Load an ImageNet ResNet state dict (torchvision's ``resnet50-*.pth``) into the backbone.

    The classifier (``fc.*``) is dropped; every other backbone parameter must match.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    hint = "it must be a torchvision ResNet state dict of the same depth and width"
    try:
        missing, unexpected = model.net.backbone.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{path} does not fit the backbone ({hint}): {error}") from None
    missing = [k for k in missing if ".selfnorm." not in k]  # units are new
    if missing or unexpected:
        raise ValueError(f"{path} does not fit the backbone ({hint}): missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}.")  # fmt: skip


@register_model
def fcn_resnet(
    num_classes: int = 19,
    depth: int = 50,
    width: int = 64,
    cnsn_type: str | None = None,
    blocks: tuple[int, ...] = (1, 2, 3, 4),
    image_cn: bool = False,
    crop: str = "style",
    instances: int = 2,
    beta: float = 1.0,
    threshold: float = 0.1,
    box: str = "released",
    pairing: str = "permutation",
    aux_loss: bool = True,
    backbone_weights: str | os.PathLike | None = None,
) -> FCNResNet:
    """FCN-ResNet (output stride 8) with SelfNorm (residual position) and CrossNorm (after blocks).

    Args:
        num_classes: output classes (19 Cityscapes train ids).
        depth: 50 for the paper (see :data:`DEPTHS`).
        width: 64 for the paper; smaller for CPU runs.
        cnsn_type: None (baseline), ``"sn"``, ``"cn"`` or ``"cnsn"``.
        blocks: stages (1-4) whose every bottleneck gets the units (paper: all four).
        image_cn: with CrossNorm, one more on the input images (the caption of the paper's
            Figure 14, "image and feature level"); False: feature level only, the released
            GTA5 configuration (``block_idxs: 1_2_3_4``, no block 0). The image-level unit is
            one more candidate among the units a CrossNorm step switches on.
        crop, instances, beta, threshold, box, pairing: CrossNorm settings (paper:
            ``"style"``, 2, 1, 0.1; box and pairing: see :func:`~sncn.layers.crossnorm`).
        aux_loss: the auxiliary head on ``layer3`` (the paper's code: weight 0.4).
        backbone_weights: a local ImageNet ResNet state dict for the backbone (paper: ImageNet
            initialised); None starts from scratch.

    Returns:
        The :class:`FCNResNet`.
    """
    if cnsn_type not in (None, *UNIT_TYPES):
        raise ValueError(f"cnsn_type must be None or one of {UNIT_TYPES}, got {cnsn_type!r}.")
    if not set(blocks) <= {1, 2, 3, 4}:
        raise ValueError(f"blocks must be a subset of (1, 2, 3, 4), got {blocks}.")
    if depth == 50 and width == 64:  # the paper's model, exactly torchvision's
        net = fcn_resnet50(weights=None, weights_backbone=None, num_classes=num_classes,
                           aux_loss=aux_loss)  # fmt: skip
    else:
        backbone = dilated_resnet(depth, width)
        returned = {"layer4": "out", **({"layer3": "aux"} if aux_loss else {})}
        out = width * 8 * Bottleneck.expansion
        net = FCN(
            IntermediateLayerGetter(backbone, return_layers=returned),
            FCNHead(out, num_classes),
            FCNHead(out // 2, num_classes) if aux_loss else None,
        )
    use_sn = cnsn_type in ("sn", "cnsn")
    use_cn = cnsn_type in ("cn", "cnsn")
    cn_kwargs = {"box": box, "pairing": pairing}
    for stage in sorted(blocks) if cnsn_type else ():
        for block in getattr(net.backbone, f"layer{stage}"):
            channels = block.bn3.num_features
            if use_sn:  # residual position: the branch's output before the addition
                wrap_output(block.bn3, SelfNorm(channels), name="selfnorm")
            if use_cn:  # after the block (its output, after the addition and ReLU)
                unit = CrossNorm(channels, instances, crop, beta, threshold, **cn_kwargs)
                wrap_output(block, unit, name="crossnorm")
    image = (
        CrossNorm(3, instances, crop, beta, threshold, **cn_kwargs) if use_cn and image_cn else None
    )
    model = FCNResNet(net, image)
    if backbone_weights:
        load_backbone_weights(model, backbone_weights)
    return model
