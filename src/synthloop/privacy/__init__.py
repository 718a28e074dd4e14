"""Privacy: consent filtering, PII scrubbing, leakage and distance checks, the privacy gate.

Ingest-side names (consent filtering and PII scrubbing) come first; the SDV privacy report and
gate append theirs below.
"""

from __future__ import annotations

from synthloop.privacy._consent import ConsentDecision, decide_consent, uses_contain
from synthloop.privacy._pii import (
    PII_TYPES,
    PLACEHOLDERS,
    PiiMatch,
    Scrubber,
    find_pii,
    iban_valid,
    luhn_valid,
    scrub_text,
)

__all__ = [
    "PII_TYPES",
    "PLACEHOLDERS",
    "ConsentDecision",
    "PiiMatch",
    "Scrubber",
    "decide_consent",
    "find_pii",
    "iban_valid",
    "luhn_valid",
    "scrub_text",
    "uses_contain",
]

# --------------------------------------------------------------------------- privacy report and gate
from synthloop.privacy._fidelity import fidelity_report  # noqa: E402
from synthloop.privacy._metrics import (  # noqa: E402
    canary_hits,
    dcr,
    dcr_baseline_protection,
    dcr_overfitting_protection,
    exact_copy_rate,
    near_duplicate_rate,
    near_duplicates,
    nearest_records,
    nndr,
    normalize_text,
    numeric_canary_hits,
    random_baseline,
    text_shingles,
)
from synthloop.privacy._report import (  # noqa: E402
    PrivacyCheck,
    PrivacyInputs,
    PrivacyReport,
    PrivacyThresholds,
    privacy_report,
)

__all__ += [
    "PrivacyCheck",
    "PrivacyInputs",
    "PrivacyReport",
    "PrivacyThresholds",
    "canary_hits",
    "dcr",
    "dcr_baseline_protection",
    "dcr_overfitting_protection",
    "exact_copy_rate",
    "fidelity_report",
    "near_duplicate_rate",
    "near_duplicates",
    "nearest_records",
    "nndr",
    "normalize_text",
    "numeric_canary_hits",
    "privacy_report",
    "random_baseline",
    "text_shingles",
]
