"""The replay harness: run an evalset against a target, fast, cached and resumable.

    from synthloop.harness import replay

    manifest = replay("evalsets/support/v1", "configs/targets/support-v2.yaml", "runs/v2",
                      concurrency=64)
    manifest.counts          # total, ok, error, cached

See docs/replay.md. The response cache lives in `synthloop.harness.cache`.
"""

from synthloop.harness._limits import RateLimiter
from synthloop.harness._replay import (
    CACHE_NAMESPACE,
    DEFAULT_CACHE_PATH,
    DEFAULT_CONCURRENCY,
    ReplayStats,
    areplay,
    read_log,
    replay,
)
from synthloop.harness.cache import ResponseCache, make_key

__all__ = [
    "CACHE_NAMESPACE",
    "DEFAULT_CACHE_PATH",
    "DEFAULT_CONCURRENCY",
    "RateLimiter",
    "ReplayStats",
    "ResponseCache",
    "areplay",
    "make_key",
    "read_log",
    "replay",
]
