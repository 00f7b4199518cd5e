"""The event stores on PostgreSQL: eventsourcing's recorder, failing fast while the database is away.

eventsourcing's PostgreSQL recorder retries each call up to ten times, and each
try first waits for a pooled connection for as long as the connect time-out. With
the database refusing connections (a restart, a fail-over), one write then held
its request for about a minute: the gateway gave up first and answered 504, and
the write could still have happened after that answer. And psycopg's pool,
reconnecting with a delay that doubles for up to five minutes, went on refusing
requests for as long again after the database was back.

A lock held by someone else (a migration's ``ALTER TABLE``, a ``VACUUM FULL``)
held a read of an aggregate for as long as the lock, with no bound at all: the
library bounds only its insert's lock wait.

Here each call tries once: the request fails within the connect time-out and the
service answers 503 with ``Retry-After``; the client retries, as it would after
any 503. A commit whose answer was lost is not blindly repeated either (that
repeat would be told "conflict" for a write that did happen). The pool gives up a
reconnection after :data:`RECONNECT_SECONDS` and starts a fresh one at the next
request, so service resumes within seconds of the database's return.

After a restart every pooled connection is dead. A busy service finds and
replaces them with its own requests; an idle one (identity, between logins) would
find them one by one at its next requests, each costing a request its wait (the
pool's check of a connection backs off 1 s, then 2 s). So every
:data:`CHECK_SECONDS`, while no request uses the pool, a thread takes each idle
connection out and puts it back: taking one checks it (the pool's pre-ping), and
a broken one is replaced. The thread, not a request, waits out the back-off.
(``pool.check()`` would do the same but also grows the pool by one connection
each call: every few seconds, across the platform's processes, that exhausted
the server's connections: "remaining connection slots are reserved".) Every
session waits at most 3 s for a lock and runs no statement longer than 4 s
(:data:`ehr_events.db.REQUEST_OPTIONS`; the event store's statements are point
reads and small inserts), so a request that loads and saves an aggregate ends
well within the gateway's 10 s wait for a service.

Selected with ``PERSISTENCE_MODULE=ehr_events.pgstore:Factory``
(:func:`ehr_events.config.eventsourcing_env` does so).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import Environment
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory

from .db import REQUEST_OPTIONS

#: How long the pool keeps retrying one lost connection before it gives up on it
#: (the next request then starts a new attempt at once).
RECONNECT_SECONDS = 5.0
#: How often an idle pool's connections are checked, and the longest wait for one.
CHECK_SECONDS = 5.0
CHECK_WAIT_SECONDS = 10.0


def _tried_once(method: Callable[..., Any]) -> Callable[..., Any]:
    """The recorder method without the library's retry loop around it."""
    return getattr(method, "__wrapped__", method)


class ApplicationRecorder(PostgresApplicationRecorder):
    """eventsourcing's PostgreSQL application recorder, each call tried once."""

    insert_events = _tried_once(PostgresApplicationRecorder.insert_events)
    select_events = _tried_once(PostgresApplicationRecorder.select_events)
    select_notifications = _tried_once(PostgresApplicationRecorder.select_notifications)
    max_notification_id = _tried_once(PostgresApplicationRecorder.max_notification_id)


class Factory(PostgresFactory):
    """eventsourcing's PostgreSQL infrastructure with :class:`ApplicationRecorder`."""

    application_recorder_class = ApplicationRecorder

    def __init__(self, env: Environment | dict[str, str] | None) -> None:
        super().__init__(env)
        pool = self.datastore.pool
        pool.reconnect_timeout = RECONNECT_SECONDS
        # libpq's session options, applied to every connection the pool opens
        assert isinstance(pool.kwargs, dict)
        pool.kwargs["options"] = REQUEST_OPTIONS
        self._closing = threading.Event()
        threading.Thread(target=self._keep_pool, name="pg-pool-check", daemon=True).start()

    def _keep_pool(self) -> None:
        pool = self.datastore.pool
        while not self._closing.wait(CHECK_SECONDS):
            if pool.closed:  # not opened yet (it opens on first use), or closed
                continue
            stats = pool.get_stats()
            idle = stats.get("pool_available", 0)
            if idle == 0 or idle != stats.get("pool_size") or stats.get("requests_waiting"):
                continue  # in use: its requests meet any broken connection soon enough
            taken: list[Any] = []
            try:
                for _ in range(idle):
                    taken.append(pool.getconn(timeout=CHECK_WAIT_SECONDS))
            except Exception:  # noqa: BLE001 - the database is away: next round
                pass
            finally:
                for conn in taken:
                    pool.putconn(conn)

    def close(self) -> None:
        self._closing.set()
        super().close()
