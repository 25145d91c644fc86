"""System checks, each called directly."""

from __future__ import annotations

import pytest

from journy_django import checks


def ids(messages):
    return [m.id for m in messages]


@pytest.mark.parametrize(
    ("check", "overrides", "expected"),
    [
        (checks.check_api_key, {"API_KEY": None, "QUEUE": None}, "journy.E001"),
        (checks.check_api_url, {"API_URL": "ftp://api.journy.io"}, "journy.E002"),
        (checks.check_api_url, {"API_URL": "http://127.0.0.1:8484"}, "journy.W001"),
        (checks.check_queue, {"QUEUE": {"BACKEND": "carrier-pigeon"}}, "journy.E003"),
        (checks.check_queue, {"QUEUE": {"BACKEND": "thread", "OPTIONS": {"NOPE": 1}}}, "journy.E003"),
        (checks.check_dotted_paths, {"CURRENT_ACCOUNT": "myapp.nowhere.func"}, "journy.E004"),
        (checks.check_dotted_paths, {"USER_PROPERTIES": 42}, "journy.E004"),
        (checks.check_account_model, {"ACCOUNT_MODEL": "nope.Missing"}, "journy.E005"),
        (checks.check_account_model, {"ACCOUNT_MEMBERS": "name"}, "journy.E006"),
        (checks.check_snippet, {"VERIFICATION_SECRET": "  "}, "journy.E007"),
        (checks.check_snippet, {"VERIFICATION_SECRET": None}, "journy.W002"),
        (checks.check_snippet, {"TRACKER_DOMAIN": "go.acme.com"}, "journy.E010"),
        (checks.check_settings_shape, {"API_KYE": "typo"}, "journy.E009"),
        (checks.check_settings_shape, {"INTERNAL_IPS": ["not-an-ip"]}, "journy.E009"),
    ],
)
def test_each_problem_has_its_check_id_and_a_hint(settings, monkeypatch, check, overrides, expected):
    monkeypatch.delenv("JOURNY_API_KEY", raising=False)
    settings.JOURNY = {**settings.JOURNY, **overrides}
    messages = check()
    assert expected in ids(messages)
    assert all(m.hint for m in messages)


def test_the_test_settings_pass_every_check(settings):
    assert [m for check in checks.ALL_CHECKS for m in check()] == []


def test_the_middleware_missing_or_misplaced(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "journy" not in m]
    assert ids(checks.check_middleware()) == ["journy.W003"]
    settings.MIDDLEWARE = [checks.MIDDLEWARE, *settings.MIDDLEWARE]
    assert ids(checks.check_middleware()) == ["journy.E008"]


def test_the_request_context_processor_missing(settings):
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "OPTIONS": {"context_processors": []}}]
    assert "journy.W004" in ids(checks.check_snippet())


def test_checks_are_registered_with_django():
    from django.core.checks import run_checks

    assert [m for m in run_checks(tags=["journy"]) if m.id.startswith("journy")] == []


@pytest.mark.parametrize(
    ("key", "problem"), [("KEY-7f3a9c\n", None), ("KEY-7f3a\n9c", "line break"), ("KEY 7f3a9c", "space")]
)
def test_an_api_key_that_cannot_be_sent_is_reported_by_the_check_without_showing_it(settings, key, problem):
    settings.JOURNY = {**settings.JOURNY, "API_KEY": key, "QUEUE": None}
    messages = checks.check_api_key()
    if problem is None:  # surrounding whitespace is stripped: the key is usable
        assert messages == []
        return
    [message] = messages
    assert message.id == "journy.E001" and problem in message.msg
    assert "7f3a" not in message.msg + message.hint


def test_an_api_key_from_the_environment_variable_passes_the_check_as_it_is_used_to_send(settings, monkeypatch):
    journy = {key: value for key, value in settings.JOURNY.items() if key not in ("API_KEY", "QUEUE")}
    settings.JOURNY = journy
    monkeypatch.setenv("JOURNY_API_KEY", "KEY-from-the-environment")
    assert checks.check_api_key() == []
    monkeypatch.setenv("JOURNY_API_KEY", "KEY-7f3a\n9c")
    [message] = checks.check_api_key()
    assert message.id == "journy.E001"
    assert message.msg.startswith("The JOURNY_API_KEY environment variable contains a line break; ")
    assert "7f3a" not in message.msg + message.hint
    monkeypatch.delenv("JOURNY_API_KEY")
    [message] = checks.check_api_key()
    assert "is not set" in message.msg


def test_a_property_map_naming_an_attribute_the_model_lacks_is_a_check_error_naming_both(settings):
    settings.JOURNY = {**settings.JOURNY, "USER_PROPERTIES": ["first_name", "nickname"]}
    [message] = checks.check_property_attributes()
    assert message.id == "journy.E011"
    assert "'nickname'" in message.msg and "User" in message.msg and "first_name" not in message.msg
    settings.JOURNY = {**settings.JOURNY, "USER_PROPERTIES": ["first_name", "get_full_name", "profile.plan"]}
    assert [m.id for m in checks.check_property_attributes()] == ["journy.E011"]  # 'profile' is not on User either


def test_an_account_domain_field_the_account_model_lacks_is_a_check_error_naming_both(settings):
    settings.JOURNY = {**settings.JOURNY, "ACCOUNT_DOMAIN_FIELD": "website"}
    [message] = checks.check_property_attributes()
    assert message.id == "journy.E011"
    assert message.msg.startswith("JOURNY['ACCOUNT_DOMAIN_FIELD']='website': tests.django.testapp.models.Organization")
    settings.JOURNY = {**settings.JOURNY, "ACCOUNT_DOMAIN_FIELD": "domain"}
    assert checks.check_property_attributes() == []


@pytest.mark.parametrize(
    ("queue", "named"),
    [
        ({"BACKEND": "celery", "OPTIONS": {"ACKS_LATE": "yes"}}, "'ACKS_LATE'"),
        ({"BACKEND": "rq", "OPTIONS": {"PUBLISH_TIMEOUT": -1}}, "'PUBLISH_TIMEOUT'"),
        ({"BACKEND": "thread", "OPTIONS": {"RETRY": {"max_attempt": 3}}}, "max_attempt"),
        ({"BACKEND": "thread", "OPTIONS": {"MAX_QUEUE_SIZE": 0}}, "'MAX_QUEUE_SIZE'"),
    ],
)
def test_a_queue_option_with_a_bad_value_is_a_check_error_naming_it(settings, queue, named):
    settings.JOURNY = {**settings.JOURNY, "QUEUE": queue}
    [message] = checks.check_queue()
    assert message.id == "journy.E003"
    assert named in message.msg


@pytest.mark.parametrize(
    "queue",
    [
        {"BACKEND": "outbox"},  # the app's store is filled in, as get_journy() does
        {"BACKEND": "outbox", "OPTIONS": {"RELAY_IN_PROCESS": False, "POLL_SECONDS": 30}},
        {"BACKEND": "thread", "OPTIONS": {"RETRY": {"max_attempts": 3}}},
        {"BACKEND": "celery", "OPTIONS": {"ACKS_LATE": "idempotent"}},
        {"BACKEND": "rq", "OPTIONS": {"URL": "redis://127.0.0.1:9/0"}},  # never contacted by the check
    ],
)
def test_a_queue_the_app_can_build_passes_the_check(settings, queue):
    settings.JOURNY = {**settings.JOURNY, "QUEUE": queue}
    assert checks.check_queue() == []


def test_a_misspelt_queue_backend_or_option_is_an_error_suggesting_the_right_name(settings):
    settings.JOURNY = {**settings.JOURNY, "QUEUE": {"BACKEND": "outbx"}}
    [message] = checks.check_queue()
    assert message.id == "journy.E003"
    assert "did you mean 'outbox'?" in message.msg and "outbox" in message.hint
    settings.JOURNY = {**settings.JOURNY, "QUEUE": {"BACKEND": "outbox", "OPTIONS": {"RELAY_IN_PROCES": False}}}
    [message] = checks.check_queue()
    assert "Did you mean 'RELAY_IN_PROCESS' for 'RELAY_IN_PROCES'?" in message.msg


def test_a_misspelt_key_is_one_error_suggesting_the_right_name(settings):
    settings.JOURNY = {**settings.JOURNY, "ACOUNT_MODEL": "testapp.Organization"}
    messages = [message for check in checks.ALL_CHECKS for message in check()]
    assert ids(messages) == ["journy.E009"]
    assert "JOURNY['ACOUNT_MODEL']: did you mean JOURNY['ACCOUNT_MODEL']?" in messages[0].msg


def test_a_journy_setting_that_is_not_a_dict_is_one_error(settings):
    settings.JOURNY = ["API_KEY", "x"]
    messages = [message for check in checks.ALL_CHECKS for message in check()]
    assert ids(messages) == ["journy.E009"]
    assert "settings.JOURNY must be a dict" in messages[0].msg


def test_a_flask_only_option_in_django_settings_says_whose_it_is(settings):
    settings.JOURNY = {**settings.JOURNY, "USER_MODEL": "auth.User"}
    (message,) = checks.check_settings_shape()
    assert "JOURNY['USER_MODEL'] is a Flask option" in message.msg


@pytest.mark.parametrize(
    "overrides",
    [
        {"ACCOUNT_MODEL": "testapp.Organization", "ACCOUNT_DELETED": "deleted_at"},
        {"WEBSITE_DOMAIN": "localhost"},  # the API key the test settings give fetches the snippet
    ],
)
def test_options_that_need_another_option_pass_when_it_is_set(settings, overrides):
    settings.JOURNY = {**settings.JOURNY, **overrides}
    assert [m for check in checks.ALL_CHECKS for m in check() if m.level >= 40] == []


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"ACCOUNT_MODEL": 123}, "JOURNY['ACCOUNT_MODEL'] must be a model label"),
        ({"ACCOUNT_MODEL": None, "ACCOUNT_MEMBERS": "members"}, "JOURNY['ACCOUNT_MEMBERS'] is set but"),
        ({"TRACKER_ID": 123, "TRACKER_DOMAIN": "https://go.acme.com"}, "JOURNY['TRACKER_ID'] must be a non-empty"),
        (
            {"TRACKER_ID": "t-1", "TRACKER_DOMAIN": "https://go.acme.com", "TRACKER_SCRIPT_PATH": "analytics.js"},
            "JOURNY['TRACKER_SCRIPT_PATH']",
        ),
        ({"TRACKER_SCRIPT_PATH": ""}, "JOURNY['TRACKER_SCRIPT_PATH']"),
        ({"API_KEY": 12345}, "JOURNY['API_KEY'] is a int, not a string"),
        ({"API_KEY": ""}, "JOURNY['API_KEY'] is empty or blank"),
        ({"SKIP_IMPERSONATED": "false"}, "JOURNY['SKIP_IMPERSONATED'] must be True or False"),
        ({"WEBSITE_DOMAIN": "localhost", "SNIPPET_CACHE_SECONDS": 0}, "JOURNY['SNIPPET_CACHE_SECONDS'] must be"),
    ],
)
def test_a_value_that_would_fail_when_used_is_an_error_at_start_up_naming_the_option(
    settings, monkeypatch, overrides, says
):
    monkeypatch.delenv("JOURNY_API_KEY", raising=False)
    settings.JOURNY = {**settings.JOURNY, **overrides}
    errors = [m for check in checks.ALL_CHECKS for m in check() if m.level >= 40]
    assert any(says in m.msg for m in errors), [m.msg for m in errors]
