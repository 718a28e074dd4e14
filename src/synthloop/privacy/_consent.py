"""Consent filtering: which logged rows may be used for a given purpose (e.g. `synthetic_fit`).

A row is used only when

1. its consent for the use was **granted**: the per-use flag column (`consent.synthetic_fit`) is
   truthy, and/or the uses-list column (`consent.uses`, comma-separated) contains the use — when
   both are mapped, both must grant it; an empty or unrecognised value is *no consent*;
2. the row is not from **before the grant** (`consent.granted_at`, when mapped; per user, the
   latest grant time seen on any of the user's rows applies to all of them), and
3. consent was **not revoked at the row's timestamp**: the row's time is strictly before the
   user's revocation time (`consent.revoked_at`). Revocations are per user: the earliest
   revocation seen on any of the user's rows applies to all of them.

Whenever the answer cannot be determined — an unparseable grant or revocation time, or a row
without a usable timestamp when a grant/revocation time applies to it — the row is excluded.
Nothing about an excluded row (its text above all) reaches any output: the caller drops it
before validation, scrubbing or writing, and only counts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

_USES_SPLIT = ",;|"


@dataclass
class ConsentDecision:
    """The outcome of consent filtering over a table of rows."""

    allowed: np.ndarray
    """Boolean mask, one per row: True when the row may be used."""
    reasons: dict[str, int] = field(default_factory=dict)
    """Excluded rows per reason: `not_granted`, `unrecognised`, `before_granted`, `revoked`,
    `undetermined` (a row counts once, under its first failing reason)."""
    users_excluded: int = 0
    """Distinct users with at least one excluded row (0 when user ids are not known)."""

    @property
    def excluded(self) -> int:
        return int((~self.allowed).sum())


def uses_contain(values: Sequence[Any] | pd.Series, use: str) -> np.ndarray:
    """Per row: does the uses value (a comma/semicolon/pipe-separated string or a list) name `use`?"""
    target = use.strip().casefold()
    out = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, str):
            text = v
            for sep in _USES_SPLIT[1:]:
                text = text.replace(sep, ",")
            items: list[Any] = text.split(",")
        elif isinstance(v, list | tuple | np.ndarray):
            items = list(v)
        else:
            continue
        out[i] = any(isinstance(x, str) and x.strip().casefold() == target for x in items)
    return out


def decide_consent(
    n: int,
    *,
    granted: np.ndarray | None = None,
    granted_unrecognised: np.ndarray | None = None,
    uses_granted: np.ndarray | None = None,
    row_time: pd.Series | None = None,
    granted_at: pd.Series | None = None,
    granted_at_bad: np.ndarray | None = None,
    revoked_at: pd.Series | None = None,
    revoked_at_bad: np.ndarray | None = None,
    user_ids: pd.Series | None = None,
) -> ConsentDecision:
    """Combine parsed consent columns into one allow/deny decision per row.

    `granted`: the per-use flag (True/False, unknown values False with `granted_unrecognised`
    set); `uses_granted`: membership of the use in the uses list; `row_time`, `granted_at`,
    `revoked_at`: UTC datetimes (NaT when empty or unparseable; `*_bad` marks unparseable
    non-empty values); `user_ids`: to apply a user's earliest revocation to all their rows.
    At least one of `granted` / `uses_granted` must be given (the caller handles `assume`).
    """
    if granted is None and uses_granted is None:
        raise ValueError("decide_consent needs a granted flag or a uses list")
    allowed = np.ones(n, dtype=bool)
    reasons: dict[str, int] = {}

    def exclude(mask: np.ndarray, reason: str) -> None:
        newly = mask & allowed
        count = int(newly.sum())
        if count:
            reasons[reason] = reasons.get(reason, 0) + count
            allowed[newly] = False

    if granted is not None:
        unrecognised = (granted_unrecognised if granted_unrecognised is not None
                        else np.zeros(n, dtype=bool))
        exclude(~granted.astype(bool) & unrecognised, "unrecognised")
        exclude(~granted.astype(bool), "not_granted")
    if uses_granted is not None:
        exclude(~uses_granted.astype(bool), "not_granted")

    t = _naive(row_time) if row_time is not None else np.full(n, np.datetime64("NaT", "us"))
    t_missing = np.isnat(t)

    uid = (pd.Series(user_ids.to_numpy(), index=range(n)).astype(object)
           if user_ids is not None else None)
    if granted_at is not None:
        g_s = pd.Series(_naive(granted_at), index=range(n))
        g_bad_s = pd.Series(granted_at_bad if granted_at_bad is not None
                            else np.zeros(n, dtype=bool), index=range(n))
        if uid is not None:
            # the latest grant seen for a user applies to all their rows (conservative)
            g_s = g_s.groupby(uid, dropna=False, sort=False).transform("max")
            g_bad_s = g_bad_s.groupby(uid, dropna=False, sort=False).transform("any").astype(bool)
        exclude(g_bad_s.to_numpy(dtype=bool), "undetermined")
        g = g_s.to_numpy(dtype="datetime64[us]")
        g_set = ~np.isnat(g)
        exclude(g_set & t_missing, "undetermined")
        before = np.zeros(n, dtype=bool)
        ok = g_set & ~t_missing
        before[ok] = t[ok] < g[ok]
        exclude(before, "before_granted")

    if revoked_at is not None:
        r_bad = revoked_at_bad if revoked_at_bad is not None else np.zeros(n, dtype=bool)
        r = pd.Series(_naive(revoked_at), index=range(n))
        bad_s = pd.Series(r_bad, index=range(n))
        if uid is not None:
            # earliest revocation per user applies to all their rows; an unparseable one
            # anywhere means the user's revocation time is unknown: exclude all their rows
            r = r.groupby(uid, dropna=False, sort=False).transform("min")
            bad_s = bad_s.groupby(uid, dropna=False, sort=False).transform("any").astype(bool)
        exclude(bad_s.to_numpy(dtype=bool), "undetermined")
        rv = r.to_numpy(dtype="datetime64[us]")
        r_set = ~np.isnat(rv)
        exclude(r_set & t_missing, "undetermined")
        revoked = np.zeros(n, dtype=bool)
        ok = r_set & ~t_missing
        revoked[ok] = t[ok] >= rv[ok]
        exclude(revoked, "revoked")

    users_excluded = 0
    if user_ids is not None and not allowed.all():
        users_excluded = int(pd.Series(user_ids.to_numpy())[~allowed].nunique(dropna=False))
    return ConsentDecision(allowed=allowed, reasons=reasons, users_excluded=users_excluded)


def _naive(times: pd.Series) -> np.ndarray:
    """UTC datetimes as a naive `datetime64[us]` array (NaT where missing)."""
    s = pd.Series(times)
    if not pd.api.types.is_datetime64_any_dtype(s.dtype):
        s = pd.to_datetime(s, utc=True, errors="coerce")
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy(dtype="datetime64[us]")
