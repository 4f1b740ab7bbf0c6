"""An idle scheduler wakes when another process acts, not at its next loop interval."""

from __future__ import annotations

import threading
import time

from engine.store import pools
from engine.store.audit import record_audit
from engine.store.wakeup import ChangeWatcher, notify_scheduler


def act_later(store, delay: float) -> threading.Thread:
    """What `dags trigger` does, from another connection: write, notify, commit."""

    def act() -> None:
        time.sleep(delay)
        with store.session() as session:
            pools.set_pool(session, "woken", 1)
            record_audit(session, actor="test", event="pools.set")
            notify_scheduler(session)

    thread = threading.Thread(target=act)
    thread.start()
    return thread


def test_a_commit_elsewhere_wakes_the_watcher_at_once(store):
    watcher = ChangeWatcher(store)
    stop = threading.Event()
    try:
        assert watcher.wait(0.2, stop) is False  # nothing happened: it slept the interval
        thread = act_later(store, 0.3)
        started = time.monotonic()
        assert watcher.wait(10, stop) is True
        waited = time.monotonic() - started
        thread.join()
        assert 0.25 <= waited < 2.0, waited
        started = time.monotonic()
        assert watcher.wait(0.3, stop) is False  # the change was taken once
        assert time.monotonic() - started >= 0.25
    finally:
        watcher.close()


def test_a_change_before_the_first_wait_wakes_a_primed_watcher(store):
    """The scheduler primes its watcher before its first tick, so a trigger committed
    while that tick runs still wakes the wait that follows."""
    watcher = ChangeWatcher(store)
    stop = threading.Event()
    try:
        watcher.prime()
        act_later(store, 0).join()  # committed before the first wait
        started = time.monotonic()
        assert watcher.wait(5, stop) is True
        assert time.monotonic() - started < 1.0
    finally:
        watcher.close()


def test_stop_ends_the_wait(store):
    watcher = ChangeWatcher(store)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    try:
        assert watcher.wait(10, stop) is False
    finally:
        watcher.close()
    assert time.monotonic() - started < 2.0


def test_the_watchers_connection_never_returns_to_the_pool(store):
    watcher = ChangeWatcher(store)
    watcher.wait(0.05, threading.Event())
    watcher.close()
    # Every pooled connection must still run transactions (savepoints need one).
    for _ in range(8):  # more than the pool holds
        with store.session() as session:
            pools.set_pool(session, "after_watch", 2)
            with session.begin_nested():
                pools.set_pool(session, "after_watch", 3)
