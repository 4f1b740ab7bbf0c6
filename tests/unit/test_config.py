"""Configuration: precedence default < file < env, sources, and errors that say what to fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.config import MASK, OPTIONS, Config, checked_dags_folder, home_from, load_config
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
    allowed = r"unknown section \[nope\]; allowed: alerts, celery, console, core, database"
    with pytest.raises(ConfigError, match=allowed):
        load_config(environ)


def test_invalid_toml_and_bare_keys_are_errors(home, environ):
    write_toml(home, "[core\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(environ)

    write_toml(home, "parallelism = 3\n")
    with pytest.raises(ConfigError, match=r"'parallelism' must be a \[section\]"):
        load_config(environ)


ENV = "(from DAGWATCH__{})"
EXECUTORS = "one of sequential, local, celery (the executors of this version)"
TIMEZONE = "an IANA timezone name, like UTC or Europe/Amsterdam"


@pytest.mark.parametrize(
    ("variable", "raw", "allowed"),
    [
        ("CORE__PARALLELISM", "abc", "an integer from 1 to 2147483647"),
        ("CORE__PARALLELISM", "0", "an integer from 1 to 2147483647"),
        ("CORE__PARALLELISM", "", "an integer from 1 to 2147483647"),
        ("CORE__PARALLELISM", "99999999999999999999999", "an integer from 1 to 2147483647"),
        ("CORE__DEFAULT_POOL_SLOTS", "2147483648", "an integer from 0 to 2147483647"),
        ("CORE__DEFAULT_POOL_SLOTS", "-1", "an integer from 0 to 2147483647"),
        ("CORE__WORKER_MAX_ATTEMPTS", "-1", "an integer from 0 to 2147483647 (0: no limit)"),
        ("CORE__EXECUTOR", "kubernetes", EXECUTORS),
        ("CORE__EXECUTOR", "dask", EXECUTORS),
        ("CORE__ATTEMPT_ISOLATION", "thread", "one of worker, process"),
        ("CORE__LOAD_EXAMPLES", "maybe", "true or false"),
        ("CORE__DAG_FILE_PROCESSOR_TIMEOUT", "0", "a number from 0.1 to 31536000"),
        ("CORE__DEFAULT_TIMEZONE", "Mars/Olympus", TIMEZONE),
        ("CORE__DAGS_FOLDER", " ", "a path (not empty)"),
        ("SCHEDULER__LOOP_INTERVAL", "nan", "a number from 0 to 31536000"),
        ("SCHEDULER__LOOP_INTERVAL", "1e12", "a number from 0 to 31536000"),
        ("SCHEDULER__HEARTBEAT_TIMEOUT", "inf", "a number from 1 to 31536000"),
        ("SCHEDULER__MIN_FILE_PROCESS_INTERVAL", "-1", "a number from 0 to 31536000"),
        ("METRICS__PROMETHEUS_PORT", "70000", "an integer from 0 to 65535 (0: any free port)"),
        ("METRICS__PROMETHEUS_PORT", "-1", "an integer from 0 to 65535 (0: any free port)"),
        ("METRICS__STATSD_PORT", "0", "an integer from 1 to 65535"),
        ("METRICS__STATSD_HOST", "  ", "a host name or address"),
        ("METRICS__PROMETHEUS_HOST", "", "a host name or address"),
        ("METRICS__STATSD_TAGS", "datadog", "one of none, dogstatsd, influxdb"),
        ("ALERTS__MAX_ATTEMPTS", "0", "an integer from 1 to 2147483647"),
        ("ALERTS__FORECAST_QUANTILE", "1.5", "a number from 0.5 to 1"),
        ("ALERTS__CONSOLE_URL", "localhost:8501", "an http:// or https:// URL"),
        ("ALERTS__MISS_AFTER_FAILURE", "ignore", "one of fold, page"),
        ("LOGGING__LEVEL", "LOUD", "one of DEBUG, INFO, WARNING, ERROR"),
    ],
)  # fmt: skip
def test_bad_env_values_name_key_value_source_and_what_is_allowed(environ, variable, raw, allowed):
    environ[f"DAGWATCH__{variable}"] = raw

    with pytest.raises(ConfigError) as info:
        load_config(environ)

    name = variable.lower().replace("__", ".")
    assert str(info.value) == f"{name} = {raw!r} {ENV.format(variable)}: must be {allowed}"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[core]\nparallelism = true\n", "core.parallelism = True"),
        ("[core]\nparallelism = 2.5\n", "core.parallelism = 2.5"),
        ("[core]\nparallelism = 1e30\n", "core.parallelism = 1e+30"),
        ("[core]\nexecutor = 'dask'\n", "core.executor = 'dask'"),
        ("[core]\nfernet_key = false\n", "core.fernet_key = ***"),
        ("[core]\ndags_folder = ['a']\n", "core.dags_folder = ['a']"),
        ("[core]\nload_examples = 'sometimes'\n", "core.load_examples = 'sometimes'"),
        ("[metrics]\nprometheus_port = 70000\n", "metrics.prometheus_port = 70000"),
        ("[metrics]\nprometheus_on = 'perhaps'\n", "metrics.prometheus_on = 'perhaps'"),
        ("[alerts]\nroutes = 'x'\n", "alerts.routes = ***"),
        ("[alerts]\nretry_delay = -5\n", "alerts.retry_delay = -5"),
    ],
)
def test_bad_file_values_name_the_file(home, environ, toml, expected):
    write_toml(home, toml)

    with pytest.raises(ConfigError) as info:
        load_config(environ)

    assert str(info.value).startswith(f"{expected} (from {home / 'dagwatch.toml'}): must be ")


@pytest.mark.parametrize(
    "option", [o for o in OPTIONS if o.type in ("int", "float")], ids=lambda o: o.name
)
def test_every_number_option_has_a_range_and_refuses_what_is_beyond_it(environ, option):
    low, high = option.bounds()
    assert low is not None and high is not None
    variable = f"DAGWATCH__{option.section.upper()}__{option.key.upper()}"

    for beyond in (low - 1, high + 1, "nan" if option.type == "float" else "1.5"):
        environ[variable] = str(beyond)
        with pytest.raises(ConfigError, match=r": must be an? (integer|number) from "):
            load_config(environ)
    environ[variable] = str(high)
    assert load_config(environ)[option.name] == high


def test_secret_values_never_appear_in_errors(environ):
    environ["DAGWATCH__DATABASE__SQL_ALCHEMY_CONN"] = "mysql://dw:hunter2@db/dw"
    with pytest.raises(ConfigError) as info:
        load_config(environ)
    assert "hunter2" not in str(info.value)
    assert "'mysql://dw:***@db/dw'" in str(info.value)

    environ.pop("DAGWATCH__DATABASE__SQL_ALCHEMY_CONN")
    environ["DAGWATCH__ALERTS__ROUTES"] = '["slack://token-a/token-b"]'
    with pytest.raises(ConfigError) as info:
        load_config(environ)
    assert "token-a" not in str(info.value)
    assert str(info.value).startswith("alerts.routes = *** (from DAGWATCH__ALERTS__ROUTES)")


def test_the_allowed_executors_are_those_the_registry_has(environ, monkeypatch):
    import engine.execution

    environ["DAGWATCH__CORE__EXECUTOR"] = "dask"
    with pytest.raises(ConfigError, match="must be one of sequential, local, celery "):
        load_config(environ)

    monkeypatch.setattr(engine.execution, "EXECUTORS", (*engine.execution.EXECUTORS, "dask"))
    assert load_config(environ)["core.executor"] == "dask"


def test_choices_are_matched_in_any_letter_case(environ):
    environ["DAGWATCH__LOGGING__LEVEL"] = "debug"
    environ["DAGWATCH__CORE__EXECUTOR"] = "Sequential"

    config = load_config(environ)

    assert (config["logging.level"], config["core.executor"]) == ("DEBUG", "sequential")


def test_metastore_urls_of_supported_databases_are_accepted(environ):
    for url in (
        "sqlite://",
        "sqlite:////tmp/x.db",
        "postgresql+psycopg://u@h/db",
        "postgres://h/d",
    ):
        environ["DAGWATCH__DATABASE__SQL_ALCHEMY_CONN"] = url
        assert load_config(environ)["database.sql_alchemy_conn"] == url


def test_a_log_folder_or_home_that_is_a_file_is_refused(home, environ):
    a_file = home / "not_a_folder"
    a_file.write_text("")
    environ["DAGWATCH__LOGGING__BASE_LOG_FOLDER"] = str(a_file)
    with pytest.raises(
        ConfigError,
        match=r"logging\.base_log_folder = .*: must be a folder path \(not empty, not a file\)",
    ):
        load_config(environ)

    with pytest.raises(ConfigError, match=r"DAGWATCH_HOME = .*: must be a folder, not a file"):
        load_config({"DAGWATCH_HOME": str(a_file)})


def test_the_default_dags_folder_is_created_when_a_command_needs_it(home, environ):
    config = load_config(environ)
    assert not (home / "dags").exists()  # loading alone creates nothing

    assert checked_dags_folder(config) == home / "dags"
    assert (home / "dags").is_dir()


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda path: None, "does not exist"),
        (lambda path: path.write_text("print('a file')\n"), "is a file"),
    ],
)
def test_a_configured_dags_folder_must_be_an_existing_folder(home, environ, make, problem):
    folder = home / "elsewhere"
    make(folder)
    environ["DAGWATCH__CORE__DAGS_FOLDER"] = str(folder)
    config = load_config(environ)  # loading is fine: only commands that scan need the folder

    with pytest.raises(ConfigError) as info:
        checked_dags_folder(config)

    assert str(info.value) == (
        f"core.dags_folder = '{folder}' (from DAGWATCH__CORE__DAGS_FOLDER) {problem}; "
        "it must be an existing folder of DAG files"
    )
    assert not (home / "dags").exists()


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


def test_a_bad_file_value_is_refused_even_when_the_environment_overrides_it(home, environ):
    write_toml(home, "[core]\nparallelism = 0\n")
    environ["DAGWATCH__CORE__PARALLELISM"] = "4"

    with pytest.raises(ConfigError, match=r"^core\.parallelism = 0 \(from .*dagwatch\.toml\)"):
        load_config(environ)
