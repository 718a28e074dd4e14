"""`kind: python`: a Python function (`module:function`, sync or async) as a target.

The function takes the `EvalCase` (and `sample=` when its signature accepts it) and returns
the reply text, a `Response`, or a mapping of Response fields (`output`, `usage`, ...). A sync
function runs in a worker thread so the harness's timeout and concurrency still apply.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from synthloop.errors import ConfigError
from synthloop.registry import import_object
from synthloop.schema import EvalCase, Response, TargetFingerprint, Usage
from synthloop.targets._base import BaseTarget, TargetSettings, validate_settings


class PythonTargetConfig(TargetSettings):
    """A target YAML with `kind: python`."""

    kind: Literal["python"] = "python"
    """Always `python`."""
    function: str
    """`package.module:function` to call (part of the fingerprint)."""
    version: str | None = None
    """Version label (part of the fingerprint). Unset, the fingerprint carries the hash of
    the file that defines the function instead, so editing that file invalidates cached
    replies (and a run of the old code is not resumed with the new). Set it to version the
    behaviour yourself: when it lives in other files too, or to keep replies across edits."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments for the function (part of the fingerprint)."""
    python_path: list[str] = Field(default_factory=list)
    """Directories added to `sys.path` before importing (relative to the target file)."""
    threaded: bool = True
    """Run a sync function in a worker thread (False: call it on the event loop, which is
    faster for trivial functions but blocks the loop and ignores `timeout_s`)."""


def _source_hash(func: Callable[..., Any]) -> str | None:
    """sha256 of the file that defines `func` (None for builtins and code without a file)."""
    try:
        path = inspect.getsourcefile(inspect.unwrap(func))
    except TypeError:  # a builtin, or a callable object: try its class
        try:
            path = inspect.getsourcefile(type(func))
        except TypeError:
            return None
    if path is None or not Path(path).is_file():
        return None
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


class PythonTarget(BaseTarget):
    """Calls a Python function for each case."""

    def __init__(self, func: Callable[..., Any], *, name: str, function_ref: str,
                 version: str | None = None, kwargs: Mapping[str, Any] | None = None,
                 settings: PythonTargetConfig | None = None, threaded: bool = True) -> None:
        self.func = func
        self.name = name
        self.kwargs = dict(kwargs or {})
        self.settings = settings or PythonTargetConfig(function=function_ref, name=name,
                                                       version=version, kwargs=self.kwargs,
                                                       threaded=threaded)
        self.threaded = self.settings.threaded
        self._async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
            getattr(func, "__call__", None))  # noqa: B004 - async callable objects
        try:
            params = inspect.signature(func).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        self._pass_sample = "sample" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        parameters: dict[str, Any] = {}
        if version is not None:
            parameters["version"] = version
        else:
            code = _source_hash(func)
            if code is not None:
                parameters["code"] = code
        if self.kwargs:
            parameters["kwargs"] = self.kwargs
        self.fingerprint = TargetFingerprint(kind="python", endpoint=None, model=function_ref,
                                             parameters=parameters)

    @classmethod
    def from_config(cls, data: dict[str, Any], source: str = "<dict>",
                    base_dir: Path | None = None) -> PythonTarget:
        config: PythonTargetConfig = validate_settings(data, PythonTargetConfig, source)
        for entry in config.python_path:
            p = Path(entry)
            if base_dir is not None and not p.is_absolute():
                p = base_dir / p
            if str(p) not in sys.path:
                sys.path.insert(0, str(p))
        if ":" not in config.function:
            raise ConfigError(f"{source}: function: '{config.function}' is not of the form "
                              "module:function", hint="e.g. function: mypackage.models:reply")
        func = import_object(config.function, what=f"{source}: function")
        if not callable(func):
            raise ConfigError(f"{source}: function: '{config.function}' is not callable")
        return cls(func, name=config.name or config.function, function_ref=config.function,
                   version=config.version, kwargs=config.kwargs, settings=config)

    @classmethod
    def from_callable(cls, func: Callable[..., Any], *, name: str | None = None,
                      version: str | None = None, **settings: Any) -> PythonTarget:
        """Wrap a function object directly (library use and tests)."""
        ref = f"{getattr(func, '__module__', '?')}:{getattr(func, '__qualname__', repr(func))}"
        config = PythonTargetConfig(function=ref, name=name or ref, version=version, **settings)
        return cls(func, name=config.name or ref, function_ref=ref, version=version,
                   kwargs=config.kwargs, settings=config)

    async def complete(self, case: EvalCase, *, sample: int = 0) -> Response:
        kwargs = dict(self.kwargs)
        if self._pass_sample:
            kwargs["sample"] = sample
        t0 = time.perf_counter()
        if self._async:
            result = await self.func(case, **kwargs)
        elif self.threaded:
            result = await asyncio.to_thread(self.func, case, **kwargs)
        else:
            result = self.func(case, **kwargs)
        latency_ms = (time.perf_counter() - t0) * 1000.0
        return _to_response(result, case, sample, latency_ms, self.fingerprint.model or "")


def _to_response(result: Any, case: EvalCase, sample: int, latency_ms: float, ref: str
                 ) -> Response:
    if isinstance(result, Response):
        return result.model_copy(update={"case_id": case.case_id, "sample": sample,
                                         "latency_ms": result.latency_ms
                                         if result.latency_ms is not None else latency_ms})
    if isinstance(result, str):
        return Response(case_id=case.case_id, sample=sample, output=result, latency_ms=latency_ms)
    if isinstance(result, Mapping):
        fields = {k: v for k, v in result.items() if k not in ("case_id", "sample")}
        fields.setdefault("latency_ms", latency_ms)
        if "usage" in fields and isinstance(fields["usage"], Mapping):
            fields["usage"] = Usage(**fields["usage"])
        return Response(case_id=case.case_id, sample=sample, **fields)
    raise TypeError(f"python target {ref} returned {type(result).__name__}; "
                    "expected str, Response or a mapping of Response fields")
