"""Vectorised parsing of log columns into typed values, with a mask of the rows that failed.

Every parser takes one object (or typed) column and returns the parsed values plus a boolean
`bad` mask: True where a non-empty value could not be parsed. Empty cells (None, NaN, "" or
whitespace) are missing, never bad.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd


def _all_text(s: pd.Series) -> bool:
    """True for an object column holding only strings (and missing values): CSV columns."""
    return s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty")


def blank_mask(s: pd.Series) -> np.ndarray:
    """True where the cell is missing: None, NaN/NA/NaT, or an empty/whitespace string."""
    if s.dtype != object:
        return np.asarray(s.isna(), dtype=bool)
    if _all_text(s):
        return np.array([v is None or (v.__class__ is not str and v != v) or not v.strip()
                         for v in s.to_numpy()], dtype=bool)
    try:
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
    except TypeError:  # unhashable values (lists from JSON)
        return np.fromiter((v is None or (isinstance(v, float) and math.isnan(v)) or
                            (isinstance(v, str) and not v.strip()) for v in s),
                           dtype=bool, count=len(s))
    blank_u = np.fromiter((isinstance(u, str) and not u.strip() for u in uniques), dtype=bool,
                          count=len(uniques))
    return (codes < 0) | np.append(blank_u, False)[codes]


def _token(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return str(int(v))
    return str(v).strip().casefold()


def _map_unique(s: pd.Series, func: Callable[[Any], Any]) -> list[Any]:
    """Apply `func` once per distinct value (fast for low-cardinality columns)."""
    try:
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
    except TypeError:  # unhashable values (lists from JSON)
        return [func(v) for v in s]
    mapped = [func(u) for u in uniques]
    missing = func(None)
    return [mapped[c] if c >= 0 else missing for c in codes]


def to_text(s: pd.Series, blank: np.ndarray | None = None) -> pd.Series:
    """Strings as they are; numbers and booleans as text; lists/objects as JSON; blank -> None."""
    def conv(v: Any) -> str | None:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT:
            return None
        if isinstance(v, str):
            return v if v.strip() else None
        if isinstance(v, bool | np.bool_):
            return "true" if v else "false"
        if isinstance(v, list | dict | tuple):
            return json.dumps(v, ensure_ascii=False, default=str)
        if isinstance(v, np.ndarray):
            return json.dumps(v.tolist(), ensure_ascii=False, default=str)
        if isinstance(v, float) and v == int(v):
            return str(int(v))
        return str(v)

    if _all_text(s):
        blank = blank_mask(s) if blank is None else blank
        out = s.astype(object, copy=True)
        if blank.any():
            out[blank] = None
        return out
    if s.dtype == object:
        return pd.Series(_map_unique(s, conv), index=s.index, dtype=object)
    return pd.Series([conv(v) for v in s.tolist()], index=s.index, dtype=object)


def parse_float(s: pd.Series, blank: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Float values (NaN where missing or bad) and the mask of bad values."""
    blank = blank_mask(s) if blank is None else blank
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_datetime64_any_dtype(s.dtype):
        return np.full(len(s), np.nan), ~blank
    if s.dtype == object:
        is_bool = np.fromiter((isinstance(v, bool | np.bool_) for v in s), dtype=bool,
                              count=len(s))
        values = pd.to_numeric(s.where(~is_bool, None), errors="coerce")
    else:
        is_bool = np.zeros(len(s), dtype=bool)
        values = pd.to_numeric(s, errors="coerce")
    arr = np.asarray(values, dtype=np.float64)
    bad = (~blank & ~np.isfinite(arr)) | (is_bool & ~blank)
    arr = np.where(bad, np.nan, arr)
    return arr, bad


def parse_int(s: pd.Series, blank: np.ndarray | None = None
              ) -> tuple[pd.arrays.IntegerArray, np.ndarray]:
    """Integer values (NA where missing or bad) and the mask of bad (non-integral) values."""
    arr, bad = parse_float(s, blank)
    with np.errstate(invalid="ignore"):
        fractional = np.isfinite(arr) & (np.floor(arr) != arr)
        too_big = np.isfinite(arr) & (np.abs(arr) > 2**53)
    bad = bad | fractional | too_big
    mask = ~np.isfinite(arr) | bad
    ints = np.where(mask, 0, arr).astype(np.int64)
    return pd.arrays.IntegerArray(ints, mask), bad


def parse_flags(s: pd.Series, true_values: Iterable[str], false_values: Iterable[str],
                blank: np.ndarray | None = None) -> tuple[pd.arrays.BooleanArray, np.ndarray]:
    """Booleans (NA where missing or bad) and the mask of values in neither list."""
    truthy = {v.strip().casefold() for v in true_values}
    falsy = {v.strip().casefold() for v in false_values}
    blank = blank_mask(s) if blank is None else blank

    def conv(v: Any) -> int:  # 1 true, 0 false, -1 unknown
        if v is None:
            return -1
        t = _token(v)
        if t in truthy:
            return 1
        if t in falsy:
            return 0
        return -1

    codes = np.asarray(_map_unique(s, conv), dtype=np.int8)
    unknown = codes < 0
    bad = unknown & ~blank
    return pd.arrays.BooleanArray(codes == 1, unknown), bad


def parse_choice(s: pd.Series, choices: dict[str, Iterable[str]], default: str,
                 blank: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Map values onto named choices (e.g. thumb up/down/none); blank -> `default`."""
    lookup: dict[str, str] = {}
    for name, values in choices.items():
        for v in values:
            lookup.setdefault(v.strip().casefold(), name)
    blank = blank_mask(s) if blank is None else blank

    def conv(v: Any) -> str | None:
        if v is None:
            return default
        return lookup.get(_token(v))

    out = np.asarray(_map_unique(s, conv), dtype=object)
    out[blank] = default
    bad = np.asarray([v is None for v in out], dtype=bool)
    out[bad] = default
    return out, bad


def parse_timestamps(s: pd.Series, fmt: str | None, blank: np.ndarray | None = None
                     ) -> tuple[pd.Series, np.ndarray]:
    """UTC timestamps (NaT where missing or bad) and the mask of unparseable values.

    `fmt`: None (ISO 8601, naive = UTC; plain numbers = epoch seconds, or milliseconds when
    above 1e11), a strftime format, or `epoch_s` / `epoch_ms`.
    """
    blank = blank_mask(s) if blank is None else blank
    n = len(s)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        out = pd.to_datetime(s, utc=True)
        return _us(out), np.zeros(n, dtype=bool)
    if fmt in ("epoch_s", "epoch_ms"):
        nums, bad = parse_float(s, blank)
        out = pd.to_datetime(pd.Series(nums), unit="s" if fmt == "epoch_s" else "ms",
                             utc=True, errors="coerce")
        return _us(out), bad | (~blank & out.isna().to_numpy())
    if fmt is not None:
        text = to_text(s, blank)
        out = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
        return _us(out), ~blank & out.isna().to_numpy()
    # auto: ISO 8601 first; values it cannot read are tried as epoch seconds (or ms)
    text = to_text(s, blank) if s.dtype == object else s.astype(object)
    out = _iso8601(text)
    retry = ~blank & out.isna().to_numpy()
    if retry.any():
        nums = np.asarray(pd.to_numeric(text[retry], errors="coerce"), dtype=np.float64)
        numeric = np.isfinite(nums)
        if numeric.any():
            secs = np.where(np.abs(nums) >= 1e11, nums / 1000.0, nums)[numeric]
            conv = _us(pd.to_datetime(pd.Series(secs), unit="s", utc=True, errors="coerce"))
            conv.index = out.index[np.flatnonzero(retry)[numeric]]
            out = _us(conv.combine_first(out))
    bad = ~blank & out.isna().to_numpy()
    return out, bad


_TZ_SUFFIX = r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"


def _iso8601(text: pd.Series) -> pd.Series:
    """ISO 8601 strings -> UTC. Values with and without a UTC offset are parsed apart: pandas
    applies the offset of an earlier value to later naive ones when they are mixed."""
    strings = text.where(text.notna(), "").astype(str)
    aware = np.asarray(strings.str.endswith(("Z", "z")), dtype=bool)
    rest = ~aware
    if rest.any():
        aware[rest] = np.asarray(strings[rest].str.contains(_TZ_SUFFIX, regex=True), dtype=bool)
    if aware.all() or not aware.any():
        return _us(pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True))
    parts = [_us(pd.to_datetime(text[part], format="ISO8601", errors="coerce", utc=True))
             for part in (aware, ~aware)]
    return _us(pd.concat(parts).reindex(text.index))


def _us(s: pd.Series) -> pd.Series:
    try:
        return s.astype("datetime64[us, UTC]")
    except (OverflowError, ValueError):  # pragma: no cover - out-of-range dates
        return pd.to_datetime(s, utc=True, errors="coerce").astype("datetime64[us, UTC]")


def infer_extra(s: pd.Series, true_false: tuple[set[str], set[str]] = ({"true"}, {"false"})
                ) -> pd.Series:
    """An extra column's values with an inferred dtype: bool, int, float, or text.

    Typed columns (Parquet, JSON numbers) keep their type; text columns become bool when every
    value is in `true_false` (default: the words true / false, any case), int or float when every value is a number, otherwise text.
    """
    if s.dtype != object:
        if pd.api.types.is_bool_dtype(s.dtype):
            return s.astype("boolean")
        if pd.api.types.is_integer_dtype(s.dtype):
            return s.astype("Int64")
        if pd.api.types.is_float_dtype(s.dtype):
            return s.astype("float64")
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            return _us(pd.to_datetime(s, utc=True))
        return to_text(s)
    blank = blank_mask(s)
    present = s[~blank]
    if len(present) == 0:
        return to_text(s)
    flags, flag_bad = parse_flags(s, *true_false)
    if not flag_bad.any():
        return pd.Series(flags, index=s.index)
    if all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in present):
        nums, bad = parse_float(s)
        if not bad.any():
            finite = nums[np.isfinite(nums)]
            integral_text = all(
                not isinstance(v, float) and "." not in str(v) and "e" not in str(v).lower()
                for v in present)
            if integral_text and np.all(np.floor(finite) == finite) and np.all(
                    np.abs(finite) <= 2**53):
                ints, _ = parse_int(s)
                return pd.Series(ints, index=s.index)
            return pd.Series(nums, index=s.index, dtype="float64")
    return to_text(s)
