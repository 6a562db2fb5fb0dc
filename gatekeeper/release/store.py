"""The version store: every candidate of an adapter, its verdicts and its release channel.

One SQLite file (WAL mode) beside the adapters: ``<adapters>/versions.sqlite``.
Every change is one transaction, so a process killed half-way through a
promote or a rollback leaves the store as it was before, never with two
production versions or an event without its change.
"""

from __future__ import annotations

import getpass
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from gatekeeper.errors import GatekeeperError

CHANNELS = ("candidate", "production", "archived")
STORE_FILE = "versions.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    signature TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT 'candidate' CHECK (channel IN ('candidate', 'production', 'archived')),
    registered_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS one_production ON versions (name) WHERE channel = 'production';
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    verdict_sha256 TEXT NOT NULL,
    passed INTEGER NOT NULL,
    exit_code INTEGER NOT NULL,
    report_path TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replays (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    action TEXT NOT NULL,
    channel_from TEXT,
    channel_to TEXT,
    actor TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    channel TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lineage (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    method TEXT NOT NULL,
    parent_name TEXT,
    parent_version INTEGER,
    parent_manifest_sha256 TEXT,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (name, version, manifest_sha256)
);
"""
# A table, never a new column: CREATE TABLE IF NOT EXISTS brings an older store up to date when it
# is opened, with nothing to migrate. ``policies`` holds the release policy (``release.policy``) a
# channel change was allowed under, tied to that change's event. ``lineage`` holds each registered
# bundle's training method and the parent version it was trained from (method dpo), if any.


class VersionStoreError(GatekeeperError):
    pass


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _actor() -> str:
    try:
        return os.environ.get("GATEKEEPER_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def store_for(bundle_root: Path) -> Path:
    """adapters/<name>/vN -> adapters/versions.sqlite"""
    return bundle_root.resolve().parent.parent / STORE_FILE


def _crash_point(name: str) -> None:
    """Fault injection for the kill-safety tests: die here, mid-transaction, like a SIGKILL would."""
    if os.environ.get("GATEKEEPER_CRASH_AT") == name:
        os._exit(137)


@dataclass(frozen=True)
class PolicyUse:
    """The release policy file a channel change was judged against: where it was and its sha256."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class Lineage:
    """The parent a version was trained from: its name, version and exactly which bundle.yaml."""

    name: str | None
    version: int | None
    manifest_sha256: str | None

    def __iter__(self):
        return iter((self.name, self.version, self.manifest_sha256))

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


@dataclass(frozen=True)
class VersionRow:
    name: str
    version: int
    path: str
    manifest_sha256: str
    signature: str
    channel: str
    registered_at: str


class VersionStore:
    def __init__(self, path: Path, *, create: bool = True):
        """Open the store at ``path``; with ``create`` False a missing store is an error, not a new file."""
        path = Path(path)
        if not create and not path.is_file():
            raise VersionStoreError(f"no version store at {path}")
        if path.exists() and not path.is_file():
            raise VersionStoreError(f"{path}: a directory, not a version store")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:  # a file that is not SQLite, or one of another schema
            self.db.close()
            raise VersionStoreError(f"{path}: not a gatekeeper version store ({exc})") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _transaction(self):
        return _Transaction(self.db)

    # -- writes -------------------------------------------------------------
    def register(self, name: str, version: int, path: Path, manifest_sha256: str, signature: str,
                 method: str | None = None, parent: Lineage | None = None) -> None:
        """Record the version; with ``method``, in the same transaction, how it was made: its training
        method and, for a child (method dpo), the parent version it continues."""
        with self._transaction():
            self.db.execute(
                "INSERT INTO versions (name, version, path, manifest_sha256, signature, registered_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name, version) DO UPDATE SET path=excluded.path, manifest_sha256=excluded.manifest_sha256,"
                " signature=excluded.signature",
                (name, version, str(path), manifest_sha256, signature, _now()),
            )
            if method is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO lineage (name, version, manifest_sha256, method, parent_name,"
                    " parent_version, parent_manifest_sha256, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, version, manifest_sha256, method, *(parent or Lineage(None, None, None)), _now()),
                )

    def record_verdict(self, name: str, version: int, manifest_sha256: str, verdict_sha256: str,
                       passed: bool, exit_code: int, report_path: Path) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT INTO verdicts (name, version, manifest_sha256, verdict_sha256, passed, exit_code, report_path, recorded_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, version, manifest_sha256, verdict_sha256, int(passed), exit_code, str(report_path), _now()),
            )

    def record_replay(self, name: str, version: int, manifest_sha256: str, path: Path, sha256: str) -> None:
        """Where a check left the version's replay record (``gatekeeper.release.replay``), and its hash."""
        with self._transaction():
            self.db.execute(
                "INSERT INTO replays (name, version, manifest_sha256, path, sha256, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, version, manifest_sha256, str(path), sha256, _now()),
            )

    def set_production(self, name: str, version: int, action: str, policy: PolicyUse | None = None) -> int | None:
        """Make ``version`` the one production version; the previous one is archived. Returns it.

        ``policy``, the release policy the change was judged against, is recorded in the same transaction.
        """
        with self._transaction():
            previous = self.production(name)
            if previous is not None and previous.version != version:
                self.db.execute("UPDATE versions SET channel='archived' WHERE name=? AND version=?", (name, previous.version))
                self._event(name, previous.version, "archive", "production", "archived")
            _crash_point("after_archive")
            current = self.version(name, version)
            self.db.execute("UPDATE versions SET channel='production' WHERE name=? AND version=?", (name, version))
            event = self._event(name, version, action, current.channel, "production")
            self._policy(event, name, version, "production", policy)
            _crash_point("before_commit")
        return previous.version if previous else None

    def set_channel(self, name: str, version: int, channel: str, policy: PolicyUse | None = None) -> None:
        if channel not in CHANNELS:
            raise VersionStoreError(f"unknown channel {channel!r}; channels are {', '.join(CHANNELS)}")
        with self._transaction():
            current = self.version(name, version)
            self.db.execute("UPDATE versions SET channel=? WHERE name=? AND version=?", (channel, name, version))
            event = self._event(name, version, f"set {channel}", current.channel, channel)
            self._policy(event, name, version, channel, policy)

    def _event(self, name, version, action, channel_from, channel_to) -> int:
        cursor = self.db.execute(
            "INSERT INTO events (name, version, action, channel_from, channel_to, actor, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, version, action, channel_from, channel_to, _actor(), _now()),
        )
        return cursor.lastrowid

    def _policy(self, event: int, name: str, version: int, channel: str, policy: PolicyUse | None) -> None:
        if policy is not None:
            self.db.execute(
                "INSERT INTO policies (event_id, name, version, channel, path, sha256, recorded_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (event, name, version, channel, str(policy.path), policy.sha256, _now()),
            )

    # -- reads --------------------------------------------------------------
    def version(self, name: str, version: int) -> VersionRow:
        row = self.db.execute(
            "SELECT name, version, path, manifest_sha256, signature, channel, registered_at FROM versions"
            " WHERE name=? AND version=?", (name, version),
        ).fetchone()
        if row is None:
            known = [f"v{v}" for v in self.versions(name)]
            raise VersionStoreError(f"{name} v{version} is not in the store {self.path} (known: {', '.join(known) or 'none'})")
        return VersionRow(*row)

    def versions(self, name: str) -> list[int]:
        return [v for (v,) in self.db.execute("SELECT version FROM versions WHERE name=? ORDER BY version", (name,))]

    def production(self, name: str) -> VersionRow | None:
        row = self.db.execute("SELECT version FROM versions WHERE name=? AND channel='production'", (name,)).fetchone()
        return self.version(name, row[0]) if row else None

    def latest_verdict(self, name: str, version: int) -> dict | None:
        row = self.db.execute(
            "SELECT manifest_sha256, verdict_sha256, passed, exit_code, report_path, recorded_at FROM verdicts"
            " WHERE name=? AND version=? ORDER BY id DESC LIMIT 1", (name, version),
        ).fetchone()
        keys = ("manifest_sha256", "verdict_sha256", "passed", "exit_code", "report_path", "recorded_at")
        return dict(zip(keys, row)) if row else None

    def latest_replay(self, name: str, version: int, manifest_sha256: str) -> dict | None:
        """The newest replay record of exactly this bundle.yaml, or None."""
        row = self.db.execute(
            "SELECT path, sha256, recorded_at FROM replays WHERE name=? AND version=? AND manifest_sha256=?"
            " ORDER BY id DESC LIMIT 1", (name, version, manifest_sha256),
        ).fetchone()
        return dict(zip(("path", "sha256", "recorded_at"), row)) if row else None

    def verdicts(self, name: str) -> list[dict]:
        keys = ("version", "passed", "exit_code", "verdict_sha256", "recorded_at")
        rows = self.db.execute(
            "SELECT version, passed, exit_code, verdict_sha256, recorded_at FROM verdicts WHERE name=? ORDER BY id", (name,)
        )
        return [dict(zip(keys, r)) for r in rows]

    def lineage(self, name: str, version: int) -> tuple[str, Lineage | None] | None:
        """(method, parent) of the bundle registered as this version now, or None if never recorded."""
        row = self.db.execute(
            "SELECT l.method, l.parent_name, l.parent_version, l.parent_manifest_sha256 FROM lineage l"
            " JOIN versions v ON v.name = l.name AND v.version = l.version AND v.manifest_sha256 = l.manifest_sha256"
            " WHERE l.name=? AND l.version=?", (name, version),
        ).fetchone()
        if row is None:
            return None
        return row[0], (Lineage(*row[1:]) if row[1] is not None else None)

    def children(self, name: str) -> list[tuple[int, str, int]]:
        """(parent version, child name, child version) for every registered version trained from one of ``name``'s."""
        rows = self.db.execute(
            "SELECT l.parent_version, l.name, l.version FROM lineage l"
            " JOIN versions v ON v.name = l.name AND v.version = l.version AND v.manifest_sha256 = l.manifest_sha256"
            " WHERE l.parent_name=? ORDER BY l.parent_version, l.name, l.version", (name,),
        )
        return [tuple(r) for r in rows]

    def policies(self, name: str) -> list[dict]:
        """Every release policy a channel change of ``name`` was judged against, oldest first, with its event."""
        keys = ("event_id", "version", "channel", "path", "sha256", "recorded_at")
        rows = self.db.execute(
            "SELECT event_id, version, channel, path, sha256, recorded_at FROM policies WHERE name=? ORDER BY id", (name,)
        )
        return [dict(zip(keys, r)) for r in rows]

    def events(self, name: str) -> list[dict]:
        keys = ("version", "action", "channel_from", "channel_to", "actor", "at")
        rows = self.db.execute(
            "SELECT version, action, channel_from, channel_to, actor, at FROM events WHERE name=? ORDER BY id", (name,)
        )
        return [dict(zip(keys, r)) for r in rows]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


