"""The service core: store, queue, workers on one Supervisor, reaper, webhooks, shutdown.

The HTTP layer (``_app``) only parses and answers; everything with state
lives here, so it can be driven (and tested) without a server.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from rustbox import __version__
from rustbox._errors import HostUnsupported, InvalidInput
from rustbox._host._probe import HostReport, probe_host
from rustbox._judge import LanguageTable, Submission, Supervisor, Toolchain, probe_toolchains
from rustbox._service._config import ServiceConfig
from rustbox._service._log import service_logger
from rustbox._service._metrics import Metrics
from rustbox._service._model import (
    Outcome,
    Status,
    SubmissionRecord,
    SubmitRequest,
    WebhookState,
    outcome_from_report,
)
from rustbox._service._queue import WorkQueue
from rustbox._service._store import PURGE_BATCH, SqliteStore, Store
from rustbox._service._webhooks import (
    Resolver,
    WebhookSender,
    check_webhook_url,
    new_client,
    system_resolver,
)

RESTARTED = "the service restarted while this submission was running; it was not re-run"
#: The purge runs every tenth of the shortest TTL, and at most this many seconds apart.
PURGE_EVERY = 60.0


class Unavailable(Exception):
    """The service cannot take a submission now (answered with 503)."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different body (answered with 422)."""

    def __init__(self, submission_id: str) -> None:
        super().__init__(
            f"Idempotency-Key already used for submission {submission_id} with a different body"
        )
        self.submission_id = submission_id


@attrs.define(eq=False)
class _Running:
    """A submission a worker holds; its scope cancels the judge (which kills the sandboxes)."""

    scope: anyio.CancelScope
    reason: str | None = None


@attrs.define(eq=False)
class _Waiter:
    """Requests waiting (``?wait=true``) for one submission; the worker hands them the end."""

    event: anyio.Event
    record: SubmissionRecord | None = None


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class Service:
    """Judges submissions in the background and remembers them.

    ``async with Service(config) as service:`` opens the store, re-queues
    what a previous process left pending, marks what it left running as an
    error, starts the Supervisor and the workers. Leaving the block drains
    (see :meth:`shutdown`) and closes everything.
    """

    def __init__(
        self,
        config: ServiceConfig,
        *,
        store: Store | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.config = config
        self.store: Store = store if store is not None else SqliteStore(config.db)
        self.resolver = resolver
        self.languages = (
            LanguageTable.from_file(config.languages_config)
            if config.languages_config
            else LanguageTable()
        )
        self.metrics = Metrics()
        self.log = service_logger().bind(node=config.node_id)
        self.host: HostReport | None = None
        self.unavailable: str | None = "the service is starting"
        self.started_at = time.time()
        self._sv: Supervisor | None = None
        self._queue: WorkQueue | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._running: dict[str, _Running] = {}
        self._idle_scopes: set[anyio.CancelScope] = set()
        self._waiters: dict[str, _Waiter] = {}
        self._changed: anyio.Event | None = None
        self._accepting = False
        self._draining = False
        self._stopped: anyio.Event | None = None
        self._started: anyio.Event | None = None
        self._toolchains: list[Toolchain] | None = None
        self._toolchain_lock: anyio.Lock | None = None
        self._sender: WebhookSender | None = None
        self._drain_scope: anyio.CancelScope | None = None
        self._drain_cut = False

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._started = anyio.Event()
        self._changed = anyio.Event()
        self._toolchain_lock = anyio.Lock()
        self._queue = WorkQueue(self.config.queue_size)
        async with contextlib.AsyncExitStack() as stack:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            client = new_client(self.config.webhook_timeout)
            stack.push_async_callback(client.aclose)
            self._sender = WebhookSender(
                client,
                allow_localhost=self.config.allow_localhost_webhooks,
                attempts=self.config.webhook_attempts,
                backoff=self.config.webhook_backoff,
                resolver=self.resolver,
                user_agent=f"rustbox/{__version__}",
                on_attempt=self._count_webhook,
            )
            self.host = await anyio.to_thread.run_sync(probe_host)
            try:
                self._sv = await stack.enter_async_context(
                    Supervisor(max_concurrency=self.config.workers, languages=self.languages)
                )
                self.unavailable = None
            except HostUnsupported as exc:
                self.unavailable = f"strict isolation is unavailable: {'; '.join(exc.missing)}"
            if self.unavailable:
                self.log.error("no sandboxes: submissions are refused", why=self.unavailable)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            await self._recover()
            if self._sv is not None:
                for _ in range(self.config.workers):
                    self._tg.start_soon(self._worker)
                self._tg.start_soon(self._reaper)
            # even without sandboxes: results already stored must still expire
            if self.purge_interval is not None:
                self._tg.start_soon(self._purger, self.purge_interval)
            self._accepting = True
            self._stack = stack.pop_all()
        self.log.info(
            "service started",
            workers=self.config.workers,
            db=self.config.db,
            queue_size=self.config.queue_size,
            result_ttl=self.config.result_ttl,
            idempotency_ttl=self.config.idempotency_ttl,
        )
        self._started.set()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None and self._stack is not None
        try:
            with anyio.CancelScope(shield=True):
                await self.shutdown()
        finally:
            # not under the shield: the stack's task groups must exit in the scope they
            # were entered in (the Supervisor shields its own cleanup)
            self._tg.cancel_scope.cancel()  # workers, reaper, webhook deliveries
            await self._stack.aclose()
            self.log.info("service stopped")

    async def _recover(self) -> None:
        """Runs a previous process left: running ones are errors, pending ones run now.

        A run that was in flight is not re-run: it may be what brought the
        process down (a crash loop), and a submission should be executed at
        most once; the client sees the error and may submit again.
        """
        assert self._queue is not None and self._tg is not None
        failed = await self.store.fail_running(RESTARTED, time.time())
        if failed:
            self.metrics.runs[(Status.ERROR.value, "IE")] += len(failed)
        pending = await self.store.pending()
        for record in pending:
            self._queue.put(record)
        owed = await self.store.webhooks_owed()
        for record in owed:
            self._tg.start_soon(self._deliver, record)
        if failed or pending or owed:
            self.log.warning(
                "recovered after a restart",
                marked_error=len(failed),
                requeued=len(pending),
                webhooks_owed=len(owed),
            )

    async def shutdown(self, drain_timeout: float | None = None) -> None:
        """Stop taking submissions (503), let running ones finish, then kill the rest.

        Workers stop pulling from the queue at once: what is pending stays
        pending in the store and runs after the next start. Runs still going
        after ``drain_timeout`` (default: the config's) are cancelled (the
        Supervisor kills and cleans their sandboxes) and recorded as errors.
        """
        if self._stopped is not None:
            await self._stopped.wait()
            return
        self._stopped = anyio.Event()
        self._accepting = False
        self._draining = True
        timeout = self.config.drain_timeout if drain_timeout is None else drain_timeout
        try:
            for scope in list(self._idle_scopes):
                scope.cancel()
            if self._running:
                self.log.info("draining", running=len(self._running), timeout=timeout)
            with anyio.move_on_after(timeout) as self._drain_scope:
                await self._wait_idle()
            if self._running:
                why = "drain cut short" if self._drain_cut else f"drain timeout {timeout:g} s"
                reason = f"the service shut down before the run finished ({why})"
                self.log.warning("killing runs at shutdown", running=len(self._running))
                for handle in self._running.values():
                    handle.reason = reason
                    handle.scope.cancel()
                with anyio.move_on_after(60):
                    await self._wait_idle()
        finally:
            self._stopped.set()

    def cut_drain(self) -> None:
        """End a drain now: the runs still going are killed and recorded as errors."""
        self._drain_cut = True
        if self._drain_scope is not None:
            self._drain_scope.cancel()

    async def _wait_idle(self) -> None:
        while self._running:
            assert self._changed is not None
            await self._changed.wait()

    def _running_changed(self) -> None:
        assert self._changed is not None
        self._changed.set()
        self._changed = anyio.Event()

    # -- state for the routes ---------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._accepting and self.unavailable is None

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def queue_depth(self) -> int:
        return self._queue.depth if self._queue is not None else 0

    @property
    def running(self) -> int:
        return len(self._running)

    def ready(self) -> tuple[bool, str | None]:
        """Ready for traffic: strict isolation available, sandboxes up, not draining."""
        if self._draining:
            return False, "the service is shutting down"
        if self.unavailable:
            return False, self.unavailable
        if self.host is None or not self.host.strict_ok:
            missing = "; ".join(self.host.missing) if self.host else "host not probed"
            return False, f"strict isolation is unavailable: {missing}"
        return True, None

    def health(self) -> dict[str, Any]:
        cgroup = self.host.cgroup if self.host else None
        if self._draining:
            status = "draining"
        elif self._started is None or not self._started.is_set():
            status = "starting"
        elif self.unavailable:
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "enforcement_mode": "strict" if self._sv is not None else "unavailable",
            "cgroup_backend": f"v{cgroup['version']}" if cgroup else None,
            "cgroup_controllers": list(cgroup.get("controllers", [])) if cgroup else [],
            "cgroup_kill": cgroup.get("kill") if cgroup else None,
            "workers": self.config.workers,
            "queue_depth": self.queue_depth,
            "queue_capacity": self.config.queue_size,
            "running": self.running,
            "node_id": self.config.node_id,
            "version": __version__,
            "uptime": round(time.time() - self.started_at, 3),
        }

    def render_metrics(self) -> str:
        return self.metrics.render(
            [
                ("rustbox_queue_depth", "Submissions waiting for a worker.", self.queue_depth),
                ("rustbox_running", "Submissions being judged.", self.running),
                ("rustbox_workers", "Configured workers.", self.config.workers),
                ("rustbox_accepting", "1 while new submissions are taken.", int(self.accepting)),
            ]
        )

    async def toolchains(self) -> list[Toolchain]:
        """Probed once (each toolchain prints its version), then cached."""
        assert self._toolchain_lock is not None
        async with self._toolchain_lock:
            if self._toolchains is None:
                self._toolchains = await anyio.to_thread.run_sync(probe_toolchains, self.languages)
            return self._toolchains

    def _count_webhook(self, outcome: str) -> None:
        self.metrics.webhooks[outcome] += 1

    # -- submissions ------------------------------------------------------

    async def check(self, request: SubmitRequest) -> str:
        """Validate what needs the language table or DNS; returns the language's name."""
        language = self.languages.get(request.language).name
        Submission(language=language, code=request.code)
        if request.webhook_url is not None:
            await check_webhook_url(
                request.webhook_url,
                allow_localhost=self.config.allow_localhost_webhooks,
                resolver=self.resolver,
            )
        return language

    async def submit(
        self,
        request: SubmitRequest,
        language: str,
        idempotency_key: str | None = None,
        *,
        log: Any = None,
    ) -> tuple[SubmissionRecord, bool]:
        """Store and queue; (record, created). Raises Unavailable or IdempotencyConflict.

        A replayed Idempotency-Key answers even while draining: the client
        retrying a lost response gets its id rather than a 503.
        """
        keys_since = self._keys_since(time.time())
        fingerprint = None  # only a key is checked against one: no hashing for the rest
        if idempotency_key is not None:
            fingerprint = request.fingerprint()
            existing = await self.store.get_by_key(idempotency_key, keys_since)
            if existing is not None:
                return self._replay(existing, fingerprint), False
        if not self._accepting:
            raise Unavailable("the service is shutting down; retry on another node or later")
        if self.unavailable:
            raise Unavailable(self.unavailable)
        assert self._queue is not None
        if not self._queue.try_reserve():
            raise Unavailable(
                f"the queue is full ({self._queue.capacity} submissions waiting); retry later"
            )
        record = SubmissionRecord(
            id=str(uuid.uuid4()),
            status=Status.PENDING,
            language=language,
            request=request,
            created_at=time.time(),
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            webhook_state=WebhookState.PENDING if request.webhook_url else WebhookState.NONE,
        )
        try:
            stored, created = await self.store.create(record, keys_since)
        except BaseException:
            self._queue.release()
            raise
        if not created:
            self._queue.release()
            return self._replay(stored, fingerprint), False
        self._waiters[stored.id] = _Waiter(anyio.Event())  # before a worker can end it
        self._queue.put_reserved(stored)
        (log or self.log).debug("submission accepted", submission=stored.id, language=language)
        return stored, True

    def _keys_since(self, now: float) -> float | None:
        """Keys of submissions created before this have expired (None: keys never expire)."""
        ttl = self.config.idempotency_ttl
        return now - ttl if ttl > 0 else None

    def _replay(self, existing: SubmissionRecord, fingerprint: str | None) -> SubmissionRecord:
        if existing.fingerprint != fingerprint:
            raise IdempotencyConflict(existing.id)
        return existing

    async def get(self, submission_id: str) -> SubmissionRecord | None:
        return await self.store.get(submission_id)

    async def wait(self, record: SubmissionRecord, timeout: float) -> SubmissionRecord:
        """The record once it has ended, or as it is after ``timeout`` seconds.

        A submission this process just accepted already has a waiter (made
        before it was queued), so no wakeup can be missed and no read is needed.
        """
        if record.done:
            return record
        waiter = self._waiters.get(record.id)
        if waiter is None:  # an idempotent replay, or one from before a restart
            waiter = self._waiters[record.id] = _Waiter(anyio.Event())
            current = await self.store.get(record.id)
            if current is None or current.done:
                return current or record
        with anyio.move_on_after(timeout):
            await waiter.event.wait()
        if waiter.record is not None:
            return waiter.record
        return await self.store.get(record.id) or record

    # -- workers ------------------------------------------------------------

    async def _worker(self) -> None:
        assert self._queue is not None
        while not self._draining:
            queued: SubmissionRecord | None = None
            with anyio.CancelScope() as idle:
                self._idle_scopes.add(idle)
                try:
                    queued = await self._queue.get()
                finally:
                    self._idle_scopes.discard(idle)
            if queued is None:
                return
            # registered before the next checkpoint: a drain starting now waits for it
            handle = _Running(anyio.CancelScope())
            self._running[queued.id] = handle
            try:
                await self._process(queued, handle)
            finally:
                del self._running[queued.id]
                self._running_changed()

    def _deadline(self, request: SubmitRequest, language: str, started: float) -> float:
        """Started + every step's wall limit (as if run one after another) + the margin."""
        spec = self.languages.get(language)
        budget = sum((case.limits or spec.run_limits).wall_time for case in request.test_cases())
        if spec.compile_limits is not None:
            budget += spec.compile_limits.wall_time
        return started + budget + self.config.reap_margin

    async def _process(self, queued: SubmissionRecord, handle: _Running) -> None:
        log = self.log.bind(submission=queued.id)
        with anyio.CancelScope(shield=True):  # a claimed row must not be left behind
            started = time.time()
            deadline = self._deadline(queued.request, queued.language, started)
            record = await self.store.claim(queued.id, started, deadline)
            if record is None:  # no longer pending (reaped, or taken by another node)
                return
        assert record is not None
        log = log.bind(language=record.language)
        outcome: Outcome | None = None
        try:
            with handle.scope:
                outcome = await self._judge(record, log)
            if handle.scope.cancelled_caught:
                outcome = Outcome.failed(handle.reason or "the run was cancelled")
        finally:
            with anyio.CancelScope(shield=True):
                if outcome is None:  # cancelled from outside (the service is closing)
                    outcome = Outcome.failed("the service stopped during the run")
                await self._finish(record, outcome, log)

    async def _judge(self, record: SubmissionRecord, log: Any) -> Outcome:
        assert self._sv is not None
        request = record.request
        try:
            report = await self._sv.judge(
                Submission(language=record.language, code=request.code),
                request.test_cases(),
                checker=request.checker,
            )
        except Exception as exc:
            leaf = _first_leaf(exc)
            if isinstance(leaf, InvalidInput):
                return Outcome.failed(f"invalid submission: {leaf}")
            log.exception("judge failed")
            return Outcome.failed(f"internal error: {type(leaf).__name__}: {leaf}")
        return outcome_from_report(report, self.config.max_output)

    async def _finish(self, record: SubmissionRecord, outcome: Outcome, log: Any) -> None:
        now = time.time()
        try:
            done = await self.store.finish(record.id, outcome, now)
        except Exception:
            log.exception("cannot store the result")
            done = None
        waiter = self._waiters.pop(record.id, None)
        if waiter is not None:
            waiter.record = done
            waiter.event.set()
        if done is None:
            return
        run = now - record.started_at if record.started_at is not None else None
        self.metrics.finished(done.status.value, outcome.verdict, now - record.created_at, run)
        log.info(
            "submission finished",
            status=done.status.value,
            verdict=outcome.verdict,
            error=outcome.error_message,
            seconds=round(run or 0.0, 4),
        )
        if done.webhook_state is WebhookState.PENDING and self._tg is not None:
            self._tg.start_soon(self._deliver, done)

    # -- reaper ---------------------------------------------------------------

    async def _reaper(self) -> None:
        interval = max(0.05, self.config.reap_interval)
        while True:
            await anyio.sleep(interval)
            try:
                await self.reap()
            except Exception:
                self.log.exception("reaper failed")

    async def reap(self, now: float | None = None) -> list[str]:
        """Error out running submissions past their deadline; returns their ids.

        A run this process holds is cancelled (its sandboxes are killed); one
        no process holds any more is just marked.
        """
        stuck = await self.store.stuck(time.time() if now is None else now)
        for sid in stuck:
            message = (
                "reaped: still running past its wall-time budget "
                f"plus {self.config.reap_margin:g} s"
            )
            handle = self._running.get(sid)
            if handle is not None:
                handle.reason = message
                handle.scope.cancel()
                continue
            done = await self.store.finish(sid, Outcome.failed(message), time.time())
            if done is not None:
                self.log.warning("reaped a stuck submission", submission=sid)
                self.metrics.runs[(Status.ERROR.value, "IE")] += 1
                waiter = self._waiters.pop(sid, None)
                if waiter is not None:
                    waiter.record = done
                    waiter.event.set()
        return stuck

    # -- retention ------------------------------------------------------------

    @property
    def purge_interval(self) -> float | None:
        """A tenth of the shortest TTL, at most PURGE_EVERY; None when nothing expires.

        Results then outlive their TTL by at most a tenth of it (or a minute).
        """
        ttls = [t for t in (self.config.result_ttl, self.config.idempotency_ttl) if t > 0]
        if not ttls:
            return None
        return max(0.05, min(PURGE_EVERY, min(ttls) / 10))

    async def _purger(self, interval: float) -> None:
        while True:
            try:
                await self.purge()
            except Exception:
                self.log.exception("purge failed")
            await anyio.sleep(interval)

    async def purge(self, now: float | None = None) -> int:
        """Delete expired results and idempotency keys; returns the submissions deleted.

        Batch by batch, each its own short transaction (one store call, in a
        worker thread): requests queue between batches, never behind the
        whole backlog.
        """
        config = self.config
        moment = time.time() if now is None else now
        deleted = keys = 0
        while True:
            batch = await self.store.purge(
                moment, config.result_ttl, config.idempotency_ttl, PURGE_BATCH
            )
            deleted += batch.deleted
            keys += batch.keys_cleared
            self.metrics.purged += batch.deleted
            if batch.deleted < PURGE_BATCH and batch.keys_cleared < PURGE_BATCH:
                break
            await anyio.sleep(0)
        if deleted or keys:
            self.log.info(
                "purged expired submissions",
                deleted=deleted,
                keys_cleared=keys,
                result_ttl=config.result_ttl,
                idempotency_ttl=config.idempotency_ttl,
            )
        return deleted

    # -- webhooks -------------------------------------------------------------

    async def _deliver(self, record: SubmissionRecord) -> None:
        """POST the result to the submission's webhook; the outcome is stored.

        If the process stops mid-way the state stays ``pending`` and the next
        start delivers again (at least once; receivers dedupe on webhook-id).
        """
        assert self._sender is not None
        url = record.request.webhook_url
        if url is None:
            return
        secret = record.request.webhook_secret or self.config.webhook_secret
        body = json.dumps(record.public(webhook=False), separators=(",", ":")).encode()
        log = self.log.bind(submission=record.id)

        async def progress(attempts: int, error: str | None) -> None:
            await self.store.set_webhook(record.id, WebhookState.PENDING, attempts, error)
            log.info("webhook attempt failed; retrying", attempts=attempts, error=error)

        try:
            delivery = await self._sender.deliver(record.id, url, secret, body, progress)
        except Exception as exc:
            log.exception("webhook delivery failed")
            await self.store.set_webhook(record.id, WebhookState.FAILED, 0, repr(exc))
            return
        await self.store.set_webhook(record.id, delivery.state, delivery.attempts, delivery.error)
        log.info(
            "webhook " + delivery.state.value, attempts=delivery.attempts, error=delivery.error
        )
