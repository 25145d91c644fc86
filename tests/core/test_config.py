"""The one configuration schema both adapters read (journy_core.config)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from journy_core import ConfigurationError
from journy_core.config import (
    DJANGO_SOURCE,
    ENV_API_KEY,
    FLASK_SOURCE,
    OPTIONS,
    Config,
    JournyDeprecationWarning,
    read_config,
)

KEY = "sk_test_0123456789abcdef"


def test_every_option_is_a_config_field_and_every_field_an_option() -> None:
    names = {field.name for field in dataclasses.fields(Config)} - {"source", "tracker"}
    assert names == {option.name.lower() for option in OPTIONS}


def test_the_settings_reference_lists_every_option_under_both_names_with_its_default() -> None:
    page = (Path(__file__).parents[2] / "docs" / "settings.md").read_text()
    rows = {row.split("|")[4].strip(): row for row in page.splitlines() if row.startswith("| ") and "`" in row}
    for option in OPTIONS:
        django = "—" if option.only == "flask" else f"`{option.name}`"
        flask = "—" if option.only == "django" else f"`JOURNY_{option.name}`"
        assert f"| {django} | {flask} |" in page, option.name
        assert option.meaning in rows, option.name


@pytest.mark.parametrize(
    ("source", "typo", "expected"),
    [
        (DJANGO_SOURCE, "API_KYE", "JOURNY['API_KYE']: did you mean JOURNY['API_KEY']?"),
        (FLASK_SOURCE, "TRACKER_DOMIAN", "JOURNY_TRACKER_DOMIAN: did you mean JOURNY_TRACKER_DOMAIN?"),
        (DJANGO_SOURCE, "SKIP_STAF", "did you mean JOURNY['SKIP_STAFF']?"),
    ],
)
def test_a_typo_is_one_error_suggesting_the_closest_option(source, typo, expected) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigurationError) as caught:
        read_config({typo: 1}, source)
    assert expected in str(caught.value)
    assert "docs/settings.md" in str(caught.value)


def test_an_option_of_the_other_framework_says_whose_it_is() -> None:
    with pytest.raises(ConfigurationError, match=r"JOURNY\['SESSION'\] is a Flask option"):
        read_config({"SESSION": object()}, DJANGO_SOURCE)
    with pytest.raises(ConfigurationError, match="JOURNY_SKIP_IMPERSONATED is a Django option"):
        read_config({"SKIP_IMPERSONATED": False}, FLASK_SOURCE)


def test_a_renamed_option_still_works_for_one_release_with_a_warning_naming_the_new_name() -> None:
    with pytest.warns(JournyDeprecationWarning, match="rename it JOURNY_ACCOUNT_DOMAIN_FIELD"):
        config = read_config({"ACCOUNT_DOMAIN": "domain"}, FLASK_SOURCE)
    assert config.account_domain_field == "domain"


def test_a_renamed_option_set_beside_its_new_name_to_another_value_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="old name of JOURNY_ACCOUNT_DOMAIN_FIELD"):
        read_config({"ACCOUNT_DOMAIN": "domain", "ACCOUNT_DOMAIN_FIELD": "website"}, FLASK_SOURCE)


def test_old_names_are_only_those_of_the_framework_that_had_them() -> None:
    with pytest.raises(ConfigurationError, match="did you mean"):
        read_config({"ACCOUNT_DOMAIN": "domain"}, DJANGO_SOURCE)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ENABLED", "false", "must be True or False"),
        ("SEND_PAGEVIEW", 1, "must be True or False"),
        ("TIMEOUT", -1, "seconds > 0"),
        ("TIMEOUT", (1, "x"), "seconds > 0"),
        ("QUEUE", "thread", "must be a dict"),
        ("SNIPPET_CACHE_SECONDS", -5, "number of seconds > 0"),
        ("SNIPPET_CACHE_SECONDS", 0, "number of seconds > 0"),
        ("INTERNAL_IPS", "10.0.0.0/8", "must be a list"),
        ("INTERNAL_IPS", ["not-an-ip"], "not an IP address"),
        ("ON_FAILURE", "nowhere.to.be.found", "ON_FAILURE"),
        ("USER_PROPERTIES", "email", "must be a list, a dict"),
        ("VERIFICATION_SECRET", "  ", "identity-verification secret"),
        ("API_KEY", "two\nlines", "API_KEY"),
        ("ACCOUNT_MODEL", 123, "model"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_option_as_each_framework_spells_it(name, value, says) -> None:  # type: ignore[no-untyped-def]
    for source, spelled in ((DJANGO_SOURCE, f"JOURNY[{name!r}]"), (FLASK_SOURCE, f"JOURNY_{name}")):
        with pytest.raises(ConfigurationError) as caught:
            read_config({name: value}, source)
        assert says in str(caught.value)
        assert spelled in str(caught.value)


def test_a_half_configured_tracker_names_the_missing_half() -> None:
    with pytest.raises(ConfigurationError, match="JOURNY_TRACKER_DOMAIN is not set"):
        read_config({"TRACKER_ID": "abc"}, FLASK_SOURCE)
    config = read_config({"TRACKER_ID": "abc", "TRACKER_DOMAIN": "https://go.acme.com"}, DJANGO_SOURCE)
    assert config.tracker is not None
    assert config.tracker.script_url == "https://go.acme.com/tracker.js"


def test_secrets_are_redacted_in_the_repr_of_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_API_KEY, raising=False)
    config = read_config({"API_KEY": KEY, "VERIFICATION_SECRET": "s3cr3t-value"}, DJANGO_SOURCE)
    assert config.api_key == KEY
    assert KEY not in repr(config)
    assert "s3cr3t-value" not in repr(config)


def test_the_api_key_comes_from_the_environment_when_the_config_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_API_KEY, KEY)
    assert read_config({}, FLASK_SOURCE).api_key == KEY
    assert read_config({"API_KEY": "sk_other_0123456789"}, DJANGO_SOURCE).api_key == "sk_other_0123456789"
    monkeypatch.setenv(ENV_API_KEY, "bad key")
    with pytest.raises(ConfigurationError, match=f"the {ENV_API_KEY} environment variable"):
        read_config({}, FLASK_SOURCE)


def test_defaults_are_the_documented_ones_and_internal_ips_true_reuses_the_frameworks_list() -> None:
    config = read_config({"INTERNAL_IPS": True}, DJANGO_SOURCE, internal_ips=["10.0.0.0/8"])
    assert [str(network) for network in config.internal_ips] == ["10.0.0.0/8"]
    assert config.enabled is True
    assert config.snippet_cache_seconds == 3600
    assert config["TRACKER_SCRIPT_PATH"] == "/tracker.js"
    assert config.has_skip_filters
    assert not read_config({}, FLASK_SOURCE).has_skip_filters
    assert read_config({"SKIP_STAFF": True}, FLASK_SOURCE).has_skip_filters


def test_members_without_an_account_model_is_an_error_naming_both() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("JOURNY_ACCOUNT_MEMBERS is set but JOURNY_ACCOUNT_MODEL")):
        read_config({"ACCOUNT_MEMBERS": "members"}, FLASK_SOURCE)


def test_skip_impersonated_is_a_flag_like_the_others() -> None:
    with pytest.raises(ConfigurationError, match=r"JOURNY\['SKIP_IMPERSONATED'\] must be True or False"):
        read_config({"SKIP_IMPERSONATED": "false"}, DJANGO_SOURCE)


def test_a_queue_given_as_a_broker_url_with_a_password_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigurationError) as refused:
        read_config({"QUEUE": "redis://:hunter2-secret@redis.internal/0"}, DJANGO_SOURCE)
    assert "must be a dict" in str(refused.value)
    assert "hunter2" not in str(refused.value)
