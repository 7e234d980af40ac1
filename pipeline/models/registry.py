"""Backbone registry: names (as written in params and checkpoints) -> constructors.

Constructors register themselves with :func:`register_backbone`; a second registration under the
same name is an error, so two modules can never silently shadow each other.

Example:
    >>> net = create_backbone("iresnet18", width_mult=0.125)
    >>> type(net).__name__, net.embed_dim
    ('IResNet', 512)
    >>> "iresnet100" in list_backbones()
    True
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, TypeVar

from torch import nn

Constructor = TypeVar("Constructor", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
# Modules whose constructors register on import; imported on first lookup.
_BUILTIN_MODULES: tuple[str, ...] = ("pipeline.models.iresnet",)


def register_backbone(name: str) -> Callable[[Constructor], Constructor]:
    """Decorator registering a backbone constructor under ``name`` (duplicates are refused)."""

    def decorate(fn: Constructor) -> Constructor:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered (by {_REGISTRY[name].__module__})")
        _REGISTRY[name] = fn
        return fn

    return decorate


def list_backbones() -> list[str]:
    """Sorted names of all registered backbones."""
    _import_builtins()
    return sorted(_REGISTRY)


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone registered as ``name`` with constructor keyword arguments ``kwargs``."""
    _import_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; known backbones are {sorted(_REGISTRY)}")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"backbone {name!r} does not accept arguments {sorted(kwargs)}: {exc}") from exc


def _import_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
