"""The event stream: one record per change, for ``GET /v1/events`` and ``cnm events``.

The core publishes after each change is done (never for a dry run); each subscriber has its
own bounded queue, filled without blocking: a consumer that reads too slowly loses its
stream (it ends with an ``overflow`` line) and never stalls the daemon. The last
``KEEP`` events are kept for ``since``.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

KEEP = 1024
QUEUE = 1024
TYPES = ("network", "endpoint", "sandbox", "port", "reconcile")


class Subscription:
    """One consumer: its filters apply before its queue, so it is offered only what it
    asked for."""

    def __init__(self, backlog: list[dict[str, Any]], size: int,
                 filters: dict[str, list[str]]) -> None:
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=size)
        self.filters = filters
        self.backlog = [e for e in backlog if _match(e, filters)]
        self.overflowed = False

    def offer(self, event: dict[str, Any]) -> None:
        if self.overflowed or not _match(event, self.filters):
            return
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.overflowed = True


class EventBus:
    def __init__(self, keep: int = KEEP, queue_size: int = QUEUE) -> None:
        self._lock = threading.Lock()
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._subs: set[Subscription] = set()
        self._queue_size = queue_size
        self.muted = 0  # > 0 while a dry run runs: nothing it does happened

    def publish(self, type: str, action: str, id: str, name: str,
                **attributes: Any) -> None:
        if self.muted:
            return
        now = time.time()
        event = {"time": now, "time_nano": time.time_ns(), "type": type, "action": action,
                 "id": id, "name": name,
                 "attributes": {k: v for k, v in attributes.items() if v is not None}}
        with self._lock:
            self._recent.append(event)
            for sub in self._subs:
                sub.offer(event)

    def subscribe(self, since: float | None = None,
                  filters: dict[str, list[str]] | None = None) -> Subscription:
        with self._lock:
            backlog = [e for e in self._recent if e["time"] >= since] if since is not None \
                else []
            sub = Subscription(backlog, self._queue_size, filters or {})
            self._subs.add(sub)
            return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    def stream(self, since: float | None, until: float | None,
               filters: dict[str, list[str]], poll: float = 1.0,
               ) -> Iterator[dict[str, Any] | None]:
        """The events from ``since`` (kept ones first) until ``until`` (or for ever),
        matching ``filters`` (type, action, name, id: any of each key's values). Yields
        None every ``poll`` seconds without an event (the writer's chance to see a client
        gone); ends with an ``overflow`` record if the consumer fell behind."""
        sub = self.subscribe(since, filters)
        try:
            for e in sub.backlog:
                if until is not None and e["time"] > until:
                    return
                yield e
            while True:
                if until is not None and time.time() > until:
                    return
                try:
                    e = sub.queue.get(timeout=poll if until is None else
                                      max(0.0, min(poll, until - time.time())))
                except queue.Empty:
                    if sub.overflowed:
                        yield overflow()
                        return
                    yield None
                    continue
                if until is not None and e["time"] > until:
                    return
                yield e
        finally:
            self.unsubscribe(sub)


def overflow() -> dict[str, Any]:
    return {"error": {"code": "unavailable",
                      "message": "the event stream fell behind: more than "
                                 f"{QUEUE} events unread; the stream ends",
                      "hint": "read faster, or subscribe again with since="}}


def _match(e: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    return all(str(e.get(k)) in vs for k, vs in filters.items())
