"""SQLite writers queue on the write gate: real processes, a real file lock, /proc/locks."""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from engine.store import write_gate
from engine.store.db import Store

_fork = multiprocessing.get_context("fork")


def _gate_path(store: Store) -> Path:
    return Path(f"{store.url.database}-writelock")


def _gate_is_free(store: Store) -> bool:
    """Try the gate from a descriptor of our own (flock: a second description conflicts)."""
    fd = os.open(_gate_path(store), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        # unlock explicitly: a process forked meanwhile would keep a closed lock alive
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return True


def _blocked_on_gate(store: Store, pid: int) -> bool:
    """Whether /proc/locks shows `pid` waiting (`->`) for a FLOCK on the gate's inode."""
    inode = os.stat(_gate_path(store)).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and "FLOCK" in fields:
            lock_pid, device_inode = fields[fields.index("WRITE") + 1 : fields.index("WRITE") + 3]
            if int(lock_pid) == pid and int(device_inode.rsplit(":", 1)[1]) == inode:
                return True
    return False


def _counter(store: Store) -> int:
    with store.session(readonly=True) as session:
        return session.execute(text("SELECT n FROM gate_counter")).scalar_one()


@pytest.fixture
def counter_store(sqlite_store: Store) -> Store:
    with sqlite_store.session() as session:
        session.execute(text("CREATE TABLE gate_counter (n INTEGER NOT NULL)"))
        session.execute(text("INSERT INTO gate_counter VALUES (0)"))
    return sqlite_store


def _hold_then_commit(url: str, holding, release) -> None:
    store = Store(url)
    with store.session() as session:
        session.execute(text("UPDATE gate_counter SET n = n + 1"))
        holding.set()
        release.wait(30)
    os._exit(0)


def _write_once(url: str) -> None:
    store = Store(url)
    with store.session() as session:
        session.execute(text("UPDATE gate_counter SET n = n * 10"))
    os._exit(0)


def test_a_writer_waits_in_the_kernel_and_goes_in_after_the_holder_commits(counter_store):
    url = counter_store.url.render_as_string(hide_password=False)
    counter_store.dispose()  # never carry a SQLite connection across fork()
    holding, release = _fork.Event(), _fork.Event()
    holder = _fork.Process(target=_hold_then_commit, args=(url, holding, release))
    holder.start()
    assert holding.wait(30)
    waiter = _fork.Process(target=_write_once, args=(url,))
    waiter.start()
    deadline = time.monotonic() + 10
    while not _blocked_on_gate(counter_store, waiter.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _blocked_on_gate(counter_store, waiter.pid), "the second writer is not queued"
    release.set()
    holder.join(30)
    waiter.join(30)
    assert (holder.exitcode, waiter.exitcode) == (0, 0)
    assert _counter(counter_store) == 10  # (0 + 1) * 10: the waiter went in after the holder
    assert _gate_is_free(counter_store)


def _increment(url: str, times: int) -> None:
    store = Store(url)
    for _ in range(times):
        with store.session() as session:
            n = session.execute(text("SELECT n FROM gate_counter")).scalar_one()
            session.execute(text("UPDATE gate_counter SET n = :n"), {"n": n + 1})
    os._exit(0)


def test_many_processes_writing_at_once_lose_no_update(counter_store):
    url = counter_store.url.render_as_string(hide_password=False)
    counter_store.dispose()
    writers = [_fork.Process(target=_increment, args=(url, 25)) for _ in range(8)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    assert [w.exitcode for w in writers] == [0] * 8
    assert _counter(counter_store) == 200
    assert _gate_is_free(counter_store)


def test_a_rolled_back_transaction_releases_the_gate(counter_store):
    with pytest.raises(RuntimeError), counter_store.session() as session:
        session.execute(text("UPDATE gate_counter SET n = 99"))
        assert not _gate_is_free(counter_store)
        raise RuntimeError("boom")
    assert _gate_is_free(counter_store)
    assert _counter(counter_store) == 0


def test_readers_do_not_take_the_gate(counter_store):
    with counter_store.session(readonly=True) as session:
        session.execute(text("SELECT n FROM gate_counter")).scalar_one()
        assert _gate_is_free(counter_store)


def _held_by(connection) -> bool:
    return id(connection.dbapi_connection) in write_gate._holds


def test_a_second_connection_of_the_holding_thread_does_not_wait_for_itself(counter_store):
    first, second = counter_store.engine.raw_connection(), counter_store.engine.raw_connection()
    try:
        write_gate.acquire(first)
        write_gate.acquire(second)  # returns at once, without the gate
        assert (_held_by(first), _held_by(second)) == (True, False)
        assert not _gate_is_free(counter_store)
        write_gate.release(first)
        assert _gate_is_free(counter_store)
        write_gate.acquire(second)
        assert _held_by(second) and not _gate_is_free(counter_store)
        write_gate.release(second)
        assert _gate_is_free(counter_store)
    finally:
        first.close()
        second.close()


def _gate_locks(store: Store) -> list[str]:
    """The /proc/locks lines on the gate's inode: what holds it when a test says no."""
    inode = f":{os.stat(_gate_path(store)).st_ino} "
    return [line for line in Path("/proc/locks").read_text().splitlines() if inode in line]


def _gate_waiters() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dagwatch-write-gate"]


def test_a_writer_goes_on_without_the_gate_after_the_wait_limit(counter_store, monkeypatch, caplog):
    monkeypatch.setattr(write_gate, "WAIT_LIMIT", 0.3)
    earlier = set(_gate_waiters())
    stuck = os.open(_gate_path(counter_store), os.O_RDWR)  # another holder that never lets go
    try:
        fcntl.flock(stuck, fcntl.LOCK_EX)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="engine.store.write_gate"):
            with counter_store.session() as session:
                session.execute(text("UPDATE gate_counter SET n = 7"))
        assert time.monotonic() - started >= 0.3
        assert "waited 0.3 s for the metastore's write gate" in caplog.text
        assert _counter(counter_store) == 7  # SQLite's own lock let it in
        assert set(_gate_waiters()) - earlier, "the abandoned waiter should still be queued"
    finally:
        fcntl.flock(stuck, fcntl.LOCK_UN)
        os.close(stuck)
    # the abandoned waiter takes the gate once it is free, hands it straight back, and ends
    ours = set(_gate_waiters()) - earlier
    for waiter in ours:
        waiter.join(10)
    assert not any(waiter.is_alive() for waiter in ours)
    assert _gate_is_free(counter_store), _gate_locks(counter_store)


def test_a_connection_closed_in_a_write_transaction_releases_the_gate(counter_store):
    connection = counter_store.engine.raw_connection()
    write_gate.acquire(connection)
    assert not _gate_is_free(counter_store)
    connection.invalidate()  # the pool closes it without a COMMIT or ROLLBACK
    assert _gate_is_free(counter_store)
    assert not _held_by(connection)


def test_a_forked_child_closing_its_copy_does_not_unlock_the_parent(counter_store):
    connection = counter_store.engine.raw_connection()
    try:
        write_gate.acquire(connection)
        pid = os.fork()
        if pid == 0:  # only closes its copy of the lock file: no SQLite call in the child
            write_gate.release(connection)
            os._exit(0)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert not _gate_is_free(counter_store)
        write_gate.release(connection)
        assert _gate_is_free(counter_store)
    finally:
        connection.close()


def test_a_gate_released_from_another_thread_does_not_keep_this_one_out(counter_store):
    first, second = counter_store.engine.raw_connection(), counter_store.engine.raw_connection()
    try:
        write_gate.acquire(first)
        closer = threading.Thread(target=write_gate.release, args=(first,))  # e.g. the pool
        closer.start()
        closer.join()
        write_gate.acquire(second)
        assert (_held_by(first), _held_by(second)) == (False, True)
        write_gate.release(second)
    finally:
        first.close()
        second.close()
