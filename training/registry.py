"""Trainer registry: ``@register_trainer("name")`` on a class, ``training.trainer = "name"``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from core.errors import UnknownTrainer
from core.settings import Settings, SettingsError

if TYPE_CHECKING:
    from training.base import Trainer

T = TypeVar("T", bound="type[Trainer]")

_TRAINERS: dict[str, type[Trainer]] = {}
BUILTIN_MODULES = ("training.trainers.iris", "training.trainers.tabular")


def register_trainer(name: str) -> Callable[[T], T]:
    """Class decorator: make a Trainer subclass available under ``name``."""

    def decorator(cls: T) -> T:
        existing = _TRAINERS.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"trainer name {name!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        cls.name = name
        _TRAINERS[name] = cls
        return cls

    return decorator


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def available_trainers() -> list[str]:
    _load_builtins()
    return sorted(_TRAINERS)


def get_trainer(name: str) -> type[Trainer]:
    """The trainer class registered as ``name``; UnknownTrainer lists the known names."""
    _load_builtins()
    try:
        return _TRAINERS[name]
    except KeyError:
        known = ", ".join(sorted(_TRAINERS)) or "none"
        raise UnknownTrainer(f"unknown trainer {name!r}; known trainers: {known}") from None


def check_trainers(settings: Settings) -> None:
    """Stop start-up (workers, the training CLI) when a model names a trainer that does not
    exist. Not in core/settings.py: the gateway cannot import trainers (no scikit-learn)."""
    known = available_trainers()
    bad = [
        f"models.{name}.trainer: unknown trainer {str(model.trainer)!r}"
        for name, model in settings.models.items()
        if str(model.trainer) not in known
    ]
    if bad:
        raise SettingsError(
            f"invalid settings: {'; '.join(bad)} (known trainers: {', '.join(known)})"
        )


def unregister_trainer(name: str) -> None:
    """For tests that register throw-away trainers."""
    _TRAINERS.pop(name, None)
