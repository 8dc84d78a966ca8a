"""Where submissions live: a storage interface, and SQLite behind it.

The service talks to :class:`Store` only, so a Postgres backend can follow
without touching the workers or the routes. SQLite is the default: embedded,
nothing to set up, WAL so readers never wait for the writer. Its calls are
blocking (a write may wait for a checkpoint's fsync, or for another process's
lock), so they run in the store's own thread, never on the event loop; the
calls that queue up meanwhile go together, one thread handoff and one
transaction per batch. A handoff costs as much cpu as a call's SQL or more
(two thread wake-ups), so under load a call pays a fraction of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

import anyio
import attrs

from rustbox._errors import InvalidInput
from rustbox._service._model import (
    Outcome,
    Status,
    SubmissionRecord,
    SubmitRequest,
    WebhookState,
)

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


Body = Callable[[sqlite3.Connection], Any]

#: Calls one batch takes at most: a transaction stays short.
MAX_BATCH = 64


def _waker(event: anyio.Event) -> Callable[[], object]:
    """Sets ``event`` from another thread: scheduled in its event loop, not waited for."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: trio (anyio's other backend)
        import trio

        return partial(trio.lowlevel.current_trio_token().run_sync_soon, event.set)
    return partial(loop.call_soon_threadsafe, event.set)


@attrs.define(eq=False)
class _Call:
    """A store call waiting for the writer, and (once run) how it went."""

    done: bool = attrs.field(default=False, init=False)
    result: Any = attrs.field(default=None, init=False)
    error: BaseException | None = attrs.field(default=None, init=False)
    #: handed the writer's turn: its caller runs the next batch
    lead: bool = attrs.field(default=False, init=False)
    #: set when done, or when handed the turn (None for the caller that took the turn)
    event: anyio.Event | None = attrs.field(default=None, init=False)


@attrs.define(eq=False)
class _Op(_Call):
    """A call on the open connection; batched with its neighbours."""

    body: Body  #: runs on the connection, inside the batch's transaction
    writes: bool  #: a batch with no write needs no transaction
    #: several statements that must stand or fall together (alone, it gets a transaction)
    compound: bool = False


@attrs.define(eq=False)
class _Action(_Call):
    """Open or close: runs alone, outside any transaction (the connection comes or goes)."""

    run: Callable[[], object]


class SqliteStore:
    """:class:`Store` on one SQLite connection (WAL, ``synchronous=NORMAL``).

    A killed process loses no committed row (WAL); a power cut may lose the
    last few, which NORMAL trades for a commit without fsync per submission.

    Calls queue for a single writer. Whoever finds it idle takes the turn:
    it hands everything queued by then, as one batch, to the store's thread,
    which runs it in one transaction (group commit), each call in a savepoint
    of its own so that one failing call fails alone; then it hands the turn
    to the oldest call still queued. Under load a request's create, claim and
    finish share batches, and thread handoffs, with other requests' calls.
    (The thread is the store's own rather than ``anyio.to_thread``'s: a bare
    queue and a loop callback cost half as much cpu per handoff.)
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # the sync methods may be called from any thread
        self._queue: deque[_Call] = deque()
        self._busy = False  #: a caller holds the writer's turn
        self._jobs: queue.SimpleQueue[tuple[_Action | list[_Op], Callable[[], object]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    # -- sync core ----------------------------------------------------------

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

    def _run_action(self, action: _Action) -> None:
        try:
            action.result = action.run()
        except BaseException as exc:
            action.error = exc

    def _run_batch(self, batch: Sequence[_Op]) -> None:
        """Run the calls in order, one transaction for all; never raises (each op keeps its own).

        Runs in the store's thread (or in the caller's, for the ``*_sync`` methods).
        """
        first = batch[0]
        with self._lock:
            try:
                db = self._db()
                if len(batch) == 1 and not first.compound:
                    # one statement commits on its own, and a read needs no transaction
                    first.result = first.body(db)
                    return
                writes = any(op.writes for op in batch)
                if len(batch) == 1:
                    self._transaction(db, first)
                elif writes:
                    self._group(db, batch)
                else:
                    for op in batch:
                        try:
                            op.result = op.body(db)
                        except Exception as exc:
                            op.error = exc
            except BaseException as exc:
                for op in batch:
                    if op.error is None:
                        op.result, op.error = None, exc

    @staticmethod
    def _transaction(db: sqlite3.Connection, op: _Op) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            op.result = op.body(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _group(db: sqlite3.Connection, batch: Sequence[_Op]) -> None:
        """Group commit: one transaction, a savepoint per call so each stands alone."""
        db.execute("BEGIN IMMEDIATE")
        try:
            for op in batch:
                db.execute("SAVEPOINT op")
                try:
                    op.result = op.body(db)
                except Exception as exc:
                    op.error = exc
                    db.execute("ROLLBACK TO op")
                db.execute("RELEASE op")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _sync(self, op: _Op) -> Any:
        self._run_batch([op])
        if op.error is not None:
            raise op.error
        return op.result

    # -- the calls: bodies run inside a batch ---------------------------------

    @staticmethod
    def _create(
        record: SubmissionRecord, keys_since: float | None
    ) -> Callable[[sqlite3.Connection], tuple[SubmissionRecord, bool]]:
        def body(db: sqlite3.Connection) -> tuple[SubmissionRecord, bool]:
            if record.idempotency_key is not None:
                row = db.execute(
                    f"SELECT {_COLUMNS} FROM submissions WHERE idempotency_key = ?",
                    (record.idempotency_key,),
                ).fetchone()
                if row is not None:
                    holder = _row_to_record(row)
                    if keys_since is None or holder.created_at >= keys_since:
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
            return record, True

        return body

    @staticmethod
    def _one(sql: str, args: Sequence[Any]) -> Body:
        def body(db: sqlite3.Connection) -> SubmissionRecord | None:
            # fetchall: a RETURNING statement commits only once it has been read to the end
            rows = db.execute(sql, args).fetchall()
            return _row_to_record(rows[0]) if rows else None

        return body

    @staticmethod
    def _records(sql: str, args: Sequence[Any] = ()) -> Body:
        def body(db: sqlite3.Connection) -> list[SubmissionRecord]:
            return [_row_to_record(row) for row in db.execute(sql, args).fetchall()]

        return body

    @staticmethod
    def _ids(sql: str, args: Sequence[Any]) -> Body:
        def body(db: sqlite3.Connection) -> list[str]:
            return [row[0] for row in db.execute(sql, args).fetchall()]

        return body

    def _create_op(self, record: SubmissionRecord, keys_since: float | None) -> _Op:
        # compound only with a key: a plain insert is a single statement
        return _Op(
            self._create(record, keys_since),
            writes=True,
            compound=record.idempotency_key is not None,
        )

    def _get_op(self, submission_id: str) -> _Op:
        sql = f"SELECT {_COLUMNS} FROM submissions WHERE id = ?"
        return _Op(self._one(sql, (submission_id,)), writes=False)

    def _get_by_key_op(self, key: str, keys_since: float | None) -> _Op:
        sql = f"SELECT {_COLUMNS} FROM submissions WHERE idempotency_key = ?"
        args: tuple[Any, ...] = (key,)
        if keys_since is not None:
            sql, args = sql + " AND created_at >= ?", (key, keys_since)
        return _Op(self._one(sql, args), writes=False)

    def _claim_op(self, submission_id: str, started_at: float, deadline: float) -> _Op:
        sql = (
            "UPDATE submissions SET status = 'running', started_at = ?, deadline = ? "
            f"WHERE id = ? AND status = 'pending' RETURNING {_COLUMNS}"
        )
        return _Op(self._one(sql, (started_at, deadline, submission_id)), writes=True)

    def _finish_op(self, submission_id: str, outcome: Outcome, completed_at: float) -> _Op:
        sql = (
            "UPDATE submissions SET status = ?, verdict = ?, stdout = ?, stderr = ?, "
            "exit_code = ?, signal = ?, error_message = ?, cpu_time = ?, wall_time = ?, "
            "memory_peak = ?, details = ?, completed_at = ? "
            f"WHERE id = ? AND status IN ('pending', 'running') RETURNING {_COLUMNS}"
        )
        args = (
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
        )
        return _Op(self._one(sql, args), writes=True)

    def _pending_op(self) -> _Op:
        sql = (
            f"SELECT {_COLUMNS} FROM submissions WHERE status = 'pending' "
            "ORDER BY created_at, rowid"
        )
        return _Op(self._records(sql), writes=False)

    def _fail_running_op(self, message: str, now: float) -> _Op:
        sql = (
            "UPDATE submissions SET status = 'error', verdict = 'IE', error_message = ?, "
            "completed_at = ? WHERE status = 'running' RETURNING id"
        )
        return _Op(self._ids(sql, (message, now)), writes=True)

    def _stuck_op(self, now: float) -> _Op:
        sql = "SELECT id FROM submissions WHERE status = 'running' AND deadline < ?"
        return _Op(self._ids(sql, (now,)), writes=False)

    def _webhooks_owed_op(self) -> _Op:
        sql = (
            f"SELECT {_COLUMNS} FROM submissions WHERE webhook_state = 'pending' "
            "AND status IN ('completed', 'error') ORDER BY completed_at"
        )
        return _Op(self._records(sql), writes=False)

    def _set_webhook_op(
        self, submission_id: str, state: WebhookState, attempts: int, error: str | None
    ) -> _Op:
        def body(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE submissions SET webhook_state = ?, webhook_attempts = ?, "
                "webhook_error = ? WHERE id = ?",
                (state.value, attempts, error, submission_id),
            )

        return _Op(body, writes=True)

    def _purge_op(self, now: float, result_ttl: float, idempotency_ttl: float, limit: int) -> _Op:
        def body(db: sqlite3.Connection) -> Purged:
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
            return Purged(deleted=deleted, keys_cleared=keys)

        return _Op(body, writes=True, compound=True)

    # -- sync face (tests, tools): each call its own batch, in the caller's thread

    def create_sync(
        self, record: SubmissionRecord, keys_since: float | None = None
    ) -> tuple[SubmissionRecord, bool]:
        result: tuple[SubmissionRecord, bool] = self._sync(self._create_op(record, keys_since))
        return result

    def get_sync(self, submission_id: str) -> SubmissionRecord | None:
        result: SubmissionRecord | None = self._sync(self._get_op(submission_id))
        return result

    def get_by_key_sync(self, key: str, keys_since: float | None = None) -> SubmissionRecord | None:
        result: SubmissionRecord | None = self._sync(self._get_by_key_op(key, keys_since))
        return result

    def claim_sync(
        self, submission_id: str, started_at: float, deadline: float
    ) -> SubmissionRecord | None:
        result: SubmissionRecord | None = self._sync(
            self._claim_op(submission_id, started_at, deadline)
        )
        return result

    def finish_sync(
        self, submission_id: str, outcome: Outcome, completed_at: float
    ) -> SubmissionRecord | None:
        result: SubmissionRecord | None = self._sync(
            self._finish_op(submission_id, outcome, completed_at)
        )
        return result

    def pending_sync(self) -> list[SubmissionRecord]:
        result: list[SubmissionRecord] = self._sync(self._pending_op())
        return result

    def fail_running_sync(self, message: str, now: float) -> list[str]:
        result: list[str] = self._sync(self._fail_running_op(message, now))
        return result

    def stuck_sync(self, now: float) -> list[str]:
        result: list[str] = self._sync(self._stuck_op(now))
        return result

    def webhooks_owed_sync(self) -> list[SubmissionRecord]:
        result: list[SubmissionRecord] = self._sync(self._webhooks_owed_op())
        return result

    def set_webhook_sync(
        self, submission_id: str, state: WebhookState, attempts: int, error: str | None
    ) -> None:
        self._sync(self._set_webhook_op(submission_id, state, attempts, error))

    def purge_sync(
        self,
        now: float,
        result_ttl: float,
        idempotency_ttl: float,
        limit: int = PURGE_BATCH,
    ) -> Purged:
        result: Purged = self._sync(self._purge_op(now, result_ttl, idempotency_ttl, limit))
        return result

    # -- the writer -----------------------------------------------------------

    def _writer(self) -> None:
        """The store's thread: runs the batches it is handed, wakes their event loop.

        SCHED_BATCH: woken, it waits for the event loop's thread to block
        rather than preempting it, which would only stall the loop (holding
        the GIL this thread needs) and cost two context switches per batch.
        """
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        while (job := self._jobs.get()) is not None:
            batch, wake = job
            if isinstance(batch, _Action):
                self._run_action(batch)
            else:
                self._run_batch(batch)
            try:
                wake()
            except Exception:  # the event loop is gone: nobody is waiting
                pass

    async def _call(self, op: _Call) -> Any:
        """Queue ``op`` and return its result (or raise its error) once a batch has run it.

        As with a worker-thread call, cancelling the caller drops a call not
        taken yet; one already taken is seen through, and the cancellation
        strikes at the caller's next checkpoint (so a row written is never
        lost to its caller).
        """
        self._queue.append(op)
        if not self._busy:
            self._busy = True
            await self._take_turn(op)
        else:
            op.event = anyio.Event()
            try:
                await op.event.wait()
            except anyio.get_cancelled_exc_class():
                if not op.lead and op in self._queue:  # not taken: it never runs
                    self._queue.remove(op)
                    raise
                with anyio.CancelScope(shield=True):
                    await self._see_through(op)
            else:
                await self._see_through(op)
        if op.error is not None:
            raise op.error
        return op.result

    async def _see_through(self, op: _Call) -> None:
        """Until ``op`` has run: run batches if it is handed the turn, else wait."""
        while not op.done:
            if op.lead:
                await self._take_turn(op)
            else:  # taken by a batch still running (the wait was cut short)
                assert op.event is not None
                await op.event.wait()

    async def _take_turn(self, mine: _Call) -> None:
        """Run batches until ``mine`` has run, then hand the turn to the oldest queued call."""
        with anyio.CancelScope(shield=True):  # a batch taken is run, and the turn handed on
            try:
                while not mine.done:
                    batch = self._take()
                    calls = [batch] if isinstance(batch, _Action) else batch
                    try:
                        if self._thread is None:
                            self._thread = threading.Thread(
                                target=self._writer, name="rustbox-store", daemon=True
                            )
                            self._thread.start()
                        ran = anyio.Event()
                        self._jobs.put((batch, _waker(ran)))
                        await ran.wait()
                    except BaseException as exc:  # no thread to run it, or the wait broke off
                        for call in calls:
                            call.error = call.error or exc
                        if not isinstance(exc, Exception):
                            raise
                    finally:
                        for call in calls:
                            call.done = True
                            if call.event is not None:
                                call.event.set()
            finally:
                if self._queue:
                    nxt = self._queue[0]
                    nxt.lead = True
                    assert nxt.event is not None
                    nxt.event.set()
                else:
                    self._busy = False

    def _take(self) -> _Action | list[_Op]:
        """The next batch: an open or close alone, else the calls queued up to the next one."""
        pending = self._queue
        first = pending.popleft()
        if isinstance(first, _Action):
            return first
        assert isinstance(first, _Op)
        batch = [first]
        while pending and len(batch) < MAX_BATCH:
            nxt = pending[0]
            if not isinstance(nxt, _Op):
                break
            batch.append(nxt)
            pending.popleft()
        return batch

    # -- async face -------------------------------------------------------

    async def open(self) -> None:
        await self._call(_Action(self.open_sync))

    async def close(self) -> None:
        await self._call(_Action(self.close_sync))
        if self._thread is not None:  # it ends after the batches handed to it so far
            self._jobs.put(None)
            self._thread = None

    async def create(
        self, record: SubmissionRecord, keys_since: float | None = None
    ) -> tuple[SubmissionRecord, bool]:
        result: tuple[SubmissionRecord, bool] = await self._call(
            self._create_op(record, keys_since)
        )
        return result

    async def get(self, submission_id: str) -> SubmissionRecord | None:
        result: SubmissionRecord | None = await self._call(self._get_op(submission_id))
        return result

    async def get_by_key(
        self, key: str, keys_since: float | None = None
    ) -> SubmissionRecord | None:
        result: SubmissionRecord | None = await self._call(self._get_by_key_op(key, keys_since))
        return result

    async def claim(
        self, submission_id: str, started_at: float, deadline: float
    ) -> SubmissionRecord | None:
        result: SubmissionRecord | None = await self._call(
            self._claim_op(submission_id, started_at, deadline)
        )
        return result

    async def finish(
        self, submission_id: str, outcome: Outcome, completed_at: float
    ) -> SubmissionRecord | None:
        result: SubmissionRecord | None = await self._call(
            self._finish_op(submission_id, outcome, completed_at)
        )
        return result

    async def pending(self) -> list[SubmissionRecord]:
        result: list[SubmissionRecord] = await self._call(self._pending_op())
        return result

    async def fail_running(self, message: str, now: float) -> list[str]:
        result: list[str] = await self._call(self._fail_running_op(message, now))
        return result

    async def stuck(self, now: float) -> list[str]:
        result: list[str] = await self._call(self._stuck_op(now))
        return result

    async def webhooks_owed(self) -> list[SubmissionRecord]:
        result: list[SubmissionRecord] = await self._call(self._webhooks_owed_op())
        return result

    async def set_webhook(
        self, submission_id: str, state: WebhookState, attempts: int, error: str | None
    ) -> None:
        await self._call(self._set_webhook_op(submission_id, state, attempts, error))

    async def purge(
        self,
        now: float,
        result_ttl: float,
        idempotency_ttl: float,
        limit: int = PURGE_BATCH,
    ) -> Purged:
        result: Purged = await self._call(self._purge_op(now, result_ttl, idempotency_ttl, limit))
        return result
