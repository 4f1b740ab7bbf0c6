"""Fernet encryption (keys, rotation, clear errors) and masking of secrets in output."""

from __future__ import annotations

import io
import logging
import stat

import pytest
from cryptography.fernet import Fernet

from engine.exceptions import ConfigError, StoreError
from engine.secrets import (
    FERNET_KEY_FILE,
    RedactingFilter,
    decrypt,
    encrypt,
    get_fernet,
    is_sensitive_key,
    mask_secret,
    redact,
    redact_stream,
)


def with_keys(config, *keys: bytes):
    return config.with_overrides(core__fernet_key=",".join(key.decode() for key in keys))


def test_round_trip_does_not_store_plaintext(config):
    token = encrypt(config, "s3cr3t-value")

    assert b"s3cr3t-value" not in token
    assert decrypt(config, token) == "s3cr3t-value"


def test_empty_fernet_key_generates_a_private_key_file_once(config, home, caplog):
    with caplog.at_level(logging.WARNING, logger="engine.secrets"):
        token = encrypt(config, "value")
    path = home / FERNET_KEY_FILE

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "generated a Fernet key" in caplog.text
    Fernet(path.read_text().strip().encode())  # a valid key
    key_before = path.read_text()
    assert decrypt(config, token) == "value"  # the same key is reused ...
    assert path.read_text() == key_before  # ... and not regenerated
    assert not list(home.glob(".fernet.key.*"))  # no temporary file left behind


def test_rotation_old_key_second_still_decrypts_and_rotate_uses_the_first(config):
    old, new = Fernet.generate_key(), Fernet.generate_key()
    token_old = encrypt(with_keys(config, old), "value")
    rotated_config = with_keys(config, new, old)

    assert decrypt(rotated_config, token_old) == "value"
    token_new = get_fernet(rotated_config).rotate(token_old)
    assert decrypt(with_keys(config, new), token_new) == "value"  # old key no longer needed
    assert Fernet(new).decrypt(encrypt(rotated_config, "x")) == b"x"  # first key encrypts


def test_value_encrypted_with_an_unknown_key_gives_a_clear_error(config):
    token = encrypt(with_keys(config, Fernet.generate_key()), "value")

    with pytest.raises(StoreError) as info:
        decrypt(with_keys(config, Fernet.generate_key()), token, "variable 'x'")

    assert str(info.value) == (
        "cannot decrypt variable 'x': the value was encrypted with a key that is not in "
        "core.fernet_key"
    )


def test_invalid_key_is_a_config_error_that_does_not_print_the_key(config):
    bad = "not-a-valid-key-but-secret-looking"
    with pytest.raises(ConfigError) as info:
        get_fernet(
            config.with_overrides(core__fernet_key=f"{Fernet.generate_key().decode()},{bad}")
        )

    assert str(info.value).startswith("core.fernet_key: key 2 of 2 is not a valid Fernet key")
    assert bad not in str(info.value)


def test_invalid_key_file_names_the_file(config, home):
    (home / FERNET_KEY_FILE).write_text("garbage\n")

    with pytest.raises(ConfigError, match=r"fernet\.key: the key is not a valid Fernet key"):
        get_fernet(config)


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("password", True),
        ("DB_PASSWD", True),
        ("my_api_key", True),
        ("ApiKey", True),
        ("slack-token", True),
        ("Authorization", True),
        ("aws_secret_access_key", True),
        ("private_key_file", True),
        ("gcp_credentials", True),
        ("hostname", False),
        ("region", False),
        ("keyboard", False),
    ],
)
def test_is_sensitive_key(name, sensitive):
    assert is_sensitive_key(name) is sensitive


def test_redact_replaces_every_registered_secret_and_skips_short_ones():
    mask_secret("hunter22")
    mask_secret({"nested": ["tok-abc-123"]})
    mask_secret("ab")  # too short to mask safely

    assert redact("pw=hunter22 token=tok-abc-123 x=ab") == "pw=*** token=*** x=ab"
    assert redact("nothing here") == "nothing here"


def test_longer_secret_containing_a_shorter_one_is_masked_whole():
    mask_secret("abc")
    mask_secret("abcdef")

    assert redact("[abcdef]") == "[***]"


def test_redacting_filter_masks_messages_args_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    mask_secret("hunter22")
    try:
        logger.warning("connecting with %s", "hunter22")
        try:
            raise ValueError("bad password hunter22")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)

    output = stream.getvalue()
    assert "hunter22" not in output
    assert "connecting with ***" in output
    assert "ValueError: bad password ***" in output


def test_redact_stream_masks_writes_even_when_a_secret_is_split():
    target = io.StringIO()
    mask_secret("hunter22")
    stream = redact_stream(target)

    stream.write("password: hun")
    stream.write("ter22\nnext line\n")
    stream.write("tail hunter22")
    assert target.getvalue() == "password: ***\nnext line\n"  # the tail waits for a newline
    stream.flush()

    assert target.getvalue() == "password: ***\nnext line\ntail ***"
    print("via print hunter22", file=stream, flush=True)
    assert target.getvalue().endswith("via print ***\n")
    stream.close()
    assert not target.closed  # the wrapped stream stays usable
