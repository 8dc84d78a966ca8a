"""The bounded queue between the routes and the workers."""

from __future__ import annotations

from collections import deque

import anyio

from rustbox._service._model import SubmissionRecord


class WorkQueue:
    """Submissions waiting for a worker; full means POST /api/submit answers 503.

    A route reserves a place before it stores the submission and fills it
    after, so a full queue refuses a submission before anything is written.
    Submissions recovered after a restart are put in past the bound: they were
    accepted before, and refusing them now would strand them.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[SubmissionRecord] = deque()
        self._reserved = 0
        self._wakeup = anyio.Event()

    @property
    def depth(self) -> int:
        """Submissions waiting for a worker (and places reserved for ones being stored)."""
        return len(self._items) + self._reserved

    def try_reserve(self) -> bool:
        if self.depth >= self.capacity:
            return False
        self._reserved += 1
        return True

    def release(self) -> None:
        """Give a reservation back (the submission was not stored, or already existed)."""
        self._reserved -= 1

    def put_reserved(self, record: SubmissionRecord) -> None:
        self._reserved -= 1
        self.put(record)

    def put(self, record: SubmissionRecord) -> None:
        self._items.append(record)
        self._wakeup.set()
        self._wakeup = anyio.Event()

    async def get(self) -> SubmissionRecord:
        # popleft right after the wait returns, with no checkpoint between: a
        # cancelled get never loses a submission.
        while not self._items:
            await self._wakeup.wait()
        return self._items.popleft()
