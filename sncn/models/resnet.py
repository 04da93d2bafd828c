"""ResNet-50 and IBN-Net for ImageNet, with SelfNorm/CrossNorm units placed by keyword.

The torchvision layout (``conv1``, ``bn1``, ``layer1..4``, ``fc``; bottlenecks with ``conv1..3``,
``bn1..3``, ``downsample``), so torchvision's ResNet-50 weights load into a plain model and the
paper's released checkpoints (amazon-science/crossnorm-selfnorm, ``models/imagenet/resnet_cnsn.py``
and ``resnet_ibn_cnsn.py``, whose names are torchvision's plus ``cnsn.selfnorm.*``) load into a
model with their settings; IBN-Net's names (``bn1.IN``, ``bn1.BN``, ``IN``) are those of
XingangPan/IBN-Net.

Keywords of :func:`resnet50`:

* ``cnsn_type``: ``"sn"``, ``"cn"``, ``"cnsn"`` (a :class:`~sncn.layers.CNSN` unit in every
  bottleneck), ``"se"``, a peer of CrossNorm, or None (plain); see :class:`~sncn.models.cifar.
  UnitSpec`, whose settings (``crop``, ``beta``, ``instances``, ...) pass through.
* ``pos``: the unit's place in a bottleneck, the four columns of Tables 17/18: ``"identity"``
  (on the shortcut), ``"pre"`` (pre-residual: on the block input, before the residual branch),
  ``"residual"`` (post-residual: after ``bn3``) and ``"post"`` (post-addition: after the addition,
  before the final ReLU).
* ``ibn``: None, ``"a"`` or ``"b"``: IBN-Net-a (half of ``bn1`` instance-normalised in the
  bottlenecks of stages 1-3) or IBN-Net-b (instance norm in the stem and after the addition of the
  last bottleneck of stages 1-2) (Pan et al., 2018).
* ``image_cn``: a CrossNorm on the input batch (``model.image_cnsn``), the paper's released
  ImageNet recipe (``train_cn_image`` in its ``imagenet.py``): there CN never runs inside the
  network, SN units (if any) do. It is switched like every CN layer (:func:`sncn.layers.
  crossnorm_step`); with ``cnsn_type="sn"`` and ``active_num = 1`` it is the only one.
* ``image``: a unit of ``cnsn_type`` on the input images, as for the CIFAR models.
* ``blocks``: stages whose bottlenecks get units, ``"all"`` or a subset of ``(1, 2, 3, 4)``.
* ``layers``, ``width``: bottlenecks per stage (ResNet-50: 3, 4, 6, 3) and the planes of the first
  stage (64; the others double); smaller values only for quick CPU runs.

Two behaviours of the released code are kept so that its checkpoints give its outputs:

* ``pre`` in a block with a projection: the plain ResNet's projection takes the raw block input
  (``resnet_cnsn.py``), the IBN models' takes the unit's output (``resnet_ibn_cnsn.py``).
* IBN-b with ``pos="post"``: the blocks that end with instance norm have no unit (the released
  code leaves it out there).

The released IBN models pool with ``AvgPool2d(7)``; we pool adaptively, the same at 224 px.

Fine-tuning (the released ``run-cn.sh`` starts from torchvision's ImageNet ResNet-50):
:func:`torchvision_resnet50_state` reads those weights from torch's hub cache (downloading them
when possible) and :func:`load_pretrained` loads them non-strictly, so units the file lacks keep
their initialisation.

Reference:
    Tang et al., "SelfNorm and CrossNorm for Out-of-Distribution Robustness": Section 4.1,
    Table 2, appendix Tables 16-19. He et al., "Deep Residual Learning for Image Recognition",
    CVPR 2016. Pan et al., "Two at Once: Enhancing Learning and Generalization Capacities via
    IBN-Net", ECCV 2018.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from sncn.layers import CNSN
from sncn.models import register_model
from sncn.models.cifar import UnitSpec, _Cell, _check_pos, unit_module_ids
from sncn.models.cifar import _stages as cifar_stages
from sncn.models.released import load_released_checkpoint

__all__ = [
    "IBN",
    "IBN_TYPES",
    "RESNET_POSITIONS",
    "Bottleneck",
    "ResNet",
    "TORCHVISION_RESNET50_WEIGHTS",
    "add_cnsn",
    "load_pretrained",
    "load_released_checkpoint",
    "resnet50",
    "torchvision_resnet50_state",
]

#: Tables 17/18's columns: Identity, Pre-Residual, Post-Residual, Post-Addition.
RESNET_POSITIONS = ("identity", "pre", "residual", "post")
IBN_TYPES = (None, "a", "b")
STAGES = (1, 2, 3, 4)
#: Per stage, the IBN type of its bottlenecks (IBN-Net's ``ibn_cfg``).
_IBN_CFG = {None: (None,) * 4, "a": ("a", "a", "a", None), "b": ("b", "b", None, None)}


class IBN(nn.Module):
    """Instance-batch normalisation: the first ``ratio`` of the channels instance-normalised.

    Args:
        num_channels: C of the ``(N, C, H, W)`` input.
        ratio: fraction of channels (rounded down) that get ``InstanceNorm2d(affine=True)``; the
            rest get ``BatchNorm2d``.

    Reference:
        Pan et al. (2018), IBN-Net-a; module names ``IN``/``BN`` as XingangPan/IBN-Net.
    """

    def __init__(self, num_channels: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(num_channels * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(num_channels - self.half)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> same shape."""
        a, b = torch.split(x, (self.half, x.shape[1] - self.half), dim=1)
        return torch.cat((self.IN(a.contiguous()), self.BN(b.contiguous())), dim=1)


class Bottleneck(_Cell):
    """torchvision's bottleneck (stride in the 3x3: ResNet v1.5) with an optional unit and IBN.

    Args:
        inplanes: input channels.
        planes: bottleneck planes; the output has ``4 * planes`` channels.
        stride: of the 3x3 convolution (and of the projection).
        downsample: the projection shortcut, or None.
        groups, base_width: ResNeXt settings (1 and 64 for ResNet).
        ibn: None, ``"a"`` (``bn1`` is :class:`IBN`) or ``"b"`` (instance norm ``IN`` after the
            addition).
        pos: unit position (:data:`RESIDUAL_POSITIONS`); ignored without a unit.
        unit: the unit, or None.
        pre_feeds_shortcut: at ``pos="pre"``, whether the projection takes the unit's output
            (the released IBN code) or the raw input (the released plain ResNet).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        ibn: str | None = None,
        pos: str = "post",
        unit: UnitSpec | None = None,
        pre_feeds_shortcut: bool = False,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = IBN(width) if ibn == "a" else nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.IN = nn.InstanceNorm2d(out, affine=True) if ibn == "b" else None
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.pre_feeds_shortcut = pre_feeds_shortcut
        if unit is not None and pos == "post" and self.IN is not None:
            unit = None  # released IBN-b: instance norm instead of the post-addition unit
        self.pos = pos if unit is not None else None
        self._add_unit(unit, inplanes if pos == "pre" else out)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W) -> (N, 4 planes, H / stride, W / stride)``."""
        identity = x
        if self.pos == "pre":
            x_unit = self.unit(x)
            if self.pre_feeds_shortcut:
                x = x_unit
        else:
            x_unit = x
        out = self.relu(self.bn1(self.conv1(x_unit)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        if self.pos == "residual":
            out = self.unit(out)
        elif self.pos == "identity":
            identity = self.unit(identity)
        out = out + identity
        if self.IN is not None:
            out = self.IN(out)
        elif self.pos == "post":
            out = self.unit(out)
        return self.relu(out)


def _stages(blocks: str | int | Iterable[int]) -> tuple[int, ...]:
    """ResNet's stages of ``blocks`` (:func:`sncn.models.cifar._stages`); at least one."""
    chosen = cifar_stages(blocks, STAGES)
    if not chosen:
        raise ValueError(f"blocks must be 'all' or a subset of {STAGES}, got {blocks!r}.")
    return chosen


class ResNet(nn.Module):
    """ResNet with bottlenecks (torchvision layout), SN/CN units, IBN and image-space CN.

    Args:
        layers: bottlenecks per stage (ResNet-50: ``(3, 4, 6, 3)``).
        num_classes: outputs of ``fc``.
        pos: unit position (:data:`RESNET_POSITIONS`).
        unit: the units (None: plain); its ``image`` puts one on the input too.
        blocks: stages whose bottlenecks get units.
        ibn: None, ``"a"`` or ``"b"``.
        image_cn: a CrossNorm on the input batch (the released ImageNet recipe).
        width: planes of the first stage (64).
        groups, width_per_group: ResNeXt settings (1, 64).
        zero_init_residual: zero ``bn3.weight`` of every bottleneck (torchvision's option).

    Shapes: ``(N, 3, H, W) -> (N, num_classes)``; 224 px for ImageNet, any ``H, W >= 32``.
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        num_classes: int = 1000,
        pos: str = "post",
        unit: UnitSpec | None = None,
        blocks: str | int | Iterable[int] = "all",
        ibn: str | None = None,
        image_cn: bool = False,
        width: int = 64,
        groups: int = 1,
        width_per_group: int = 64,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        unit = unit or UnitSpec()
        self.pos = _check_pos(pos, RESNET_POSITIONS, "resnet50")
        if ibn not in IBN_TYPES:
            raise ValueError(f"ibn must be one of {IBN_TYPES}, got {ibn!r}.")
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive block counts, got {tuple(layers)}.")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}.")
        if image_cn and unit.image and unit.cnsn_type is not None:
            raise ValueError(
                "choose image_cn=True (CrossNorm on the input) or image=True, not both."
            )
        stages = _stages(blocks)
        self.unit_spec = unit
        self.ibn = ibn
        self.groups = groups
        self.base_width = width_per_group
        # Image space: the released ImageNet CrossNorm, or a unit of cnsn_type (as for CIFAR).
        if image_cn:
            self.image_cnsn = CNSN(
                3,
                cn=True,
                sn=False,
                instances=unit.instances,
                crop=unit.crop,
                beta=unit.beta,
                threshold=unit.threshold,
                box=unit.box,
                pairing=unit.pairing,
            )
        elif unit.cnsn_type is not None and unit.image:
            self.image_cnsn = unit.build(3)
        else:
            self.image_cnsn = None
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.InstanceNorm2d(width, affine=True) if ibn == "b" else nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for stage, n in zip(STAGES, layers, strict=True):
            stage_unit = unit if unit.cnsn_type is not None and stage in stages else None
            planes = width * 2 ** (stage - 1)
            self.add_module(
                f"layer{stage}",
                self._make_layer(
                    planes,
                    int(n),
                    1 if stage == 1 else 2,
                    _IBN_CFG[ibn][stage - 1],
                    pos,
                    stage_unit,
                ),
            )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inplanes, num_classes)
        self._init_weights(zero_init_residual)

    def _make_layer(self, planes, n, stride, ibn, pos, unit) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )
        cells = []
        for i in range(n):
            # IBN-b: instance norm after the addition of the stage's last block only.
            block_ibn = ibn if ibn != "b" else ("b" if i == n - 1 else None)
            cells.append(
                Bottleneck(
                    self.inplanes,
                    planes,
                    stride if i == 0 else 1,
                    downsample if i == 0 else None,
                    self.groups,
                    self.base_width,
                    block_ibn,
                    pos,
                    unit,
                    pre_feeds_shortcut=self.ibn is not None,
                )
            )
            self.inplanes = out
        return nn.Sequential(*cells)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """torchvision's initialisation of the backbone; units keep their own."""
        inside_units = unit_module_ids(self)
        for m in self.modules():
            if id(m) in inside_units:
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 3, H, W) -> (N, num_classes)``."""
        if self.image_cnsn is not None:
            x = self.image_cnsn(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H / 4, W / 4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 2048, H / 32, W / 32)
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model
def resnet50(
    num_classes: int = 1000,
    pos: str = "post",
    ibn: str | None = None,
    image_cn: bool = False,
    blocks: str | int | Iterable[int] = "all",
    layers: Sequence[int] = (3, 4, 6, 3),
    width: int = 64,
    zero_init_residual: bool = False,
    **unit,
) -> ResNet:
    """ResNet-50 (torchvision layout, ~25.6M parameters), optionally IBN-a/b, with units.

    Args:
        num_classes: outputs (ImageNet: 1000).
        pos: ``"identity"``, ``"pre"``, ``"residual"`` or ``"post"`` (Tables 17/18; released
            scripts: ``"post"``, and ``"residual"`` for IBN-b + AugMix).
        ibn: None, ``"a"`` or ``"b"`` (Table 16).
        image_cn: CrossNorm on the input batch (the released ImageNet CN).
        blocks: stages with units, ``"all"`` or a subset of ``(1, 2, 3, 4)``.
        layers, width: bottlenecks per stage and first-stage planes (smaller for CPU runs).
        zero_init_residual: torchvision's option (the released code: False).
        **unit: ``cnsn_type``, ``image``, ``crop``, ``beta``, ``instances``, ``threshold``,
            ``order``, ``two_functions``, ``se_reduction`` (see :class:`~sncn.models.cifar.
            UnitSpec`).

    Returns:
        A :class:`ResNet`.
    """
    return ResNet(
        layers,
        num_classes,
        pos,
        UnitSpec(**unit),
        blocks,
        ibn,
        image_cn,
        width,
        zero_init_residual=zero_init_residual,
    )


# --------------------------------------------------------------------------------------------
# Released checkpoints and existing models
# --------------------------------------------------------------------------------------------


#: torchvision's ImageNet ResNet-50 weights that fine-tuning starts from: ``ResNet50_Weights.
#: IMAGENET1K_V1`` (76.13% top-1). Its file ``resnet50-0676ba61.pth`` is the re-serialised
#: ``resnet50-19c8e357.pth`` that the released ``run-cn.sh`` passes as ``--pretrained``
#: (pytorch/vision#2068); torchvision's ``DEFAULT`` is the later, differently trained V2.
TORCHVISION_RESNET50_WEIGHTS = "IMAGENET1K_V1"


def torchvision_resnet50_state(
    model_dir: str | os.PathLike | None = None, progress: bool = True
) -> dict[str, Tensor]:
    """torchvision's ImageNet ResNet-50 state dict (:data:`TORCHVISION_RESNET50_WEIGHTS`).

    Read from torch's hub cache (``model_dir``, default ``<torch.hub.get_dir()>/checkpoints``,
    i.e. ``$TORCH_HOME/hub/checkpoints``), downloading it there first when absent.

    Args:
        model_dir: the folder holding (or to receive) ``resnet50-0676ba61.pth``.
        progress: download progress bar.

    Returns:
        The state dict (torchvision's key names), on the CPU.

    Raises:
        FileNotFoundError: the file is absent and could not be downloaded; the message says where
            to put it, or how to pass a local state dict instead.
    """
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights[TORCHVISION_RESNET50_WEIGHTS].url
    folder = Path(model_dir) if model_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return torch.hub.load_state_dict_from_url(
            url,
            model_dir=str(folder),
            map_location="cpu",
            progress=progress,
            check_hash=True,
            weights_only=True,
        )
    except OSError as error:  # urllib's URLError/HTTPError, timeouts, no network
        file = folder / Path(urlparse(url).path).name
        raise FileNotFoundError(
            f"torchvision's ResNet-50 ImageNet weights (ResNet50_Weights."
            f"{TORCHVISION_RESNET50_WEIGHTS}) are not in {folder} and the download of {url} "
            f"failed ({error}). Download that file elsewhere and copy it to {file} (or set "
            "TORCH_HOME to a folder whose hub/checkpoints/ holds it), or set `pretrained` to the "
            "path of a local ResNet-50 state dict (e.g. the released code's "
            "resnet50-19c8e357.pth)."
        ) from error


def load_pretrained(model: nn.Module, state: Mapping[str, Tensor]) -> list[str]:
    """Load ImageNet weights into ``model`` non-strictly, to fine-tune it.

    Keys are matched by name after removing a ``module.`` prefix (DataParallel/DDP files). The
    model's keys that ``state`` lacks (SN units, IBN parts) keep their initial values. When the
    classifier ``fc`` has another number of classes than the file's, the model's own ``fc`` is
    kept (initialised, not loaded). Any other shape difference, or a key the model lacks, raises.

    Args:
        model: a :class:`ResNet` (or any module with torchvision's key names).
        state: a state dict, e.g. :func:`torchvision_resnet50_state` or a loaded file (a dict
            with ``"state_dict"`` is unwrapped).

    Returns:
        The model's keys left at their initial values (besides ``num_batches_tracked``).
    """
    state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(
            f"the pretrained weights have {len(unexpected)} key(s) the model lacks, e.g. "
            f"{unexpected[:5]}: they were made for another architecture."
        )
    kept = {k for k in ("fc.weight", "fc.bias") if k in state and state[k].shape != own[k].shape}
    wrong = [k for k in state if k not in kept and state[k].shape != own[k].shape]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"the pretrained weights do not fit the model: {len(wrong)} shape mismatch(es), e.g. "
            f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)} (a full-width ResNet-50 needs "
            "width=64)."
        )
    missing, _ = model.load_state_dict(
        {k: v for k, v in state.items() if k not in kept}, strict=False
    )
    return [k for k in missing if not k.endswith("num_batches_tracked")]


def _post_addition_forward(self, x: Tensor) -> Tensor:
    """torchvision ``Bottleneck``/``BasicBlock`` forward with ``self.cnsn`` after the addition."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    if hasattr(self, "conv3"):  # Bottleneck
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
    else:  # BasicBlock
        out = self.bn2(self.conv2(out))
    return self.relu(self.cnsn(out + identity))


_POST_CLASSES: dict[type, type] = {}


def _new_post_block(base: type) -> nn.Module:
    """An uninitialised instance of ``_with_post_unit(base)`` (pickle fills in its state)."""
    cls = _with_post_unit(base)
    return cls.__new__(cls)


def _reduce_post_block(self: nn.Module, protocol: int) -> tuple:
    """Pickle a post-addition block by its torchvision base class and its state.

    The subclass is made at run time, so pickle cannot find it by name; unpickling rebuilds it
    from the base class (:func:`_new_post_block`), also in a fresh process.
    """
    return _new_post_block, (type(self).__bases__[0],), self.__getstate__()


def _with_post_unit(cls: type) -> type:
    """A subclass of a torchvision block class whose forward applies ``cnsn`` post-addition.

    One subclass per base class, named like it; instances pickle (``torch.save(model)``) and
    deep-copy like the base class's.
    """
    if cls not in _POST_CLASSES:
        _POST_CLASSES[cls] = type(
            cls.__name__,
            (cls,),
            {
                "forward": _post_addition_forward,
                "__reduce_ex__": _reduce_post_block,
                "__module__": __name__,
                "__qualname__": f"_with_post_unit.<{cls.__qualname__}>",
            },
        )
    return _POST_CLASSES[cls]


class _BlockUnit:
    """Hook that passes a tensor through its block's ``cnsn``: a module's input (pre-hook) or
    output (forward hook). Holds the block itself, so ``copy.deepcopy`` of the model maps it to
    the copy's block."""

    def __init__(self, block: nn.Module) -> None:
        self.block = block

    def pre(self, module: nn.Module, inputs: tuple) -> tuple:
        return (self.block.cnsn(inputs[0]), *inputs[1:])

    def post(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        return self.block.cnsn(output)


def _stage_blocks(model: nn.Module) -> dict[int, list[nn.Module]]:
    """The residual blocks of stages 1-4 of a torchvision or timm ResNet / ResNeXt / Wide ResNet
    (``layer1..4``), torchvision RegNet (``trunk_output.block1..4``) or timm RegNet (``s1..4``,
    whose blocks are ``b1, b2, ...``); ValueError naming what was looked for otherwise."""
    found = [
        {s: getattr(model, f"layer{s}", None) for s in STAGES},
        {s: getattr(getattr(model, "trunk_output", None), f"block{s}", None) for s in STAGES},
        {s: getattr(model, f"s{s}", None) for s in STAGES},
    ]
    for stages in found:
        if all(isinstance(stage, nn.Module) for stage in stages.values()):
            return {s: list(stage.children()) for s, stage in stages.items()}
    raise ValueError(
        f"{type(model).__name__} has no layer1..layer4 (torchvision or timm ResNet, ResNeXt, Wide "
        "ResNet), trunk_output.block1..4 (torchvision RegNet) or s1..s4 (timm RegNet) of "
        "residual blocks; add_cnsn does not know where its blocks are."
    )


def _block_points(block: nn.Module) -> tuple[nn.BatchNorm2d, nn.Module | None]:
    """The last BatchNorm of a block's residual branch, and the activation applied once to the
    block's sum (None for torchvision's ResNet blocks, which reuse one ReLU)."""
    last_bn = block.bn3 if hasattr(block, "bn3") else getattr(block, "bn2", None)
    after_sum = getattr(block, "act3", None) or getattr(block, "act2", None)  # timm ResNet
    if last_bn is None and hasattr(block, "f") and hasattr(block, "activation"):
        norms = [m for m in block.f.modules() if isinstance(m, nn.BatchNorm2d)]  # tv RegNet
        last_bn, after_sum = (norms[-1] if norms else None), block.activation
    elif last_bn is None and hasattr(getattr(block, "conv3", None), "bn"):  # timm RegNet
        last_bn = block.conv3.bn
    if not isinstance(last_bn, nn.BatchNorm2d):
        raise ValueError(f"{type(block).__name__} is not a residual block add_cnsn knows (no "
                         "bn2/bn3, RegNet branch f or conv3.bn).")  # fmt: skip
    return last_bn, after_sum


def add_cnsn(
    model: nn.Module,
    cnsn_type: str = "cnsn",
    pos: str = "post",
    blocks: str | int | Iterable[int] = "all",
    **unit,
) -> nn.Module:
    """Insert SN/CN units into an existing torchvision or timm ResNet-like model, in place.

    Models: torchvision and timm ResNet, ResNeXt and Wide ResNet (``layer1..4``), torchvision
    RegNet (``trunk_output.block1..4``) and timm RegNet (``s1..4``). Every residual block of the
    chosen stages gets a unit ``cnsn`` (its keys appear under ``<block>.cnsn.``; all existing keys
    stay, so pretrained weights still load):

    * ``pos="post"`` (post-addition, before the block's last activation, as in the paper's
      ResNet-50): torchvision ``Bottleneck``/``BasicBlock`` instances get a subclass whose forward
      is theirs with the unit after the addition (torchvision reuses one ReLU module three times,
      so a hook cannot find that spot); the other blocks get a pre-hook on the activation applied
      once to the sum (timm's ``act3`` or ``act2``, torchvision RegNet's ``activation``).
    * ``pos="residual"`` (post-residual): a hook on the output of the last BatchNorm of the
      block's residual branch.

    The CN units start off, as everywhere: switch them with :func:`sncn.layers.crossnorm_step`
    (``sncn.train.Trainer`` does).

    Args:
        model: one of the models above.
        cnsn_type: ``"sn"``, ``"cn"`` or ``"cnsn"``.
        pos: ``"post"`` or ``"residual"``.
        blocks: stages with units, ``"all"`` or a subset of ``(1, 2, 3, 4)``.
        **unit: ``crop``, ``beta``, ``instances``, ``threshold``, ``order``, ``two_functions``.

    Returns:
        ``model``.
    """
    if cnsn_type not in ("sn", "cn", "cnsn"):
        raise ValueError(f"cnsn_type must be 'sn', 'cn' or 'cnsn', got {cnsn_type!r}.")
    if pos not in ("post", "residual"):
        raise ValueError(f"add_cnsn supports pos 'post' or 'residual', got {pos!r}.")
    spec = UnitSpec(cnsn_type=cnsn_type, **unit)
    stages = _stage_blocks(model)
    for stage in _stages(blocks):
        for block in stages[stage]:
            last_bn, after_sum = _block_points(block)
            if hasattr(block, "cnsn"):
                raise ValueError(f"{type(block).__name__} already has a unit 'cnsn'.")
            block.add_module("cnsn", spec.build(last_bn.num_features))
            if pos == "residual":
                last_bn.register_forward_hook(_BlockUnit(block).post)
            elif after_sum is not None:  # used once, on the sum
                after_sum.register_forward_pre_hook(_BlockUnit(block).pre)
            elif type(block).__module__.startswith("torchvision"):
                block.__class__ = _with_post_unit(type(block))
            else:
                raise ValueError(
                    f"don't know where the addition of {type(block).__name__} is; add_cnsn "
                    "handles torchvision and timm blocks."
                )
    return model
