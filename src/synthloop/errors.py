"""One small error hierarchy. The CLI maps each class to a one-line message and an exit code.

Exit codes (the whole CLI shares this table, documented in the README):

| code | meaning |
| ---- | ------- |
| 0 | success / gate passed |
| 1 | regression found (gate failed) |
| 2 | usage or input error (bad config, bad data, missing consent, unreachable target) |
| 3 | inconclusive: too few cases to decide |
| 4 | privacy gate failed |

A user's mistake raises a `SynthloopError` subclass and is printed without a traceback;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_INCONCLUSIVE = 3
EXIT_PRIVACY = 4


class SynthloopError(Exception):
    """Base class for every error caused by user input rather than a bug."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigError(SynthloopError):
    """A config or spec file is missing, unreadable or invalid."""

    def __init__(self, message: str, *, problems: list[str] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems or []

    def __str__(self) -> str:
        base = super().__str__()
        if len(self.problems) <= 1:
            return base
        return base + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class DataError(SynthloopError):
    """Input data (logs, evalsets, runs) is missing, malformed or inconsistent."""


class ConsentError(DataError):
    """Data lacks the consent needed for the requested use."""


class TargetError(SynthloopError):
    """A target cannot be built or reached (bad URL, missing API key env var, ...)."""


class PrivacyGateError(SynthloopError):
    """Synthetic data failed the privacy gate; nothing was written."""

    exit_code = EXIT_PRIVACY


class GateFailed(SynthloopError):
    """The release gate found a regression."""

    exit_code = EXIT_REGRESSION


class Inconclusive(SynthloopError):
    """Too few cases to decide."""

    exit_code = EXIT_INCONCLUSIVE


class MissingDependency(SynthloopError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the optional package '{package}'",
            hint=f"pip install {package}",
        )
