"""Model registry: ``create_model(name, **kwargs)``.

One name per architecture; variants (where SelfNorm/CrossNorm units sit, their settings, widths)
are keyword arguments, never new names. Families register themselves on import of their module.

:func:`~sncn.models.resnet.add_cnsn` (SN/CN units into an existing torchvision or timm ResNet,
ResNeXt, Wide ResNet or RegNet) is importable from here too: ``from sncn.models import
add_cnsn``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["add_cnsn", "create_model", "list_models", "register_model"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a model constructor under its function name."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _import_families()
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with ``kwargs``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    _import_families()
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name](**kwargs)


def _import_families() -> None:
    """Import every family module so that its models are registered."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def __getattr__(name: str):
    """``add_cnsn``, imported from :mod:`sncn.models.resnet` on first use (PEP 562)."""
    if name == "add_cnsn":
        from sncn.models.resnet import add_cnsn

        return add_cnsn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
