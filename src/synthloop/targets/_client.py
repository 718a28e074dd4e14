"""The HTTP client shared by the `openai` and `http` targets: one aiohttp session per run.

aiohttp is used directly (not the `openai` package) because it costs about 0.5 ms of CPU per
request against 3-6 ms for `openai.AsyncOpenAI` (see docs/replay.md for the measurements):
on a fast endpoint the client, not the server, is what limits a replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from synthloop.targets._base import TargetCallError, parse_retry_after, redact


class HTTPClient:
    """A lazily opened aiohttp session bound to the running event loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._session is not None and self._loop is loop and not self._session.closed:
            return
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),  # the harness times each attempt
            skip_auto_headers=("User-Agent",),
            headers={"User-Agent": "synthloop"},
        )
        self._loop = loop

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            with contextlib.suppress(Exception):
                await session.close()

    async def request(self, method: str, url: str, *, body: bytes | None,
                      headers: Mapping[str, str], params: Mapping[str, str] | None = None
                      ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        """Send one request; transport failures become `TargetCallError` with a kind."""
        if self._session is None or self._session.closed or self._loop is not asyncio.get_running_loop():
            await self.start()
        assert self._session is not None
        try:
            async with self._session.request(method, url, data=body, headers=headers,
                                             params=params) as resp:
                data = await resp.read()
                return resp.status, resp.headers, data
        except aiohttp.ClientConnectorError as e:
            raise TargetCallError(f"cannot connect to {url}: {_reason(e)}", kind="connect") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
                aiohttp.ClientPayloadError) as e:
            raise TargetCallError(f"connection to {url} lost: {_reason(e)}",
                                  kind="disconnect") from None
        except aiohttp.ClientResponseError as e:
            raise TargetCallError(f"malformed HTTP reply from {url}: {e.message}",
                                  kind="bad_response") from None
        except aiohttp.ClientError as e:
            raise TargetCallError(f"request to {url} failed: {_reason(e)}",
                                  kind="disconnect") from None


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:200]


def raise_for_status(status: int, headers: Mapping[str, str], data: bytes, url: str,
                     secrets: Iterable[str] = ()) -> None:
    """Raise `TargetCallError` (kind `http_<status>`) for a non-2xx reply. The server's error
    text goes into the message with `secrets` (the key, header values) masked: servers and
    proxies can echo the request's credentials."""
    if 200 <= status < 300:
        return
    detail = ""
    try:
        payload = json.loads(data)
        err = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(err, dict):
            detail = str(err.get("message") or "")
        elif isinstance(err, str):
            detail = err
        elif isinstance(payload, dict) and isinstance(payload.get("detail"), str):
            detail = payload["detail"]
    except ValueError:
        detail = data[:4096].decode("utf-8", "replace")  # masked, then cut to 200
    detail = " ".join(redact(detail, secrets).split())[:200]
    raise TargetCallError(f"HTTP {status} from {url}" + (f": {detail}" if detail else ""),
                          kind=f"http_{status}", status=status,
                          retry_after=parse_retry_after(headers))


def parse_json(data: bytes, url: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise TargetCallError(f"malformed JSON from {url} ({len(data)} bytes)",
                              kind="bad_response") from None
