"""Configuration: precedence default < file < env, sources, and errors that say what to fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.config import MASK, OPTIONS, Config, home_from, load_config
from engine.exceptions import ConfigError


def write_toml(home: Path, text: str) -> None:
    (home / "dagwatch.toml").write_text(text)


def test_defaults_apply_without_file_or_env(home, environ):
    config = load_config(environ)

    assert config.home == home
    assert config.get("core.dags_folder") == home / "dags"
    assert config.get("database.sql_alchemy_conn") == f"sqlite:///{home / 'dagwatch.db'}"
    assert config.get("core.default_pool_slots") == 128
    assert {setting.source for setting in config.settings.values()} == {"default"}
    assert set(config.settings) == {option.name for option in OPTIONS}


def test_file_overrides_default_and_env_overrides_file(home, environ):
    write_toml(home, "[core]\nparallelism = 8\nexecutor = 'sequential'\n")
    environ["DAGWATCH__CORE__PARALLELISM"] = "4"

    config = load_config(environ)

    assert (config.get("core.parallelism"), config.settings["core.parallelism"].source) == (
        4,
        "env",
    )
    assert (config.get("core.executor"), config.settings["core.executor"].source) == (
        "sequential",
        "file",
    )
    assert config.settings["core.load_examples"].source == "default"


def test_env_keys_are_case_insensitive_and_typed(environ):
    environ["DAGWATCH__core__load_examples"] = "off"
    environ["DAGWATCH__SCHEDULER__LOOP_INTERVAL"] = "0.5"

    config = load_config(environ)

    assert config["core.load_examples"] is False
    assert config["scheduler.loop_interval"] == 0.5


def test_the_real_environment_does_not_leak_into_the_environ_fixture(environ):
    assert not [name for name in environ if name.startswith("DAGWATCH__")]
    assert set(environ) <= {"DAGWATCH_HOME", "PATH", "HOME"}


def test_unknown_env_key_names_the_variable_and_the_known_keys(environ):
    environ["DAGWATCH__CORE__NOPE"] = "1"

    with pytest.raises(ConfigError) as info:
        load_config(environ)

    message = str(info.value)
    assert "'core.nope'" in message
    assert "DAGWATCH__CORE__NOPE" in message
    assert "core.parallelism" in message  # the hint lists the keys of [core]


def test_unknown_env_section_is_an_error(environ):
    environ["DAGWATCH__NOSUCH__KEY"] = "1"

    with pytest.raises(ConfigError, match=r"unknown configuration key 'nosuch.key'"):
        load_config(environ)


def test_env_variable_without_key_part_is_an_error(environ):
    environ["DAGWATCH__CORE"] = "1"

    with pytest.raises(ConfigError, match=r"DAGWATCH__CORE: expected DAGWATCH__<SECTION>__<KEY>"):
        load_config(environ)


def test_unknown_file_key_and_section_name_the_file(home, environ):
    write_toml(home, "[core]\nparalelism = 3\n")
    with pytest.raises(ConfigError, match=r"'core.paralelism' \(from .*dagwatch.toml\)"):
        load_config(environ)

    write_toml(home, "[nope]\nx = 1\n")
    allowed = r"unknown section \[nope\]; allowed: alerts, console, core, database"
    with pytest.raises(ConfigError, match=allowed):
        load_config(environ)


def test_invalid_toml_and_bare_keys_are_errors(home, environ):
    write_toml(home, "[core\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(environ)

    write_toml(home, "parallelism = 3\n")
    with pytest.raises(ConfigError, match=r"'parallelism' must be a \[section\]"):
        load_config(environ)


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("CORE__PARALLELISM", "abc", "core.parallelism = 'abc' (from DAGWATCH__CORE__PARALLELISM) "
         "is not a valid int"),
        ("CORE__PARALLELISM", "0", "core.parallelism = '0' (from DAGWATCH__CORE__PARALLELISM) "
         "must be at least 1"),
        ("CORE__EXECUTOR", "kubernetes", "core.executor = 'kubernetes' "
         "(from DAGWATCH__CORE__EXECUTOR): allowed values: sequential, local, celery"),
        ("CORE__LOAD_EXAMPLES", "maybe", "core.load_examples = 'maybe' "
         "(from DAGWATCH__CORE__LOAD_EXAMPLES) is not a valid bool"),
        ("SCHEDULER__LOOP_INTERVAL", "nan", "scheduler.loop_interval = 'nan' "
         "(from DAGWATCH__SCHEDULER__LOOP_INTERVAL) is not a valid float"),
        ("SCHEDULER__HEARTBEAT_TIMEOUT", "inf", "scheduler.heartbeat_timeout = 'inf' "
         "(from DAGWATCH__SCHEDULER__HEARTBEAT_TIMEOUT) is not a valid float"),
    ],
)  # fmt: skip
def test_bad_env_values_name_key_value_and_what_is_allowed(environ, variable, raw, expected):
    environ[f"DAGWATCH__{variable}"] = raw

    with pytest.raises(ConfigError) as info:
        load_config(environ)

    assert str(info.value) == expected


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("[core]\nparallelism = true\n", "core.parallelism = True"),
        ("[core]\nparallelism = 2.5\n", "core.parallelism = 2.5"),
        ("[core]\nfernet_key = false\n", "core.fernet_key = False"),
        ("[core]\ndags_folder = ['a']\n", "core.dags_folder = ['a']"),
    ],
)
def test_bad_file_values_are_errors(home, environ, toml, fragment):
    write_toml(home, toml)

    with pytest.raises(ConfigError, match="is not a valid") as info:
        load_config(environ)

    assert fragment in str(info.value)


def test_display_value_masks_secrets_and_url_passwords(environ):
    environ["DAGWATCH__CORE__FERNET_KEY"] = "c2VjcmV0LWtleS12YWx1ZQ=="
    environ["DAGWATCH__DATABASE__SQL_ALCHEMY_CONN"] = "postgresql://dw:hunter2@db:5432/dw"

    config = load_config(environ)

    assert config.settings["core.fernet_key"].display_value() == MASK
    shown = config.settings["database.sql_alchemy_conn"].display_value()
    assert shown == f"postgresql://dw:{MASK}@db:5432/dw"
    assert config.settings["core.executor"].display_value() == "local"
    assert config.get("core.fernet_key") == "c2VjcmV0LWtleS12YWx1ZQ=="  # the value itself is intact


def test_with_overrides_replaces_values_and_reports_override(config):
    changed = config.with_overrides(core__parallelism="3")

    assert changed.get("core.parallelism") == 3
    assert changed.settings["core.parallelism"].source == "override"
    assert config.get("core.parallelism") == 32  # the original is untouched
    with pytest.raises(ConfigError, match=r"unknown configuration key 'core\.nope'"):
        config.with_overrides(core__nope=1)


def test_get_of_an_unknown_key_is_a_config_error(config: Config):
    with pytest.raises(ConfigError, match=r"unknown configuration key 'core\.nope'"):
        config.get("core.nope")


def test_home_defaults_to_tilde_dagwatch_and_paths_expand_user(environ):
    assert home_from({}) == Path(os.path.expanduser("~/dagwatch"))
    environ["DAGWATCH__LOGGING__BASE_LOG_FOLDER"] = "~/dw-logs"

    assert load_config(environ).get("logging.base_log_folder") == Path(
        os.path.expanduser("~/dw-logs")
    )
