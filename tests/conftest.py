"""Shared test fixtures: every test runs offline with a temporary HOME (SDV writes under it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_UPDATE_DOWNLOAD_COUNTS", "0")
    monkeypatch.setenv("SYNTHLOOP_PROGRESS", "0")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data`, or skip where it is absent (a user's clone does not have it)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def repo_root() -> Path:
    return REPO


def run_cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run the CLI in a subprocess; returns (exit code, stdout, stderr)."""
    import subprocess
    import sys

    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "synthloop.cli", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=600,
    )
    return proc.returncode, proc.stdout, proc.stderr
