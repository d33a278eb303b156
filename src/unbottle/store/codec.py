"""Strict JSON for the store, so every column stays readable by any JSON tool (``jq``, ``sqlite3 -json``).

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which is not JSON. A benchmark can
legitimately produce them (a failed timing, a division by a zero count), so instead of crashing or
writing invalid JSON the store encodes non-finite floats as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"``, everywhere. Measurement samples are always numbers, so they are turned back into
floats on read and round-trip exactly; in free-form dicts (config, manifest, result, params) the
strings are left as strings, because there a string ``"NaN"`` may have been meant as a string.
Finite floats are written with ``repr`` precision and come back bit-identical.
"""

from __future__ import annotations

import json
import math
from typing import Any

from unbottle.core.errors import StoreError

NONFINITE_TO_TEXT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
TEXT_TO_NONFINITE = {text: float(key) for key, text in NONFINITE_TO_TEXT.items()}


def plain(value: Any) -> Any:
    """Return ``value`` with tuples as lists, array-likes as lists and non-finite floats as strings.

    Args:
        value: any nest of dicts, lists, tuples, numbers, strings, booleans and ``None``; objects
            with a ``tolist()`` method (numpy arrays and scalars, torch tensors) are converted.

    Returns:
        A structure ``json.dumps(..., allow_nan=False)`` accepts, or the offending object left in
        place for ``json.dumps`` to reject.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else NONFINITE_TO_TEXT[repr(value)]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, (str, bytes, int, type(None))):
        return value
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return plain(tolist())
    return value


def dumps(value: Any, what: str) -> str:
    """Encode ``value`` as strict JSON.

    Args:
        value: the data to encode (see ``plain`` for what is accepted).
        what: what the data is, for the error message, e.g. ``"the run config"``.

    Returns:
        The JSON text.

    Raises:
        StoreError: ``value`` holds something JSON cannot represent (a Path, a set, a custom object).
    """
    try:
        return json.dumps(plain(value), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"{what} cannot be stored as JSON ({exc}); pass plain dicts, lists, strings, numbers, "
            "booleans and None (convert paths with str() and sets with sorted())"
        ) from exc


def loads(text: str | None) -> Any:
    """Decode JSON text written by ``dumps``; ``None`` (SQL NULL) stays ``None``."""
    return None if text is None else json.loads(text)


def loads_samples(text: str) -> list[float]:
    """Decode a samples list, turning the non-finite markers back into floats."""
    return [TEXT_TO_NONFINITE.get(x, x) if isinstance(x, str) else x for x in json.loads(text)]
