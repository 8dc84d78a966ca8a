"""Where submissions live: a storage interface, and SQLite behind it.

The service talks to :class:`Store` only, so a Postgres backend can follow
without touching the workers or the routes. SQLite is the default: embedded,
nothing to set up, WAL so readers never wait for the writer. Its calls are
blocking, so every one runs in a worker thread (``anyio.to_thread``), one at a
time, never on the event loop.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
import attrs

from rustbox._errors import InvalidInput
from rustbox._service._model import (
    Outcome,
    Status,
    SubmissionRecord,
    SubmitRequest,
    WebhookState,
)

T = TypeVar("T")

#: Rows one purge call touches at most: one short transaction, so requests are not held up.
PURGE_BATCH = 500


@attrs.frozen
class Purged:
    """What one :meth:`Store.purge` call did; a count equal to the limit means more may be left."""

    deleted: int = 0  #: submissions removed (their idempotency keys with them)
    keys_cleared: int = 0  #: expired idempotency keys taken off submissions that stay


class Store(Protocol):
    """Persistence of submissions. Every method is atomic on its own."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create(
        self, record: SubmissionRecord, keys_since: float | None = None
    ) -> tuple[SubmissionRecord, bool]:
        """Insert; if the record's idempotency key is taken, return that row and False.

        A key on a submission created before ``keys_since`` has expired: it is
        taken off that submission and the new one gets it. None: keys never expire.
        """
        ...

    async def get(self, submission_id: str) -> SubmissionRecord | None: ...

    async def get_by_key(
        self, key: str, keys_since: float | None = None
    ) -> SubmissionRecord | None:
        """The submission holding ``key``, unless it was created before ``keys_since``."""
        ...

    async def claim(
        self, submission_id: str, started_at: float, deadline: float
    ) -> SubmissionRecord | None:
        """pending -> running; None if it was not pending (taken, reaped, gone)."""
        ...

    async def finish(
        self, submission_id: str, outcome: Outcome, completed_at: float
    ) -> SubmissionRecord | None:
        """pending/running -> the outcome's status; None if it had already ended."""
        ...

    async def pending(self) -> list[SubmissionRecord]:
        """Submissions waiting for a worker, oldest first (re-queued after a restart)."""
        ...

    async def fail_running(self, message: str, now: float) -> list[str]:
        """Mark every ``running`` submission as an error (the process that ran it is gone)."""
        ...

    async def stuck(self, now: float) -> list[str]:
        """Running submissions past their deadline."""
        ...

    async def webhooks_owed(self) -> list[SubmissionRecord]:
        """Ended submissions whose webhook was not delivered yet."""
        ...

    async def set_webhook(
        self, submission_id: str, state: WebhookState, attempts: int, error: str | None
    ) -> None: ...

    async def purge(
        self,
        now: float,
        result_ttl: float,
        idempotency_ttl: float,
        limit: int = PURGE_BATCH,
    ) -> Purged:
        """Delete ended submissions past ``result_ttl``; clear keys past ``idempotency_ttl``.

        Ages count from ``completed_at`` (results) and ``created_at`` (keys);
        a TTL of 0 turns that half off. Pending and running submissions, and
        those whose webhook is still owed, are kept. At most ``limit`` rows of
        each kind per call: the caller repeats while a count reaches it.
        """
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    language TEXT NOT NULL,
    request TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    fingerprint TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    deadline REAL,
    verdict TEXT,
    stdout TEXT,
    stderr TEXT,
    exit_code INTEGER,
    signal INTEGER,
    error_message TEXT,
    cpu_time REAL,
    wall_time REAL,
    memory_peak INTEGER,
    details TEXT,
    webhook_state TEXT NOT NULL DEFAULT 'none',
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_error TEXT
);
CREATE INDEX IF NOT EXISTS submissions_by_status ON submissions (status, created_at);
CREATE INDEX IF NOT EXISTS submissions_by_completion ON submissions (status, completed_at);
CREATE INDEX IF NOT EXISTS submissions_keyed_by_age ON submissions (created_at)
    WHERE idempotency_key IS NOT NULL;
"""

_COLUMNS = (
    "id, status, language, request, idempotency_key, fingerprint, created_at, started_at, "
    "completed_at, deadline, verdict, stdout, stderr, exit_code, signal, error_message, "
    "cpu_time, wall_time, memory_peak, details, webhook_state, webhook_attempts, webhook_error"
)


def _row_to_record(row: Sequence[Any]) -> SubmissionRecord:
    (
        sid,
        status,
        language,
        request,
        key,
        fingerprint,
        created_at,
        started_at,
        completed_at,
        deadline,
        verdict,
        stdout,
        stderr,
        exit_code,
        signal,
        error_message,
        cpu_time,
        wall_time,
        memory_peak,
        details,
        webhook_state,
        webhook_attempts,
        webhook_error,
    ) = row
    the_status = Status(status)
    outcome = None
    if the_status in (Status.COMPLETED, Status.ERROR):
        outcome = Outcome(
            status=the_status,
            verdict=verdict,
            stdout=stdout,
            stderr=stderr,
            exit_code=exit_code,
            signal=signal,
            error_message=error_message,
            cpu_time=cpu_time,
            wall_time=wall_time,
            memory_peak=memory_peak,
            details=json.loads(details) if details else {},
        )
    return SubmissionRecord(
        id=sid,
        status=the_status,
        language=language,
        request=SubmitRequest.from_dict(json.loads(request)),
        created_at=created_at,
        idempotency_key=key,
        fingerprint=fingerprint,
        started_at=started_at,
        completed_at=completed_at,
        deadline=deadline,
        outcome=outcome,
        webhook_state=WebhookState(webhook_state),
        webhook_attempts=webhook_attempts,
        webhook_error=webhook_error,
    )


class SqliteStore:
    """:class:`Store` on one SQLite connection (WAL, ``synchronous=NORMAL``).

    A killed process loses no committed row (WAL); a power cut may lose the
    last few, which NORMAL trades for a commit without fsync per submission.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # the sync methods may be called from any thread
        self._limiter: anyio.CapacityLimiter | None = None

    # -- sync core (each call takes the lock) -----------------------------

    def open_sync(self) -> None:
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise InvalidInput("db", f"cannot open SQLite database {self.path!r}: {exc}") from None
        self._conn = conn

    def close_sync(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the store is not open")
        return self._conn

    def create_sync(
        self, record: SubmissionRecord, keys_since: float | None = None
    ) -> tuple[SubmissionRecord, bool]:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                if record.idempotency_key is not None:
                    row = db.execute(
                        f"SELECT {_COLUMNS} FROM submissions WHERE idempotency_key = ?",
                        (record.idempotency_key,),
                    ).fetchone()
                    if row is not None:
                        holder = _row_to_record(row)
                        if keys_since is None or holder.created_at >= keys_since:
                            db.execute("COMMIT")
                            return holder, False
                        # expired, not purged yet: the column is UNIQUE, so free it first
                        db.execute(
                            "UPDATE submissions SET idempotency_key = NULL, fingerprint = NULL "
                            "WHERE id = ?",
                            (holder.id,),
                        )
                db.execute(
                    "INSERT INTO submissions (id, status, language, request, idempotency_key, "
                    "fingerprint, created_at, webhook_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        record.status.value,
                        record.language,
                        json.dumps(record.request.to_dict()),
                        record.idempotency_key,
                        record.fingerprint,
                        record.created_at,
                        record.webhook_state.value,
                    ),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return record, True

    def _one(self, sql: str, args: Sequence[Any]) -> SubmissionRecord | None:
        # fetchall: a RETURNING statement commits only once it has been read to the end
        rows = self._db().execute(sql, args).fetchall()
        return _row_to_record(rows[0]) if rows else None

    def get_sync(self, submission_id: str) -> SubmissionRecord | None:
        with self._lock:
            return self._one(f"SELECT {_COLUMNS} FROM submissions WHERE id = ?", (submission_id,))

    def get_by_key_sync(self, key: str, keys_since: float | None = None) -> SubmissionRecord | None:
        sql = f"SELECT {_COLUMNS} FROM submissions WHERE idempotency_key = ?"
        args: tuple[Any, ...] = (key,)
        if keys_since is not None:
            sql, args = sql + " AND created_at >= ?", (key, keys_since)
        with self._lock:
            return self._one(sql, args)

    def claim_sync(
        self, submission_id: str, started_at: float, deadline: float
    ) -> SubmissionRecord | None:
        with self._lock:
            return self._one(
                "UPDATE submissions SET status = 'running', started_at = ?, deadline = ? "
                f"WHERE id = ? AND status = 'pending' RETURNING {_COLUMNS}",
                (started_at, deadline, submission_id),
            )

    def finish_sync(
        self, submission_id: str, outcome: Outcome, completed_at: float
    ) -> SubmissionRecord | None:
        with self._lock:
            return self._one(
                "UPDATE submissions SET status = ?, verdict = ?, stdout = ?, stderr = ?, "
                "exit_code = ?, signal = ?, error_message = ?, cpu_time = ?, wall_time = ?, "
                "memory_peak = ?, details = ?, completed_at = ? "
                f"WHERE id = ? AND status IN ('pending', 'running') RETURNING {_COLUMNS}",
                (
                    outcome.status.value,
                    outcome.verdict,
                    outcome.stdout,
                    outcome.stderr,
                    outcome.exit_code,
                    outcome.signal,
                    outcome.error_message,
                    outcome.cpu_time,
                    outcome.wall_time,
                    outcome.memory_peak,
                    json.dumps(dict(outcome.details)) if outcome.details else None,
                    completed_at,
                    submission_id,
                ),
            )

    def pending_sync(self) -> list[SubmissionRecord]:
        with self._lock:
            rows = self._db().execute(
                f"SELECT {_COLUMNS} FROM submissions WHERE status = 'pending' "
                "ORDER BY created_at, rowid"
            )
            return [_row_to_record(row) for row in rows]

    def fail_running_sync(self, message: str, now: float) -> list[str]:
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "UPDATE submissions SET status = 'error', verdict = 'IE', error_message = ?, "
                    "completed_at = ? WHERE status = 'running' RETURNING id",
                    (message, now),
                )
                .fetchall()
            )
            return [row[0] for row in rows]

    def stuck_sync(self, now: float) -> list[str]:
        with self._lock:
            rows = self._db().execute(
                "SELECT id FROM submissions WHERE status = 'running' AND deadline < ?", (now,)
            )
            return [row[0] for row in rows]

    def webhooks_owed_sync(self) -> list[SubmissionRecord]:
        with self._lock:
            rows = self._db().execute(
                f"SELECT {_COLUMNS} FROM submissions WHERE webhook_state = 'pending' "
                "AND status IN ('completed', 'error') ORDER BY completed_at"
            )
            return [_row_to_record(row) for row in rows]

    def set_webhook_sync(
        self, submission_id: str, state: WebhookState, attempts: int, error: str | None
    ) -> None:
        with self._lock:
            self._db().execute(
                "UPDATE submissions SET webhook_state = ?, webhook_attempts = ?, "
                "webhook_error = ? WHERE id = ?",
                (state.value, attempts, error, submission_id),
            )

    def purge_sync(
        self,
        now: float,
        result_ttl: float,
        idempotency_ttl: float,
        limit: int = PURGE_BATCH,
    ) -> Purged:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                deleted = keys = 0
                if result_ttl > 0:
                    # rowid IN (... LIMIT): DELETE ... LIMIT needs a compile-time option
                    deleted = db.execute(
                        "DELETE FROM submissions WHERE rowid IN (SELECT rowid FROM submissions "
                        "WHERE completed_at < ? AND status IN ('completed', 'error') "
                        "AND webhook_state != 'pending' LIMIT ?)",
                        (now - result_ttl, limit),
                    ).rowcount
                if idempotency_ttl > 0:
                    keys = db.execute(
                        "UPDATE submissions SET idempotency_key = NULL, fingerprint = NULL "
                        "WHERE rowid IN (SELECT rowid FROM submissions "
                        "WHERE idempotency_key IS NOT NULL AND created_at < ? LIMIT ?)",
                        (now - idempotency_ttl, limit),
                    ).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return Purged(deleted=deleted, keys_cleared=keys)

    # -- async face -------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def open(self) -> None:
        await self._call(self.open_sync)

    async def close(self) -> None:
        await self._call(self.close_sync)

    async def create(
        self, record: SubmissionRecord, keys_since: float | None = None
    ) -> tuple[SubmissionRecord, bool]:
        return await self._call(self.create_sync, record, keys_since)

    async def get(self, submission_id: str) -> SubmissionRecord | None:
        return await self._call(self.get_sync, submission_id)

    async def get_by_key(
        self, key: str, keys_since: float | None = None
    ) -> SubmissionRecord | None:
        return await self._call(self.get_by_key_sync, key, keys_since)

    async def claim(
        self, submission_id: str, started_at: float, deadline: float
    ) -> SubmissionRecord | None:
        return await self._call(self.claim_sync, submission_id, started_at, deadline)

    async def finish(
        self, submission_id: str, outcome: Outcome, completed_at: float
    ) -> SubmissionRecord | None:
        return await self._call(self.finish_sync, submission_id, outcome, completed_at)

    async def pending(self) -> list[SubmissionRecord]:
        return await self._call(self.pending_sync)

    async def fail_running(self, message: str, now: float) -> list[str]:
        return await self._call(self.fail_running_sync, message, now)

    async def stuck(self, now: float) -> list[str]:
        return await self._call(self.stuck_sync, now)

    async def webhooks_owed(self) -> list[SubmissionRecord]:
        return await self._call(self.webhooks_owed_sync)

    async def set_webhook(
        self, submission_id: str, state: WebhookState, attempts: int, error: str | None
    ) -> None:
        await self._call(self.set_webhook_sync, submission_id, state, attempts, error)

    async def purge(
        self,
        now: float,
        result_ttl: float,
        idempotency_ttl: float,
        limit: int = PURGE_BATCH,
    ) -> Purged:
        return await self._call(self.purge_sync, now, result_ttl, idempotency_ttl, limit)
