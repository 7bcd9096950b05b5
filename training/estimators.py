"""Build the configured estimator from ``training.estimator.class_path`` and ``params``.

Importing any class named in a config file would let whoever edits the config run code, so
only classifiers from allow-listed module prefixes are accepted.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from sklearn.base import BaseEstimator, is_classifier

from training.errors import InvalidEstimator

ALLOWED_PREFIXES = ("sklearn.",)


def plain(value: Any) -> Any:
    """A JSON-safe deep copy (dynaconf boxes and tuples become dicts and lists)."""
    return json.loads(json.dumps(value, default=str))


def import_estimator_class(class_path: str) -> type[BaseEstimator]:
    if not isinstance(class_path, str) or not class_path.startswith(ALLOWED_PREFIXES):
        allowed = ", ".join(ALLOWED_PREFIXES)
        raise InvalidEstimator(
            f"training.estimator.class_path {class_path!r} is not allowed; "
            f"it must start with one of: {allowed}"
        )
    module_name, _, class_name = class_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError, ValueError, TypeError):
        raise InvalidEstimator(
            f"training.estimator.class_path {class_path!r} cannot be imported"
        ) from None
    if not (
        isinstance(cls, type)
        and issubclass(cls, BaseEstimator)
        and cls.__module__.startswith(ALLOWED_PREFIXES)
    ):
        raise InvalidEstimator(
            f"training.estimator.class_path {class_path!r} is not a scikit-learn estimator class"
        )
    return cls


def build_estimator(class_path: str, params: dict[str, Any] | None = None) -> BaseEstimator:
    """An unfitted classifier; unknown parameter names raise InvalidEstimator."""
    cls = import_estimator_class(class_path)
    try:
        estimator = cls(**plain(params or {}))
    except TypeError as exc:
        raise InvalidEstimator(
            f"training.estimator.params do not fit {class_path}: {exc}"
        ) from None
    if not is_classifier(estimator):
        raise InvalidEstimator(f"training.estimator.class_path {class_path!r} is not a classifier")
    return estimator
