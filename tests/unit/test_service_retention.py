"""Retention: the store's purge, idempotency-key expiry, and the service's purge pass.

Every test works on a temporary SQLite file with records whose timestamps
are set by hand (a fixed ``NOW``), so nothing sleeps and nothing is judged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import rustbox
from rustbox._service import ServiceConfig, SqliteStore
from rustbox._service import _service as service_module
from rustbox._service._metrics import Metrics
from rustbox._service._model import (
    Outcome,
    Status,
    SubmissionRecord,
    SubmitRequest,
    WebhookState,
)
from rustbox._service._queue import WorkQueue
from rustbox._service._service import Service
from rustbox._service._store import Purged

NOW = 1_000_000_000.0
DAY = 86400.0
HOUR = 3600.0
RESULT_TTL = 7 * DAY
KEY_TTL = DAY


def record(
    sid: str, created_at: float, *, key: str | None = None, webhook: bool = False
) -> SubmissionRecord:
    request = SubmitRequest(
        "python", "print(1)", webhook_url="https://example.com/hook" if webhook else None
    )
    return SubmissionRecord(
        id=sid,
        status=Status.PENDING,
        language="python",
        request=request,
        created_at=created_at,
        idempotency_key=key,
        fingerprint=request.fingerprint() if key else None,
        webhook_state=WebhookState.PENDING if webhook else WebhookState.NONE,
    )


def ended(
    store: SqliteStore,
    sid: str,
    completed_at: float,
    *,
    status: Status = Status.COMPLETED,
    key: str | None = None,
    webhook: bool = False,
) -> None:
    """A submission created, run and ended at ``completed_at`` (created a second before)."""
    store.create_sync(record(sid, completed_at - 1, key=key, webhook=webhook))
    assert store.claim_sync(sid, completed_at - 0.5, completed_at + 60) is not None
    outcome = (
        Outcome(Status.COMPLETED, "AC", stdout="1\n", stderr="", exit_code=0)
        if status is Status.COMPLETED
        else Outcome.failed("the service restarted")
    )
    assert store.finish_sync(sid, outcome, completed_at) is not None


def ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT id FROM submissions")}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "retention.db"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    the_store = SqliteStore(str(db))
    the_store.open_sync()
    yield the_store
    the_store.close_sync()


# -- the store ---------------------------------------------------------------------------


def test_finished_submissions_older_than_the_ttl_are_deleted_with_their_key(
    store: SqliteStore, db: Path
) -> None:
    ended(store, "old-ok", NOW - RESULT_TTL - 10, key="k-old")
    ended(store, "old-error", NOW - RESULT_TTL - 1, status=Status.ERROR)
    ended(store, "young", NOW - RESULT_TTL + 10)
    assert store.purge_sync(NOW, RESULT_TTL, 0) == Purged(deleted=2, keys_cleared=0)
    assert ids(db) == {"young"}
    assert store.get_sync("old-ok") is None and store.get_sync("old-error") is None
    assert store.get_by_key_sync("k-old") is None
    # the key is free again: it makes a new submission rather than a conflict
    _, created = store.create_sync(record("new", NOW, key="k-old"))
    assert created
    assert store.purge_sync(NOW, RESULT_TTL, 0) == Purged()  # nothing left to do


def test_pending_and_running_submissions_are_never_purged(store: SqliteStore, db: Path) -> None:
    ancient = NOW - 100 * DAY
    store.create_sync(record("pending", ancient, key="k-pending"))
    store.create_sync(record("running", ancient))
    assert store.claim_sync("running", ancient, ancient + 1) is not None
    assert store.purge_sync(NOW, RESULT_TTL, 0) == Purged()
    assert ids(db) == {"pending", "running"}
    with sqlite3.connect(db) as conn:  # whatever their timestamps say
        conn.execute("UPDATE submissions SET completed_at = ?", (ancient,))
    assert store.purge_sync(NOW, RESULT_TTL, 0) == Purged()
    assert ids(db) == {"pending", "running"}
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE submissions SET completed_at = NULL")
    # ... until they end, and the TTL runs from the end, not from the creation
    assert store.finish_sync("running", Outcome.failed("reaped"), NOW - 1) is not None
    assert store.purge_sync(NOW, RESULT_TTL, 0) == Purged()
    assert store.purge_sync(NOW + RESULT_TTL, RESULT_TTL, 0) == Purged(deleted=1)
    assert ids(db) == {"pending"}


@pytest.mark.parametrize("settled", [WebhookState.DELIVERED, WebhookState.FAILED])
def test_a_submission_whose_webhook_is_owed_is_kept_until_it_is_settled(
    store: SqliteStore, db: Path, settled: WebhookState
) -> None:
    ended(store, "hooked", NOW - RESULT_TTL - DAY, webhook=True)
    ended(store, "plain", NOW - RESULT_TTL - DAY)
    assert [r.id for r in store.webhooks_owed_sync()] == ["hooked"]
    assert store.purge_sync(NOW, RESULT_TTL, KEY_TTL) == Purged(deleted=1)
    assert ids(db) == {"hooked"}
    store.set_webhook_sync("hooked", WebhookState.PENDING, 3, "503")  # still retrying
    assert store.purge_sync(NOW, RESULT_TTL, KEY_TTL) == Purged()
    store.set_webhook_sync("hooked", settled, 5, None)
    assert store.purge_sync(NOW, RESULT_TTL, KEY_TTL) == Purged(deleted=1)
    assert ids(db) == set()


def test_an_expired_idempotency_key_no_longer_finds_its_submission(store: SqliteStore) -> None:
    ended(store, "first", NOW - KEY_TTL - 5, key="order-7")
    since = NOW - KEY_TTL
    assert store.get_by_key_sync("order-7") is not None  # no expiry asked for
    assert store.get_by_key_sync("order-7", since) is None
    fresh = store.get_by_key_sync("order-7", since - 10)
    assert fresh is not None and fresh.id == "first"
    # the same key now makes a new submission (not purged yet: the key moves over)
    stored, created = store.create_sync(record("second", NOW, key="order-7"), since)
    assert created and stored.id == "second"
    moved = store.get_by_key_sync("order-7", since)
    assert moved is not None and moved.id == "second"
    first = store.get_sync("first")  # the old submission stays until the result TTL
    assert first is not None and first.idempotency_key is None and first.fingerprint is None
    assert first.outcome is not None and first.outcome.stdout == "1\n"
    # an unexpired key still replays
    again, created = store.create_sync(record("third", NOW, key="order-7"), since)
    assert not created and again.id == "second"


def test_the_purge_clears_expired_keys_but_keeps_their_submissions(
    store: SqliteStore, db: Path
) -> None:
    ended(store, "old-key", NOW - KEY_TTL - 5, key="a")
    store.create_sync(record("old-pending", NOW - KEY_TTL - 5, key="b"))  # keys expire anyway
    ended(store, "young-key", NOW - KEY_TTL + 5, key="c")
    assert store.purge_sync(NOW, RESULT_TTL, KEY_TTL) == Purged(keys_cleared=2)
    assert ids(db) == {"old-key", "old-pending", "young-key"}
    with sqlite3.connect(db) as conn:
        keys = dict(conn.execute("SELECT id, idempotency_key FROM submissions").fetchall())
    assert keys == {"old-key": None, "old-pending": None, "young-key": "c"}
    assert store.get_by_key_sync("a") is None and store.get_by_key_sync("b") is None
    assert store.purge_sync(NOW, RESULT_TTL, KEY_TTL) == Purged()


def test_a_zero_ttl_turns_that_half_of_the_purge_off(store: SqliteStore, db: Path) -> None:
    ended(store, "ancient", NOW - 1000 * DAY, key="k")
    assert store.purge_sync(NOW, 0, 0) == Purged()
    assert store.purge_sync(NOW, 0, KEY_TTL) == Purged(keys_cleared=1)
    assert ids(db) == {"ancient"}
    assert store.purge_sync(NOW, RESULT_TTL, 0) == Purged(deleted=1)


def test_the_purge_is_bounded_per_call(store: SqliteStore, db: Path) -> None:
    for i in range(5):
        ended(store, f"s{i}", NOW - RESULT_TTL - 100 + i, key=f"k{i}")
    assert store.purge_sync(NOW, RESULT_TTL, 0, limit=2) == Purged(deleted=2)
    assert len(ids(db)) == 3
    assert store.purge_sync(NOW, 0, KEY_TTL, limit=2) == Purged(keys_cleared=2)
    assert store.purge_sync(NOW, RESULT_TTL, 0, limit=2) == Purged(deleted=2)
    assert store.purge_sync(NOW, RESULT_TTL, 0, limit=2) == Purged(deleted=1)
    assert ids(db) == set()


def test_an_existing_database_gets_the_retention_indexes(db: Path) -> None:
    with sqlite3.connect(db) as conn:  # a database from before retention existed
        conn.execute(
            "CREATE TABLE submissions (id TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "language TEXT NOT NULL, request TEXT NOT NULL, idempotency_key TEXT UNIQUE, "
            "fingerprint TEXT, created_at REAL NOT NULL, started_at REAL, completed_at REAL, "
            "deadline REAL, verdict TEXT, stdout TEXT, stderr TEXT, exit_code INTEGER, "
            "signal INTEGER, error_message TEXT, cpu_time REAL, wall_time REAL, "
            "memory_peak INTEGER, details TEXT, webhook_state TEXT NOT NULL DEFAULT 'none', "
            "webhook_attempts INTEGER NOT NULL DEFAULT 0, webhook_error TEXT)"
        )
    store = SqliteStore(str(db))
    store.open_sync()
    try:
        ended(store, "old", NOW - RESULT_TTL - 1)
        plan = store._db().execute(
            "EXPLAIN QUERY PLAN SELECT rowid FROM submissions WHERE completed_at < ? "
            "AND status IN ('completed', 'error') AND webhook_state != 'pending' LIMIT 5",
            (NOW,),
        )
        assert "submissions_by_completion" in " ".join(str(row) for row in plan)
        assert store.purge_sync(NOW, RESULT_TTL, KEY_TTL) == Purged(deleted=1)
    finally:
        store.close_sync()


# -- the service ---------------------------------------------------------------------------


async def open_service(db: Path, **settings: float) -> Service:
    """A Service with its store open and submissions taken, without sandboxes or workers."""
    service = Service(ServiceConfig(db=str(db), **settings))  # type: ignore[arg-type]
    await service.store.open()
    service._queue = WorkQueue(100)
    service._accepting = True
    service.unavailable = None
    return service


@pytest.mark.anyio
async def test_service_purge_runs_batches_until_done_and_counts(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "PURGE_BATCH", 2)
    service = await open_service(db, result_ttl=RESULT_TTL, idempotency_ttl=KEY_TTL)
    assert isinstance(service.store, SqliteStore)
    for i in range(5):
        ended(service.store, f"old{i}", NOW - RESULT_TTL - 100 + i)
    ended(service.store, "young", NOW - 5)
    calls: list[Purged] = []
    purge = service.store.purge

    async def counting(*args: float) -> Purged:
        calls.append(await purge(*args))  # type: ignore[arg-type]
        return calls[-1]

    monkeypatch.setattr(service.store, "purge", counting)
    assert await service.purge(now=NOW) == 5
    assert [c.deleted for c in calls] == [2, 2, 1]
    assert service.metrics.purged == 5
    assert "rustbox_submissions_purged_total 5\n" in service.render_metrics()
    assert ids(db) == {"young"}
    assert await service.get("old0") is None  # what GET /api/result answers 404 for
    assert await service.purge(now=NOW) == 0 and service.metrics.purged == 5
    await service.store.close()


@pytest.mark.anyio
async def test_service_submit_replays_a_key_only_within_its_ttl(db: Path) -> None:
    service = await open_service(db, idempotency_ttl=0.5 * HOUR)
    request = SubmitRequest("python", "print(1)")
    first, created = await service.submit(request, "python", "key-1")
    assert created
    replay, created = await service.submit(request, "python", "key-1")
    assert not created and replay.id == first.id
    # age the first submission past the key TTL (but far from the result TTL)
    assert isinstance(service.store, SqliteStore)
    service.store._db().execute(
        "UPDATE submissions SET created_at = created_at - ? WHERE id = ?", (HOUR, first.id)
    )
    second, created = await service.submit(request, "python", "key-1")
    assert created and second.id != first.id
    kept = await service.get(first.id)
    assert kept is not None and kept.idempotency_key is None
    await service.store.close()


def test_purge_interval_follows_the_shortest_ttl() -> None:
    def interval(**settings: float) -> float | None:
        return Service(ServiceConfig(db=":memory:", **settings)).purge_interval  # type: ignore[arg-type]

    assert interval() == 60.0  # the defaults: 7 days and 24 h, capped at a minute
    assert interval(result_ttl=0, idempotency_ttl=0) is None  # nothing expires: no task
    assert interval(result_ttl=5, idempotency_ttl=0) == 0.5
    assert interval(result_ttl=0, idempotency_ttl=300) == 30
    assert interval(result_ttl=0.1, idempotency_ttl=0) == 0.05  # a floor for tiny test TTLs


# -- settings and metrics -------------------------------------------------------------------


def test_retention_settings_defaults_environment_and_errors() -> None:
    config = ServiceConfig()
    assert (config.result_ttl, config.idempotency_ttl) == (604800, 86400)
    env = {"RUSTBOX_RESULT_TTL": "3600", "RUSTBOX_IDEMPOTENCY_TTL": "0"}
    config = ServiceConfig.from_env(env)
    assert (config.result_ttl, config.idempotency_ttl) == (3600, 0)
    assert ServiceConfig.from_env(env, result_ttl=60.0).result_ttl == 60  # the command line wins
    with pytest.raises(rustbox.InvalidInput) as info:
        ServiceConfig.from_env({"RUSTBOX_RESULT_TTL": "a week"})
    assert info.value.field == "RUSTBOX_RESULT_TTL"
    with pytest.raises(rustbox.InvalidInput) as info:
        ServiceConfig.from_env({"RUSTBOX_IDEMPOTENCY_TTL": "-1"})
    assert info.value.field == "idempotency_ttl"


def test_cli_serve_flags_reach_the_config() -> None:
    from rustbox._cli._main import _SERVE_OPTIONS, build_parser

    args = build_parser().parse_args(["serve", "--result-ttl", "120", "--idempotency-ttl", "30"])
    given = {
        field: getattr(args, option)
        for option, field in _SERVE_OPTIONS.items()
        if getattr(args, option, None) is not None
    }
    config = ServiceConfig.from_env({}, **given)
    assert (config.result_ttl, config.idempotency_ttl) == (120, 30)


def test_purged_counter_is_always_exposed() -> None:
    metrics = Metrics()
    text = metrics.render([])
    assert "# TYPE rustbox_submissions_purged_total counter\n" in text
    assert "rustbox_submissions_purged_total 0\n" in text
    metrics.purged += 3
    assert "rustbox_submissions_purged_total 3\n" in metrics.render([])
