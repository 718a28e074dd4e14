"""Release gate: a policy (rules as data) applied to a comparison → a Verdict and exit code.

    from synthloop.gate import load_policy, evaluate
    verdict = evaluate(read_comparison("cmp/"), load_policy("policy.yaml"))
    sys.exit(verdict.exit_code)     # 0 pass, 1 regression, 3 inconclusive

See `synthloop.gate._evaluate` (and docs/compare-and-gate.md) for the exact decision rules.
"""

from __future__ import annotations

from pathlib import Path

from synthloop.errors import DataError
from synthloop.gate._evaluate import check_policy, evaluate, fmt, fmt_p
from synthloop.gate._policy import Policy, Rule, load_policy
from synthloop.gate._verdict import EXIT_CODES, CheckResult, Status, Verdict
from synthloop.runs import write_atomic
from synthloop.stats._compare import VERDICT_FILE  # a new comparison removes it


def write_verdict(verdict: Verdict, path: str | Path) -> Path:
    """Write a verdict as JSON atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(p, verdict.model_dump_json(indent=1) + "\n")
    return p


def read_verdict(path: str | Path) -> Verdict:
    p = Path(path)
    try:
        return Verdict.model_validate_json(p.read_text())
    except FileNotFoundError:
        raise DataError(f"{p}: no verdict found", hint="run `synthloop gate` first") from None
    except Exception as e:
        raise DataError(f"{p}: invalid verdict file: {str(e).splitlines()[0]}") from None


__all__ = [
    "EXIT_CODES",
    "VERDICT_FILE",
    "CheckResult",
    "Policy",
    "Rule",
    "Status",
    "Verdict",
    "check_policy",
    "evaluate",
    "fmt",
    "fmt_p",
    "load_policy",
    "read_verdict",
    "write_verdict",
]
