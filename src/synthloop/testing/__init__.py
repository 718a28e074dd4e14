"""Test helpers shipped with synthloop: a real OpenAI-compatible server with fault injection.

    from synthloop.testing import FakeOpenAIServer, FaultPlan

    with FakeOpenAIServer(latency_s=0.01, faults=FaultPlan(rate=0.2, seed=0)) as server:
        ...  # point a target at server.base_url

Run it standalone (prints the base URL on the first line of stdout):

    python -m synthloop.testing.openai_server --latency 0.05 --port 0
"""

from synthloop.testing._server import (
    FAULT_KINDS,
    KNOWN_FAULTS,
    FakeOpenAIServer,
    FaultPlan,
    count_tokens,
    default_reply,
)

__all__ = [
    "FAULT_KINDS",
    "KNOWN_FAULTS",
    "FakeOpenAIServer",
    "FaultPlan",
    "count_tokens",
    "default_reply",
]
