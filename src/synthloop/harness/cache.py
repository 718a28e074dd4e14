"""A content-addressed response cache in SQLite (WAL), safe for several processes at once.

Keys are sha256 digests of canonical JSON of what determines a reply: the target fingerprint,
the request (messages, parameters) and a sample index for repeated sampling. Values are JSON.
A cached response is never paid for twice; API keys are never part of a key or a value.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def make_key(*parts: Any) -> str:
    """A stable content address for any JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """SQLite-backed key → JSON value store. One connection per thread; WAL for many processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        conn = self._conn()
        conn.execute(_SCHEMA)
        conn.commit()
        self.hits = 0
        self.misses = 0

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> Any | None:
        row = self._conn().execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        """Look up many keys at once (chunked), returning only the hits."""
        out: dict[str, Any] = {}
        conn = self._conn()
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = f"SELECT key, value FROM responses WHERE key IN ({','.join('?' * len(chunk))})"
            for k, v in conn.execute(q, chunk):
                out[k] = json.loads(v)
        self.hits += len(out)
        self.misses += len(keys) - len(out)
        return out

    def put(self, key: str, value: Any) -> None:
        blob = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        self._conn().execute(
            "INSERT OR IGNORE INTO responses (key, value, created) VALUES (?, ?, ?)",
            (key, blob, time.time()),
        )

    def put_many(self, items: list[tuple[str, Any]]) -> None:
        conn = self._conn()
        now = time.time()
        conn.execute("BEGIN")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO responses (key, value, created) VALUES (?, ?, ?)",
                [(k, json.dumps(v, ensure_ascii=False, separators=(",", ":")), now)
                 for k, v in items],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
