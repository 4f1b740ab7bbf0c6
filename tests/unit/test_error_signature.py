"""Error signatures: the same problem gets one key, different problems get different keys."""

from __future__ import annotations

import pytest

from engine.store.error_signature import headline, normalise, signature

#: (error text, its normalised form), as tries record them ("Type: message")
NORMALISED = [
    ("ValueError: no rows for 2026-04-10", "ValueError: no rows for <ts>"),
    (
        "FileNotFoundError: [Errno 2] No such file or directory: '/data/in/2026/04/10/orders.csv'",
        "FileNotFoundError: [Errno <n>] No such file or directory: '<str>'",
    ),
    (
        "OSError: cannot open /var/lib/dagwatch/tmp/part-00017.parquet",
        "OSError: cannot open <path>",
    ),
    (
        "KeyError: 'customer_42'",
        "KeyError: '<str>'",
    ),
    (
        "psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "
        '"orders_pkey" DETAIL: Key (id)=(918273) already exists.',
        "psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "
        '"<str>" DETAIL: Key (id)=(<n>) already exists.',
    ),
    (
        "requests.exceptions.HTTPError: 503 Server Error: Service Unavailable for url: "
        "https://api.example.com/v2/orders?page=7&token=abc123",
        "requests.exceptions.HTTPError: <n> Server Error: Service Unavailable for url: <url>",
    ),
    (
        "ConnectionRefusedError: [Errno 111] Connection refused to 10.0.3.17:5432",
        "ConnectionRefusedError: [Errno <n>] Connection refused to <ip>",
    ),
    (
        "TimeoutError: attempt exceeded execution_timeout of 300.0 s",
        "TimeoutError: attempt exceeded execution_timeout of <n> s",
    ),
    (
        "RuntimeError: job 3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b failed at "
        "2026-04-10T03:12:45.123+00:00",
        "RuntimeError: job <uuid> failed at <ts>",
    ),
    (
        "AssertionError: checksum 9f86d081884c7d65 != e3b0c44298fc1c14",
        "AssertionError: checksum <hex> != <hex>",
    ),
    (
        "MemoryError: <Frame object at 0x7f3a2c1b9e80> could not allocate 1.5e9 bytes",
        "MemoryError: <Frame object at <hex>> could not allocate <n> bytes",
    ),
    (
        "botocore.exceptions.ClientError: An error occurred (NoSuchKey) when calling the "
        "GetObject operation: s3 key raw/events/dt=2026-04-10/hour=03/part-0001.json",
        "botocore.exceptions.ClientError: An error occurred (NoSuchKey) when calling the "
        "GetObject operation: s<n> key <path>",
    ),
    (
        "smtplib.SMTPRecipientsRefused: {'ops@example.com': (550, b'no such user')}",
        "smtplib.SMTPRecipientsRefused: {'<str>': (<n>, b'<str>')}",
    ),
    (
        "zombie: no heartbeat from worker-7 (pid 48213) for 93 s",
        "zombie: no heartbeat from worker-<n> (pid <n>) for <n> s",
    ),
    (
        "subprocess.CalledProcessError: Command 'dbt run --select orders' returned non-zero "
        "exit status 2.",
        "subprocess.CalledProcessError: Command '<str>' returned non-zero exit status <n>.",
    ),
    ("ZeroDivisionError: division by zero", "ZeroDivisionError: division by zero"),
    (
        "WindowsError: cannot read C:\\data\\exports\\day_17.csv at 23:59:01",
        "WindowsError: cannot read <path> at <ts>",
    ),
]


@pytest.mark.parametrize(("error", "expected"), NORMALISED)
def test_what_varies_is_replaced_and_the_words_stay(error, expected):
    assert normalise(error) == expected


SAME_PROBLEM = [
    [
        "ValueError: no rows for 2026-04-10 in /data/in/17.csv",
        "ValueError: no rows for 2026-04-11 in /data/in/18.csv",
        "ValueError: no rows for 2025-12-31 in /srv/other/place/1.csv",
    ],
    [
        "KeyError: 'order_17'",
        "KeyError: 'customer'",
    ],
    [
        "HTTPError: 502 Bad Gateway for url: https://a.example.com/x?id=1",
        "HTTPError: 504 Bad Gateway for url: http://b.example.org/y",
    ],
    [
        "TimeoutError: timed out after 30.5 s on host 10.1.2.3",
        "TimeoutError: timed out after 600 s on host 192.168.0.254",
    ],
    [
        "RuntimeError: batch 0xdeadbeef   failed",
        "RuntimeError: batch 0x1 failed",
    ],
]


@pytest.mark.parametrize("errors", SAME_PROBLEM)
def test_occurrences_of_one_problem_share_a_signature(errors):
    assert len({signature(error) for error in errors}) == 1


DIFFERENT_PROBLEMS = [
    "ValueError: no rows for 2026-04-10",
    "KeyError: 'order_17'",
    "TypeError: 'NoneType' object is not subscriptable",
    "ZeroDivisionError: division by zero",
    "ValueError: too many rows for 2026-04-10",
    "HTTPError: 502 Bad Gateway for url: https://a.example.com/x",
    "HTTPError: 401 Unauthorized for url: https://a.example.com/x",
    "zombie: no heartbeat from worker-7 (pid 48213) for 93 s",
    "TimeoutError: attempt exceeded execution_timeout of 300.0 s",
]


def test_different_problems_get_different_signatures():
    keys = [signature(error) for error in DIFFERENT_PROBLEMS]
    assert len(set(keys)) == len(DIFFERENT_PROBLEMS)
    assert all(len(key) == 16 and int(key, 16) >= 0 for key in keys)


def test_no_error_has_no_signature():
    assert signature(None) is None and signature("") is None and signature("  \n") is None


def test_a_long_multi_line_error_keeps_one_line_headline():
    error = "ValueError: bad row 17\n" + "\n".join(f"  at line {i}" for i in range(500))
    line = headline(error)
    assert line.startswith("ValueError: bad row <n> | at line <n> | at line <n>")
    assert "\n" not in line and len(line) <= 300
    # the same error with other numbers, and a tail past MAX_LINES that differs, is one key
    other = "ValueError: bad row 99\n" + "\n".join(f"  at line {i * 2}" for i in range(900))
    assert signature(error) == signature(other)
