"""ThreadWatch: which dying threads stop the process, and the reason it keeps."""

from __future__ import annotations

import threading

from engine.supervision import ThreadWatch, adopting_threads


def _die(name: str | None = None, message: str = "boom") -> threading.Thread:
    def run() -> None:
        raise RuntimeError(message)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join(10)
    return thread


def test_a_dying_internal_thread_sets_stop_with_a_one_line_reason():
    stop = threading.Event()
    with ThreadWatch(stop) as watch:
        _die("dagwatch-example", "first line\nsecond line")
        _die("dagwatch-other", "later")
    assert stop.is_set()
    assert watch.failure == "the dagwatch-example thread died: RuntimeError: first line"


def test_a_user_thread_is_left_to_the_previous_hook():
    stop, seen = threading.Event(), []
    previous = threading.excepthook
    threading.excepthook = lambda args: seen.append(args.thread.name)
    try:
        with ThreadWatch(stop) as watch:
            _die("user-thread")
        assert threading.excepthook is not watch._hook  # restored on exit
    finally:
        threading.excepthook = previous
    assert not stop.is_set() and watch.failure is None
    assert seen == ["user-thread"]


def test_threads_started_in_an_adopting_block_are_internal_even_if_they_die_in_it():
    stop = threading.Event()
    with ThreadWatch(stop) as watch:
        with adopting_threads():
            _die("plugin-thread", "died during start")  # before the block ends
        assert watch.failure == "the plugin-thread thread died: RuntimeError: died during start"
        later = threading.Event()
        with adopting_threads():
            thread = threading.Thread(
                target=lambda: (later.wait(10), 1 / 0), name="plugin-later", daemon=True
            )
            thread.start()
        watch.failure = None
        later.set()
        thread.join(10)
    assert watch.failure == "the plugin-later thread died: ZeroDivisionError: division by zero"
