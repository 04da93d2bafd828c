"""The four CIFAR backbones of the paper's Table 1, with SelfNorm/CrossNorm units placed by keyword.

AllConvNet, DenseNet, WideResNet and ResNeXt as defined in the AugMix repository
(google-research/augmix, whose hyper-parameters the paper follows), with the unit placements of the
paper's released code (amazon-science/crossnorm-selfnorm, ``models/cifar/*_cnsn.py``). Module and
parameter names mirror both, so the released checkpoints load with ``load_state_dict(strict=True)``
(see :func:`load_released_checkpoint` for the ``module.`` prefix of their DataParallel checkpoints)
and a plain model (``cnsn_type=None``) has AugMix's state-dict keys.

Every registered constructor takes the same placement keywords:

* ``cnsn_type``: ``"sn"``, ``"cn"``, ``"cnsn"`` (a :class:`~sncn.layers.CNSN` unit with SelfNorm,
  CrossNorm or both), ``"se"`` (squeeze-and-excitation, the SE rows of Table 7) or None (plain).
* ``pos``: where the unit sits in a cell; the valid values depend on the family (``*_POSITIONS``).
* ``blocks``: the stages whose cells get units, ``"all"`` or a subset of ``(1, 2, 3)`` (Table 6).
* ``image``: also apply a unit to the input images (Table 6, "Image").
* ``crop``, ``beta``, ``instances``, ``threshold``, ``order``, ``two_functions``, ``box``,
  ``pairing``: CrossNorm and SelfNorm settings passed to :class:`~sncn.layers.CNSN`;
  ``se_reduction`` for SE units.
* ``peer_sites`` (WRN, DenseNet, ResNeXt): where a peer of CrossNorm (``cnsn_type`` ``"mixstyle"``,
  ``"padain"`` or ``"dsu"``) goes: ``"crossnorm"``, CrossNorm's slots (``pos``, ``blocks``,
  ``image``), switched like CrossNorm; or ``"own"``, its own paper's sites
  (:func:`own_peer_sites`), on at every training step as in its paper (:func:`place_peers`).

Names in the paper versus the definitions used for its numbers:

* "DenseNet-BC (k=12, d=100)" is AugMix's ``densenet()``: depth 40, growth rate 12, no bottleneck
  and no compression (reduction 1), ~1.06M parameters. ``densenet(depth=100, bottleneck=True,
  reduction=0.5)`` builds a real DenseNet-BC-100 (~0.77M).
* "ResNeXt-29 (32x4)" is AugMix's ``resnext29()``: cardinality 4, base width 32 (~6.8M).
  ``resnext(cardinality=32, base_width=4)`` builds 32 groups of 4 channels; its convolutions have
  the same widths (128, 256, 512), with fewer parameters in the grouped 3x3 convolutions.

Reference:
    Tang et al., "SelfNorm and CrossNorm for Out-of-Distribution Robustness": Section 4.1, Table 1,
    appendix Tables 5-15 and Figures 8-10.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sncn.layers import CNSN, wrap_output
from sncn.models import register_model
from sncn.models.released import load_released_checkpoint
from sncn.peers import DSU, MixStyle, PermutedAdaIN

__all__ = [
    "ALLCONV_POSITIONS",
    "DENSENET_POSITIONS",
    "OWN_SITES",
    "PEER_SITES",
    "RESIDUAL_POSITIONS",
    "UNIT_TYPES",
    "AllConvNet",
    "CifarResNeXt",
    "DenseNet",
    "SqueezeExcitation",
    "UnitSpec",
    "WideResNet",
    "allconv",
    "densenet",
    "load_released_checkpoint",
    "own_peer_sites",
    "place_peers",
    "resnext",
    "wrn",
]

UNIT_TYPES = ("sn", "cn", "cnsn", "se", "mixstyle", "padain", "dsu")
#: the peers of CrossNorm (:mod:`sncn.peers`), at their papers' default settings
PEERS = {"mixstyle": MixStyle, "padain": PermutedAdaIN, "dsu": DSU}
#: where a peer goes (``peer_sites``): CrossNorm's slots, or its own paper's sites
PEER_SITES = ("crossnorm", "own")
RESIDUAL_POSITIONS = ("pre", "residual", "identity", "post")  # Figure 8; WRN and ResNeXt
ALLCONV_POSITIONS = (1, 2, 3)  # Figure 10: after the convolution, the BatchNorm, the GELU
# Figure 10 / Tables 8-15 names, then the released code's names (conv2_post: bottleneck only).
DENSENET_POSITIONS = ("pre", "post", "conv1_pre", "conv1_post", "conv2_post")
STAGES = (1, 2, 3)


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation: channel gates from globally pooled features (the SE of Table 7).

    ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``; ``fc1`` maps C to ``max(1, C // reduction)``.
    Unlike SelfNorm, SE mixes channels (O(C^2) parameters) and sees only the mean.

    Args:
        num_channels: C of the ``(N, C, H, W)`` input.
        reduction: channel reduction ratio of the bottleneck (Hu et al.: 16).

    Reference:
        Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018; Table 7 of the paper.
    """

    def __init__(self, num_channels: int, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}.")
        hidden = max(1, num_channels // reduction)
        self.num_channels = num_channels
        self.fc1 = nn.Linear(num_channels, hidden)
        self.fc2 = nn.Linear(hidden, num_channels)

    def forward(self, x: Tensor) -> Tensor:
        """Gate ``x`` ``(N, C, H, W)`` channel-wise; same shape out."""
        s = x.mean(dim=(2, 3))  # (N, C, H, W) -> (N, C)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))  # (N, C)
        return x * gate[:, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_channels}, hidden={self.fc1.out_features}"


def unit_module_ids(model: nn.Module) -> set[int]:
    """``id`` of every module inside an SN/CN (``CNSN``) or SE unit of ``model``: what a
    backbone's weight initialisation leaves alone (the units initialise themselves)."""
    units = (m for m in model.modules() if isinstance(m, (CNSN, SqueezeExcitation)))
    return {id(m) for unit in units for m in unit.modules()}


@dataclass(frozen=True)
class UnitSpec:
    """Which unit goes into the cells of a CIFAR model, in which stages, with which settings.

    Built by the registered constructors from their keywords (see the module docstring); kept on
    the model as ``model.unit_spec``. ``pos`` is not part of it: its choices depend on the family.

    Args:
        cnsn_type: ``"sn"``, ``"cn"``, ``"cnsn"``, ``"se"``, a peer of CrossNorm (``"mixstyle"``,
            ``"padain"``, ``"dsu"``: :mod:`sncn.peers`, in the CN slots; at its own sites see
            ``peer_sites``) or None (no unit).
        blocks: ``"all"``, one stage or several from (1, 2, 3) whose cells get a unit
            (stored as a sorted tuple).
        image: also apply a unit to the input images (not for ``"se"``).
        crop, beta, instances, threshold, order, two_functions, box, pairing: see
            :class:`~sncn.layers.CNSN` (box: the crop-box sampler, pairing: how 2-instance
            CrossNorm pairs samples; both default to the released code's).
        se_reduction: reduction ratio of SE units.
    """

    cnsn_type: str | None = None
    blocks: tuple[int, ...] = STAGES
    image: bool = False
    crop: str = "neither"
    beta: float = 1.0
    instances: int = 2
    threshold: float = 0.1
    order: str = "cn-sn"
    two_functions: bool = False
    box: str = "released"
    pairing: str = "permutation"
    se_reduction: int = 16

    def __post_init__(self) -> None:
        if self.cnsn_type is not None and self.cnsn_type not in UNIT_TYPES:
            raise ValueError(
                f"unknown cnsn_type {self.cnsn_type!r}; choose one of {UNIT_TYPES} or None."
            )
        object.__setattr__(self, "blocks", _stages(self.blocks))
        if self.cnsn_type == "se" and self.image:
            raise ValueError("an image-space unit must be 'sn', 'cn' or 'cnsn', not 'se'.")
        if self.cnsn_type is not None and not (self.blocks or self.image):
            raise ValueError(
                f"cnsn_type={self.cnsn_type!r} with blocks=() and image=False places no unit; "
                "choose blocks from (1, 2, 3) or set image=True."
            )
        if self.cnsn_type is not None:  # validate the CN/SN settings now, not at the first cell
            self.build(2)

    @property
    def attr(self) -> str:
        """Attribute name of a cell's unit: ``"cnsn"`` (the released code's) or ``"se"``."""
        return "se" if self.cnsn_type == "se" else "cnsn"

    def in_stage(self, stage: int) -> bool:
        """Whether the cells of ``stage`` get a unit."""
        return self.cnsn_type is not None and stage in self.blocks

    def build(self, num_channels: int) -> nn.Module:
        """A fresh unit for ``num_channels`` channels."""
        if self.cnsn_type == "se":
            return SqueezeExcitation(num_channels, self.se_reduction)
        if self.cnsn_type in PEERS:
            return PEERS[self.cnsn_type](num_channels)
        return CNSN(
            num_channels,
            cn="cn" in self.cnsn_type,
            sn="sn" in self.cnsn_type,
            order=self.order,
            instances=self.instances,
            crop=self.crop,
            beta=self.beta,
            threshold=self.threshold,
            two_functions=self.two_functions,
            box=self.box,
            pairing=self.pairing,
        )


def _stages(blocks: str | int | Iterable[int], stages: tuple[int, ...] = STAGES) -> tuple[int, ...]:
    """``"all"``, one stage or an iterable of ``stages`` -> sorted tuple of stages."""
    if isinstance(blocks, str):
        if blocks != "all":
            raise ValueError(f"blocks must be 'all' or a subset of {stages}, got {blocks!r}.")
        return stages
    chosen = (blocks,) if isinstance(blocks, int) else tuple(blocks)
    if any(b not in stages for b in chosen):
        raise ValueError(f"blocks must be 'all' or a subset of {stages}, got {blocks!r}.")
    return tuple(sorted(set(chosen)))


def _check_pos(pos, valid: tuple, family: str):
    if pos not in valid:
        raise ValueError(f"unknown pos {pos!r} for {family}; choose one of {valid}.")
    return pos


class _Cell(nn.Module):
    """A cell with an optional unit stored as ``self.cnsn`` or ``self.se`` (see UnitSpec.attr)."""

    unit_attr: str | None = None

    def _add_unit(self, spec: UnitSpec | None, num_channels: int) -> None:
        if spec is not None:
            self.unit_attr = spec.attr
            self.add_module(spec.attr, spec.build(num_channels))

    def unit(self, x: Tensor) -> Tensor:
        return getattr(self, self.unit_attr)(x)


class _CifarNet(nn.Module):
    """Shared top level: the optional image-space unit and AugMix's initialisation."""

    def _add_image_unit(self, spec: UnitSpec) -> None:
        self.unit_spec = spec
        self.image_cnsn = spec.build(3) if spec.cnsn_type is not None and spec.image else None

    def _image(self, x: Tensor) -> Tensor:
        """(N, 3, 32, 32): the image-space unit (Table 6, "Image"), if any."""
        return x if self.image_cnsn is None else self.image_cnsn(x)

    def _init_backbone(self, kaiming_linear: bool = False) -> None:
        """AugMix's initialisation of the backbone; units keep their own."""
        inside_units = unit_module_ids(self)
        for m in self.modules():
            if id(m) in inside_units:
                continue
            if isinstance(m, nn.Conv2d):  # He normal, fan-out
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                if kaiming_linear:
                    nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------
# AllConvNet
# --------------------------------------------------------------------------------------------


class SigmoidGELU(nn.Module):
    """AugMix's GELU: the sigmoid approximation ``x * sigmoid(1.702 x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class AllConvNet(_CifarNet):
    """All Convolutional Network as in AugMix (9 conv-BN-GELU layers in one ``nn.Sequential``).

    ``features`` is the released code's flat ``nn.Sequential``: each convolution is followed by
    BatchNorm and GELU, and a unit is inserted into that triple at index ``pos`` (1: after the
    convolution, 2: after the BatchNorm, 3: after the GELU; Figure 10), so the indices (state-dict
    keys) of the later layers shift as in the released code. Stages for ``blocks``: 1 = the three
    ``width1`` convolutions, 2 = the three ``width2`` ones, 3 = the 3x3 valid and two 1x1
    ("NIN") convolutions.

    Args:
        num_classes: output classes.
        width1, width2: channels of the first and second stage (AugMix: 96, 192).
        pos: unit position in each conv-BN-GELU triple, 1, 2 or 3.
        unit: the units (None: plain).

    Shapes: ``(N, 3, 32, 32) -> (N, num_classes)`` (the last 1x1 convolution pads to 10x10 and the
    8x8 average pool takes its top-left window, as in AugMix).

    Reference:
        Springenberg et al., "Striving for Simplicity: The All Convolutional Net", 2014; AugMix
        ``models/cifar/allconv.py``; released ``models/cifar/allconv_cnsn.py``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        width1: int = 96,
        width2: int = 192,
        pos: int | str = 1,
        unit: UnitSpec | None = None,
    ) -> None:
        super().__init__()
        unit = unit or UnitSpec()
        if isinstance(pos, str) and pos.isdigit():
            pos = int(pos)  # the released scripts pass "1", "2", "3"
        self.pos = _check_pos(pos, ALLCONV_POSITIONS, "allconv")
        self._add_image_unit(unit)
        # (out_channels, kernel, padding, stage) per convolution; "Md" = max-pool + dropout.
        cfg = [(width1, 3, 1, 1)] * 3 + ["Md"] + [(width2, 3, 1, 2)] * 3 + ["Md"]
        cfg += [(width2, 3, 0, 3), (width2, 1, 1, 3), (width2, 1, 1, 3)]
        layers: list[nn.Module] = []
        in_channels = 3
        for v in cfg:
            if v == "Md":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2), nn.Dropout(p=0.5)]
                continue
            out_channels, kernel, padding, stage = v
            triple = [
                nn.Conv2d(in_channels, out_channels, kernel, padding=padding),
                nn.BatchNorm2d(out_channels),
                SigmoidGELU(),
            ]
            if unit.in_stage(stage):
                triple.insert(self.pos, unit.build(out_channels))
            layers += triple
            in_channels = out_channels
        layers.append(nn.AvgPool2d(kernel_size=8))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width2, num_classes)
        self._init_backbone()

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 3, 32, 32) -> (N, num_classes)``."""
        x = self.features(self._image(x))  # (N, width2, 1, 1)
        return self.classifier(x.flatten(1))


# --------------------------------------------------------------------------------------------
# DenseNet
# --------------------------------------------------------------------------------------------


class DenseLayer(_Cell):
    """One dense cell: BN-ReLU-conv (bottleneck: 1x1 to 4k, then 3x3 to k), concatenated to x.

    Unit positions (released names): ``conv1_pre`` on the cell's input ``x`` (its output is also
    what gets concatenated, so it restyles the whole feature stack), ``conv1_post`` after the
    first convolution, ``conv2_post`` after the second (bottleneck only).
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bottleneck: bool,
        pos: str,
        unit: UnitSpec | None,
    ) -> None:
        super().__init__()
        inter = 4 * growth_rate if bottleneck else growth_rate
        self.bn1 = nn.BatchNorm2d(in_channels)
        if bottleneck:
            self.conv1 = nn.Conv2d(in_channels, inter, kernel_size=1, bias=False)
            self.bn2 = nn.BatchNorm2d(inter)
            self.conv2 = nn.Conv2d(inter, growth_rate, kernel_size=3, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, growth_rate, kernel_size=3, padding=1, bias=False)
            self.bn2 = self.conv2 = None
        self.pos = pos if unit is not None else None
        channels = {"conv1_pre": in_channels, "conv1_post": inter, "conv2_post": growth_rate}
        self._add_unit(unit, channels[pos])

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> (N, C + growth_rate, H, W)``."""
        if self.pos == "conv1_pre":
            x = self.unit(x)
        out = self.conv1(F.relu(self.bn1(x)))
        if self.pos == "conv1_post":
            out = self.unit(out)
        if self.conv2 is not None:
            out = self.conv2(F.relu(self.bn2(out)))
            if self.pos == "conv2_post":
                out = self.unit(out)
        return torch.cat((x, out), dim=1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv, then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> (N, C', H / 2, W / 2)``."""
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2)


class DenseNet(_CifarNet):
    """DenseNet for CIFAR: three dense stages (``dense1..3``) joined by transitions.

    Args:
        num_classes: output classes.
        depth: total depth; ``(depth - 4) / 3`` cells per stage (``/ 6`` with bottleneck).
        growth_rate: k, the channels each cell adds.
        bottleneck: 1x1 bottleneck convolutions (the "B" of DenseNet-BC).
        reduction: channel compression of the transitions (the "C"; 1 = none).
        pos: ``"pre"`` (the released ``conv1_pre``: the unit on the cell's input, before its
            BN-ReLU-conv) or ``"post"`` (the unit on the cell's new features, before they are
            concatenated: released ``conv1_post`` without bottleneck, ``conv2_post`` with it);
            the released names are accepted too.
        unit: the units (None: plain).

    The tables' "Pre"/"Post" (and the "Conv1 Pre" rows of Tables 12-15) are the released
    ``conv1_pre``/``conv1_post``: the released run scripts and the numbers repeated between
    Tables 8-11 and 14-15 agree on it (Figure 10's caption words it the other way round).

    Reference:
        Huang et al., "Densely Connected Convolutional Networks", CVPR 2017; AugMix
        ``third_party/ResNeXt_DenseNet/models/densenet.py``; released
        ``models/cifar/densenet_cnsn.py``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        depth: int = 40,
        growth_rate: int = 12,
        bottleneck: bool = False,
        reduction: float = 1.0,
        pos: str = "pre",
        unit: UnitSpec | None = None,
    ) -> None:
        super().__init__()
        unit = unit or UnitSpec()
        pos = _check_pos(pos, DENSENET_POSITIONS, "densenet")
        pos = {"pre": "conv1_pre", "post": "conv2_post" if bottleneck else "conv1_post"}.get(
            pos, pos
        )
        if pos == "conv2_post" and not bottleneck:
            raise ValueError("pos='conv2_post' needs bottleneck=True; choose 'pre' or 'post'.")
        per_stage = (depth - 4) // (6 if bottleneck else 3)
        if per_stage < 1 or (depth - 4) % (6 if bottleneck else 3):
            raise ValueError(
                f"depth {depth} does not fit DenseNet: need depth = 4 + "
                f"{6 if bottleneck else 3} * cells per stage."
            )
        self.pos = pos
        self._add_image_unit(unit)
        channels = 2 * growth_rate
        self.conv1 = nn.Conv2d(3, channels, kernel_size=3, padding=1, bias=False)
        for stage in STAGES:
            cells = []
            for _ in range(per_stage):
                stage_unit = unit if unit.in_stage(stage) else None
                cells.append(DenseLayer(channels, growth_rate, bottleneck, pos, stage_unit))
                channels += growth_rate
            self.add_module(f"dense{stage}", nn.Sequential(*cells))
            if stage < 3:
                out_channels = int(math.floor(channels * reduction))
                self.add_module(f"trans{stage}", Transition(channels, out_channels))
                channels = out_channels
        self.bn1 = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        self._init_backbone()

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 3, 32, 32) -> (N, num_classes)``."""
        out = self.conv1(self._image(x))  # (N, 2k, 32, 32)
        out = self.trans1(self.dense1(out))  # (N, C1, 16, 16)
        out = self.trans2(self.dense2(out))  # (N, C2, 8, 8)
        out = F.relu(self.bn1(self.dense3(out)))  # (N, C3, 8, 8)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


# --------------------------------------------------------------------------------------------
# WideResNet
# --------------------------------------------------------------------------------------------


def _relu(x: Tensor, leaky_slope: float = 0.0) -> Tensor:
    """In-place ReLU, or leaky ReLU with negative slope ``leaky_slope`` when it is not 0."""
    if leaky_slope == 0:
        return F.relu(x, inplace=True)
    return F.leaky_relu(x, leaky_slope, inplace=True)


class WideBasicBlock(_Cell):
    """Pre-activation wide residual block (BN-ReLU-conv3x3 twice), released unit positions.

    ``pre``: at the start of the residual branch, ``residual``: at its end, ``identity``: on the
    shortcut (after the 1x1 projection where there is one), ``post``: after the addition. As in
    the released code, the first block of a stage (``in_planes != out_planes``) applies BN-ReLU to
    the block input before both branches, so there ``pre`` follows that BN-ReLU and the projection
    shortcut does not see the unit; elsewhere ``pre`` precedes ``bn1`` and the shortcut is the
    untouched input.

    With ``activate_before_residual=False``, a first block (``in_planes != out_planes``) feeds its
    untouched input to both branches and has no ``bn1`` (the FixMatch-pytorch WRN's blocks that
    open stages 2 and 3, where a BN-activation is computed and discarded). ``leaky_slope`` > 0
    turns every ReLU into a leaky ReLU of that slope; ``bn_momentum`` is the BatchNorm momentum.
    """

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        stride: int,
        drop_rate: float,
        pos: str,
        unit: UnitSpec | None,
        *,
        leaky_slope: float = 0.0,
        bn_momentum: float = 0.1,
        activate_before_residual: bool = True,
    ) -> None:
        super().__init__()
        self.is_in_equal_out = in_planes == out_planes
        self.preactivate = self.is_in_equal_out or activate_before_residual
        self.leaky_slope = leaky_slope
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=bn_momentum) if self.preactivate else None
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.conv_shortcut = (
            None
            if self.is_in_equal_out
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )
        self.pos = pos if unit is not None else None
        self._add_unit(unit, in_planes if pos == "pre" else out_planes)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W) -> (N, C_out, H / stride, W / stride)``."""
        if not self.is_in_equal_out and self.preactivate:
            x = _relu(self.bn1(x), self.leaky_slope)  # shared pre-activation of both branches
        out = self.unit(x) if self.pos == "pre" else x
        if self.is_in_equal_out:
            out = _relu(self.bn1(out), self.leaky_slope)
        out = _relu(self.bn2(self.conv1(out)), self.leaky_slope)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.is_in_equal_out else self.conv_shortcut(x)
        if self.pos == "residual":
            out = self.unit(out)
        elif self.pos == "identity":
            shortcut = self.unit(shortcut)
        out = shortcut + out
        return self.unit(out) if self.pos == "post" else out


class NetworkBlock(nn.Module):
    """One WRN stage: ``layer`` = ``nn.Sequential`` of :class:`WideBasicBlock` (released names)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layer = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(_CifarNet):
    """Wide residual network WRN-depth-k for CIFAR (pre-activation, AugMix's definition).

    Args:
        num_classes: output classes.
        depth: total depth, ``6 n + 4`` with n blocks per stage (40: 6 blocks, 18 in all).
        widen_factor: k; stage widths 16k, 32k, 64k.
        drop_rate: dropout between the two convolutions of a block (AugMix: 0).
        pos: ``"pre"``, ``"residual"``, ``"identity"`` or ``"post"`` (see
            :class:`WideBasicBlock`; Figure 8, Tables 8-11).
        unit: the units (None: plain).
        leaky_slope: negative slope of every activation; 0 is ReLU (AugMix and the released
            code), FixMatch-pytorch uses leaky ReLU 0.1.
        bn_momentum: momentum of every BatchNorm of the backbone (PyTorch's 0.1; FixMatch-pytorch:
            0.001, TensorFlow's decay 0.999).
        activate_before_residual: ``"all"`` or the stages (from 1, 2, 3) whose first block
            BN-activates its input for both branches; in the other stages that block feeds its
            input untouched to the residual branch and the projection (FixMatch-pytorch: stage 1
            only). Blocks with as many input as output channels always pre-activate.
        fc_init: ``"pytorch"`` (``nn.Linear``'s own weight initialisation, as AugMix) or
            ``"xavier_normal"`` (FixMatch-pytorch); the bias starts at 0 either way.

    Reference:
        Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016; AugMix
        ``third_party/WideResNet_pytorch/wideresnet.py``; released
        ``models/cifar/wideresnet_cnsn.py``; for the options, kekmodel/FixMatch-pytorch
        ``models/wideresnet.py``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        depth: int = 40,
        widen_factor: int = 2,
        drop_rate: float = 0.0,
        pos: str = "post",
        unit: UnitSpec | None = None,
        *,
        leaky_slope: float = 0.0,
        bn_momentum: float = 0.1,
        activate_before_residual: str | int | Iterable[int] = "all",
        fc_init: str = "pytorch",
    ) -> None:
        super().__init__()
        unit = unit or UnitSpec()
        self.pos = _check_pos(pos, RESIDUAL_POSITIONS, "wrn")
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"WRN depth must be 6 n + 4 with n >= 1, got {depth}.")
        if fc_init not in ("pytorch", "xavier_normal"):
            raise ValueError(f"fc_init must be 'pytorch' or 'xavier_normal', got {fc_init!r}.")
        if leaky_slope < 0:
            raise ValueError(f"leaky_slope must be >= 0, got {leaky_slope}.")
        try:
            preactivated = _stages(activate_before_residual)
        except ValueError:
            raise ValueError(
                f"activate_before_residual must be 'all' or a subset of {STAGES}, got "
                f"{activate_before_residual!r}."
            ) from None
        self.leaky_slope = leaky_slope
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self._add_image_unit(unit)
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        for stage in STAGES:
            stage_unit = unit if unit.in_stage(stage) else None
            blocks = [
                WideBasicBlock(
                    widths[stage - 1] if i == 0 else widths[stage],
                    widths[stage],
                    (1 if stage == 1 else 2) if i == 0 else 1,
                    drop_rate,
                    pos,
                    stage_unit,
                    leaky_slope=leaky_slope,
                    bn_momentum=bn_momentum,
                    activate_before_residual=stage in preactivated,
                )
                for i in range(n)
            ]
            self.add_module(f"block{stage}", NetworkBlock(blocks))
        self.bn1 = nn.BatchNorm2d(widths[3], momentum=bn_momentum)
        self.fc = nn.Linear(widths[3], num_classes)
        self._init_backbone()
        if fc_init == "xavier_normal":
            nn.init.xavier_normal_(self.fc.weight)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 3, 32, 32) -> (N, num_classes)``."""
        out = self.conv1(self._image(x))  # (N, 16, 32, 32)
        out = self.block3(self.block2(self.block1(out)))  # (N, 64k, 8, 8)
        out = _relu(self.bn1(out), self.leaky_slope)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


# --------------------------------------------------------------------------------------------
# ResNeXt
# --------------------------------------------------------------------------------------------


class ResNeXtBottleneck(_Cell):
    """ResNeXt bottleneck (type C: 1x1, grouped 3x3, 1x1 to 4 x planes), released unit positions.

    ``pre``: on the block input before the residual branch, ``residual``: after ``bn_expand``,
    ``identity``: on the shortcut, ``post``: after the addition and its ReLU. Two behaviours of
    the released code are kept so that its checkpoints and numbers carry over:

    * ``pre`` in a block with a projection (``downsample``): the projection also takes the unit's
      output; in the other blocks the shortcut is the untouched input.
    * ``identity`` in a block with a projection: the released code applies the unit to the input
      and then overwrites the result with the projection, so the unit (``inplanes`` channels) has
      no effect. Here it is built (its keys load, its CrossNorm counts for ``active_num``) but not
      computed: one inert unit per stage (the first block).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        cardinality: int,
        base_width: int,
        stride: int,
        downsample: nn.Module | None,
        pos: str,
        unit: UnitSpec | None,
    ) -> None:
        super().__init__()
        dim = int(math.floor(planes * (base_width / 64.0))) * cardinality
        out = planes * self.expansion
        self.conv_reduce = nn.Conv2d(inplanes, dim, 1, stride=1, padding=0, bias=False)
        self.bn_reduce = nn.BatchNorm2d(dim)
        self.conv_conv = nn.Conv2d(
            dim, dim, 3, stride=stride, padding=1, groups=cardinality, bias=False
        )
        self.bn = nn.BatchNorm2d(dim)
        self.conv_expand = nn.Conv2d(dim, out, 1, stride=1, padding=0, bias=False)
        self.bn_expand = nn.BatchNorm2d(out)
        self.downsample = downsample
        self.pos = pos if unit is not None else None
        self._add_unit(unit, inplanes if pos in ("pre", "identity") else out)

    @property
    def inert_unit(self) -> bool:
        """True for an ``identity`` unit whose output the projection shortcut discards."""
        return self.pos == "identity" and self.downsample is not None

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W) -> (N, 4 planes, H / stride, W / stride)``."""
        residual = x
        if self.pos == "pre":
            x = self.unit(x)
        out = F.relu(self.bn_reduce(self.conv_reduce(x)), inplace=True)
        out = F.relu(self.bn(self.conv_conv(out)), inplace=True)
        out = self.bn_expand(self.conv_expand(out))
        if self.pos == "residual":
            out = self.unit(out)
        if self.downsample is not None:
            residual = self.downsample(x)  # at "pre": the unit's output, as released
        elif self.pos == "identity":
            residual = self.unit(residual)
        out = F.relu(residual + out, inplace=True)
        return self.unit(out) if self.pos == "post" else out


class CifarResNeXt(_CifarNet):
    """ResNeXt for CIFAR (``stage_1..3``, 64-128-256 planes, 4x expansion), AugMix's definition.

    Args:
        num_classes: output classes.
        depth: ``9 n + 2`` with n blocks per stage (29: 3 blocks, 9 in all).
        cardinality: number of groups of the 3x3 convolutions (AugMix's ResNeXt-29: 4).
        base_width: channels per group at 64 planes (AugMix's ResNeXt-29: 32); a stage with p
            planes has ``floor(p * base_width / 64) * cardinality`` bottleneck channels.
        pos: ``"pre"``, ``"residual"``, ``"identity"`` or ``"post"`` (see
            :class:`ResNeXtBottleneck`; Figure 8, Tables 8-11).
        unit: the units (None: plain).

    Reference:
        Xie et al., "Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017;
        AugMix ``third_party/ResNeXt_DenseNet/models/resnext.py``; released
        ``models/cifar/resnext_cnsn.py``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        depth: int = 29,
        cardinality: int = 4,
        base_width: int = 32,
        pos: str = "post",
        unit: UnitSpec | None = None,
    ) -> None:
        super().__init__()
        unit = unit or UnitSpec()
        self.pos = _check_pos(pos, RESIDUAL_POSITIONS, "resnext")
        if (depth - 2) % 9 or depth < 11:
            raise ValueError(f"ResNeXt depth must be 9 n + 2 with n >= 1, got {depth}.")
        n = (depth - 2) // 9
        self.cardinality = cardinality
        self.base_width = base_width
        self._add_image_unit(unit)
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        inplanes = 64
        for stage, planes in zip(STAGES, (64, 128, 256), strict=True):
            stride = 1 if stage == 1 else 2
            out = planes * ResNeXtBottleneck.expansion
            downsample = None
            if stride != 1 or inplanes != out:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(out),
                )
            stage_unit = unit if unit.in_stage(stage) else None
            blocks = []
            for i in range(n):
                blocks.append(
                    ResNeXtBottleneck(
                        inplanes,
                        planes,
                        cardinality,
                        base_width,
                        stride if i == 0 else 1,
                        downsample if i == 0 else None,
                        pos,
                        stage_unit,
                    )
                )
                inplanes = out
            self.add_module(f"stage_{stage}", nn.Sequential(*blocks))
        self.classifier = nn.Linear(inplanes, num_classes)
        self._init_backbone(kaiming_linear=True)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 3, 32, 32) -> (N, num_classes)``."""
        x = F.relu(self.bn_1(self.conv_1_3x3(self._image(x))), inplace=True)  # (N, 64, 32, 32)
        x = self.stage_3(self.stage_2(self.stage_1(x)))  # (N, 1024, 8, 8)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --------------------------------------------------------------------------------------------
# Peers of CrossNorm at their own papers' sites
# --------------------------------------------------------------------------------------------

#: ``peer_sites="own"``: each peer at the analogue, in a CIFAR network, of its own paper's sites
#: (:func:`own_peer_sites` lists the modules).
OWN_SITES = {
    # pAdaIN (onuriel/PermutedAdaIN, the CIFAR-C ResNeXt and DenseNet of ``corruption/``): after
    # every convolution of the main path, before its BatchNorm; not after the projection
    # shortcuts (ResNeXt ``downsample``) nor DenseNet's transitions, which its code leaves out.
    "padain": "after every convolution but the shortcut projections (and DenseNet's transitions)",
    # MixStyle (mixstyle-release ``resnet50_fc512_ms12_a0d1``; Dassl ``resnet18_ms_l12``): after
    # residual stages 1 and 2, never the last; a CIFAR network has 3 stages.
    "mixstyle": "after stages 1 and 2",
    # DSU (lixiaotong97/DSU ``UResNet``, 6 sites): after the stem convolution, after the stem's
    # BN-ReLU-maxpool, after each of the 4 stages. WRN and DenseNet have a bare stem convolution
    # (the BN-ReLU is the first block's), so the first two coincide: 4 sites. ResNeXt's stem is
    # conv-BN-ReLU: 5 sites (its second site is the input of the first block).
    "dsu": "after the stem convolution and after each stage (ResNeXt: also after the stem's ReLU)",
}


class _ApplyChildToInput:
    """Forward pre-hook: pass a module's (first) input through its child ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, module: nn.Module, inputs: tuple) -> tuple:
        return (getattr(module, self.name)(inputs[0]), *inputs[1:])


def _conv_sites(model: nn.Module, skip: tuple[str, ...]) -> list[tuple[str, str, int]]:
    """Every ``nn.Conv2d`` of ``model`` whose name has no part in ``skip``, at its output."""
    return [
        (name, "output", m.out_channels)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not set(name.split(".")) & set(skip)
    ]


def own_peer_sites(model: nn.Module, peer: str) -> list[tuple[str, str, int]]:
    """The sites of ``peer`` in a CIFAR model (:data:`OWN_SITES`): ``(module name, where, C)``.

    ``where`` is ``"output"`` (the peer takes the module's output) or ``"input"`` (its input).
    Stage outputs are those of a stage's last cell, since a stage is an ``nn.Sequential``:

    * :class:`WideResNet`: pAdaIN after ``conv1`` and every block's ``conv1`` and ``conv2``;
      MixStyle after ``block1`` and ``block2``; DSU after ``conv1`` and ``block1..3``.
    * :class:`CifarResNeXt`: pAdaIN after ``conv_1_3x3`` and every block's ``conv_reduce``,
      ``conv_conv`` and ``conv_expand``; MixStyle after ``stage_1`` and ``stage_2``; DSU after
      ``conv_1_3x3``, on the input of ``stage_1`` (after the stem's BN-ReLU) and after
      ``stage_1..3``.
    * :class:`DenseNet`: pAdaIN after the stem ``conv1`` and every cell's convolutions; MixStyle
      after ``dense1`` and ``dense2`` (before the transitions); DSU after ``conv1`` and
      ``dense1..3``.

    Args:
        model: a :class:`WideResNet`, :class:`CifarResNeXt` or :class:`DenseNet`.
        peer: ``"mixstyle"``, ``"padain"`` or ``"dsu"``.

    Returns:
        The sites in forward order.
    """
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}; choose one of {tuple(PEERS)}.")
    if isinstance(model, WideResNet):
        stem = ("conv1", "output", model.conv1.out_channels)
        stages = [
            (f"block{s}", "output", getattr(model, f"block{s}").layer[-1].conv2.out_channels)
            for s in STAGES
        ]
        padain = _conv_sites(model, ("conv_shortcut",))
    elif isinstance(model, CifarResNeXt):
        stem = ("conv_1_3x3", "output", model.conv_1_3x3.out_channels)
        stages = [
            (f"stage_{s}.{len(stage) - 1}", "output", stage[-1].bn_expand.num_features)
            for s in STAGES
            for stage in [getattr(model, f"stage_{s}")]
        ]
        padain = _conv_sites(model, ("downsample",))
    elif isinstance(model, DenseNet):
        stem = ("conv1", "output", model.conv1.out_channels)
        stages = [
            (f"dense{s}.{len(dense) - 1}", "output", _dense_out_channels(dense[-1]))
            for s in STAGES
            for dense in [getattr(model, f"dense{s}")]
        ]
        padain = _conv_sites(model, ("trans1", "trans2"))
    else:
        raise ValueError(
            f"own peer sites are defined for WideResNet, CifarResNeXt and DenseNet, not "
            f"{type(model).__name__}; use peer_sites='crossnorm'."
        )
    if peer == "padain":
        return padain
    if peer == "mixstyle":
        return stages[:2]
    after_stem_relu = [("stage_1.0", "input", stem[2])] if isinstance(model, CifarResNeXt) else []
    return [stem, *after_stem_relu, *stages]


def _dense_out_channels(cell: DenseLayer) -> int:
    """Channels of a dense cell's output: its input plus the growth rate."""
    last = cell.conv2 if cell.conv2 is not None else cell.conv1
    return cell.bn1.num_features + last.out_channels


def place_peers(model: nn.Module, peer: str) -> nn.Module:
    """Put ``peer`` at its own paper's sites (:func:`own_peer_sites`) of ``model``, in place.

    Each site gets its own layer at its paper's defaults with ``switched=False``: on at every
    training forward, each applying its paper's probability ``p`` on its own (drawn from torch's
    generator), the identity in ``eval()``; :func:`sncn.layers.crossnorm_step` does not affect
    it. The layer becomes the child ``peer`` of the site's module (``"<peer>_input"`` for an input
    site), applied by a forward (pre-)hook, so the backbone's state-dict keys do not change.

    Args:
        model: a :class:`WideResNet`, :class:`CifarResNeXt` or :class:`DenseNet` without units.
        peer: ``"mixstyle"``, ``"padain"`` or ``"dsu"``.

    Returns:
        ``model``.
    """
    for name, where, channels in own_peer_sites(model, peer):
        module = model.get_submodule(name)
        layer = PEERS[peer](channels, switched=False)
        if where == "output":
            wrap_output(module, layer, peer)
        else:
            module.add_module(f"{peer}_input", layer)
            module.register_forward_pre_hook(_ApplyChildToInput(f"{peer}_input"))
    return model


def _with_peer_sites(make: Callable[..., _CifarNet], unit: dict, peer_sites: str) -> _CifarNet:
    """``make(unit=UnitSpec(**unit))``, or with ``peer_sites="own"`` a plain model from ``make``
    with the peer ``unit["cnsn_type"]`` placed by :func:`place_peers`."""
    spec = UnitSpec(**unit)
    if peer_sites not in PEER_SITES:
        raise ValueError(f"peer_sites must be one of {PEER_SITES}, got {peer_sites!r}.")
    if peer_sites == "crossnorm":
        model = make(unit=spec)
    elif spec.cnsn_type not in PEERS:
        raise ValueError(
            f"peer_sites='own' needs a peer of CrossNorm as cnsn_type {tuple(PEERS)}, got "
            f"{spec.cnsn_type!r}."
        )
    elif spec.image or spec.blocks != STAGES:
        raise ValueError("peer_sites='own' places the peer itself: leave blocks and image unset.")
    else:
        model = place_peers(make(unit=UnitSpec()), spec.cnsn_type)
        model.unit_spec = spec
    model.peer_sites = peer_sites
    return model


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@register_model
def allconv(
    num_classes: int = 10, pos: int | str = 1, width1: int = 96, width2: int = 192, **unit
) -> AllConvNet:
    """AllConvNet as in AugMix (~1.4M parameters).

    Args:
        num_classes: output classes.
        pos: unit position 1, 2 or 3 (after conv, BN, GELU; released CNSN scripts: 1).
        width1, width2: stage widths (96, 192).
        **unit: placement and unit keywords (see :class:`UnitSpec`): ``cnsn_type``, ``blocks``,
            ``image``, ``crop``, ``beta``, ``instances``, ``threshold``, ``order``,
            ``two_functions``, ``se_reduction``.

    Returns:
        An :class:`AllConvNet`.
    """
    return AllConvNet(num_classes, width1, width2, pos, UnitSpec(**unit))


@register_model
def densenet(
    num_classes: int = 10,
    pos: str = "pre",
    depth: int = 40,
    growth_rate: int = 12,
    bottleneck: bool = False,
    reduction: float = 1.0,
    peer_sites: str = "crossnorm",
    **unit,
) -> DenseNet:
    """DenseNet as in AugMix: depth 40, k = 12, no bottleneck or compression (~1.06M parameters).

    This is the network behind the paper's "DenseNet-BC (k=12, d=100)"; a real DenseNet-BC-100 is
    ``depth=100, bottleneck=True, reduction=0.5`` (~0.77M).

    Args:
        num_classes: output classes.
        pos: ``"pre"`` or ``"post"`` (released ``conv1_pre``, ``conv1_post``/``conv2_post``; the
            released names are accepted too; released CNSN scripts: ``"pre"``).
        depth, growth_rate, bottleneck, reduction: see :class:`DenseNet`.
        peer_sites: ``"crossnorm"`` (a peer ``cnsn_type`` in CrossNorm's slots) or ``"own"``
            (at its own paper's sites, :func:`own_peer_sites`; ``pos`` is then unused).
        **unit: placement and unit keywords (see :class:`UnitSpec`): ``cnsn_type``, ``blocks``,
            ``image``, ``crop``, ``beta``, ``instances``, ``threshold``, ``order``,
            ``two_functions``, ``se_reduction``.

    Returns:
        A :class:`DenseNet`.
    """
    make = partial(DenseNet, num_classes, depth, growth_rate, bottleneck, reduction, pos)
    return _with_peer_sites(make, unit, peer_sites)


@register_model
def wrn(
    num_classes: int = 10,
    pos: str = "post",
    depth: int = 40,
    widen_factor: int = 2,
    drop_rate: float = 0.0,
    *,
    leaky_slope: float = 0.0,
    bn_momentum: float = 0.1,
    activate_before_residual: str | int | Iterable[int] = "all",
    fc_init: str = "pytorch",
    peer_sites: str = "crossnorm",
    **unit,
) -> WideResNet:
    """WideResNet as in AugMix, WRN-40-2 by default (~2.24M parameters).

    Table 7's SE rows: ``cnsn_type="se"`` with ``pos="residual"`` ("SE", the SE-ResNet
    placement) or ``pos="post"`` ("SE (post)"). FixMatch-pytorch's WRN (the FixMatch runs,
    :data:`sncn.hparams.FIXMATCH`): ``leaky_slope=0.1, bn_momentum=0.001,
    activate_before_residual=(1,), fc_init="xavier_normal"``.

    Args:
        num_classes: output classes.
        pos: ``"pre"``, ``"residual"``, ``"identity"`` or ``"post"`` (released CNSN scripts:
            ``"post"``).
        depth, widen_factor, drop_rate: see :class:`WideResNet`.
        leaky_slope, bn_momentum, activate_before_residual, fc_init: see :class:`WideResNet`
            (the defaults are AugMix's and the released code's).
        peer_sites: ``"crossnorm"`` (a peer ``cnsn_type`` in CrossNorm's slots) or ``"own"``
            (at its own paper's sites, :func:`own_peer_sites`; ``pos`` is then unused).
        **unit: placement and unit keywords (see :class:`UnitSpec`): ``cnsn_type``, ``blocks``,
            ``image``, ``crop``, ``beta``, ``instances``, ``threshold``, ``order``,
            ``two_functions``, ``se_reduction``.

    Returns:
        A :class:`WideResNet`.
    """
    make = partial(
        WideResNet,
        num_classes,
        depth,
        widen_factor,
        drop_rate,
        pos,
        leaky_slope=leaky_slope,
        bn_momentum=bn_momentum,
        activate_before_residual=activate_before_residual,
        fc_init=fc_init,
    )
    return _with_peer_sites(make, unit, peer_sites)


@register_model
def resnext(
    num_classes: int = 10,
    pos: str = "post",
    depth: int = 29,
    cardinality: int = 4,
    base_width: int = 32,
    peer_sites: str = "crossnorm",
    **unit,
) -> CifarResNeXt:
    """ResNeXt-29 as in AugMix: cardinality 4, base width 32 (~6.8M parameters).

    This is the network behind the paper's "ResNeXt-29 (32x4)"; 32 groups of width 4 are
    ``cardinality=32, base_width=4`` (~4.8M).

    Args:
        num_classes: output classes.
        pos: ``"pre"``, ``"residual"``, ``"identity"`` or ``"post"`` (released CNSN scripts:
            ``"post"``).
        depth, cardinality, base_width: see :class:`CifarResNeXt`.
        peer_sites: ``"crossnorm"`` (a peer ``cnsn_type`` in CrossNorm's slots) or ``"own"``
            (at its own paper's sites, :func:`own_peer_sites`; ``pos`` is then unused).
        **unit: placement and unit keywords (see :class:`UnitSpec`): ``cnsn_type``, ``blocks``,
            ``image``, ``crop``, ``beta``, ``instances``, ``threshold``, ``order``,
            ``two_functions``, ``se_reduction``.

    Returns:
        A :class:`CifarResNeXt`.
    """
    make = partial(CifarResNeXt, num_classes, depth, cardinality, base_width, pos)
    return _with_peer_sites(make, unit, peer_sites)


# --------------------------------------------------------------------------------------------
# Released checkpoints
# --------------------------------------------------------------------------------------------
