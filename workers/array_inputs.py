"""A shortcut through scikit-learn's dataframe checks for the NumPy arrays workers predict on.

scikit-learn (1.8 and later) asks narwhals, at every validation of an input, whether it is a
dataframe or a series, in ``inspect.getattr_static`` calls: 57 µs for both questions on the
2-core AMD VM, and one ``predict_proba`` of a scaler-and-classifier pipeline asks four
times. That was 46 % of a one-row prediction of the iris pipeline there (460 -> 248 µs with
this shortcut; 16 rows 461 -> 280 µs; a 200-tree forest's own work hides it). The worker always
predicts on a plain ``numpy.ndarray`` (workers/inference.py), which is neither; so those two
checks answer False for exactly that type at once, and ask narwhals for anything else
(subclasses, dataframes: training's inputs).

:func:`install` is called by every process that serves predictions (workers/celery_app.py
``_start_child``). With a scikit-learn that does not make these checks it changes nothing;
tests/unit/workers/test_array_inputs.py fails if scikit-learn moves them, so the shortcut
cannot go stale silently.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import validation

_SHORTCUT = "_mlops_array_shortcut"  # marks a check already wrapped (install is idempotent)


def _for_arrays(check):
    """``check``, answering False at once for a plain ndarray (never a dataframe or series)."""
    if getattr(check, _SHORTCUT, False):
        return check

    def shortcut(x):
        return False if type(x) is np.ndarray else check(x)

    setattr(shortcut, _SHORTCUT, True)
    shortcut.__wrapped__ = check
    return shortcut


def install() -> bool:
    """Wrap scikit-learn's two dataframe checks; False when this scikit-learn has none."""
    narwhals = getattr(validation, "nw", None)
    if not hasattr(validation, "_nw_into_df_or_series") or narwhals is None:
        return False
    validation._nw_into_df_or_series = _for_arrays(validation._nw_into_df_or_series)
    dependencies = narwhals.dependencies
    dependencies.is_into_dataframe = _for_arrays(dependencies.is_into_dataframe)
    return True
