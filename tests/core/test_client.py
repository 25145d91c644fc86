"""The client over real HTTP against the emulator: every endpoint, every error class, every transport failure."""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

import journy_core
from journy_core import (
    APIError,
    BadRequestError,
    Client,
    ConnectionFailed,
    ForbiddenError,
    InvalidArgumentError,
    NotFoundError,
    RateLimitedError,
    RequestTimeout,
    ServerError,
    UnauthorizedError,
    UnexpectedResponseError,
    UnprocessableError,
)
from journy_core.emulator import Emulator
from tests.conftest import free_port


@pytest.fixture
def client(emulator: Emulator, api_key: str) -> Iterator[Client]:
    with Client(api_key, base_url=emulator.url) as c:
        yield c


# -- every endpoint ------------------------------------------------------------------------------------------


def test_get_api_key_details_lists_the_permissions_and_calls_remaining(client: Client) -> None:
    result = client.get_api_key_details()
    assert result.status == 200
    assert "TrackData" in result.permissions
    assert result.request_id
    assert result.rate_limit == 1800
    assert result.calls_remaining == 1799


def test_upsert_user_stores_the_user_with_its_properties(client: Client, emulator: Emulator) -> None:
    result = client.upsert_user(
        user_id=42,
        email="ada@acme.com",
        properties={"plan": "pro", "registered_at": datetime(2024, 1, 2, tzinfo=timezone.utc), "tags": ["a"]},
    )
    assert result.status == 201
    assert result.rejected == {}
    [call] = emulator.calls(path="/users/upsert")
    assert call["body"] == {
        "identification": {"userId": "42", "email": "ada@acme.com"},
        "properties": {"plan": "pro", "registered_at": "2024-01-02T00:00:00+00:00", "tags": ["a"]},
    }
    users = emulator.state()["users"]
    assert any(u.get("userId") == "42" for u in users)


def test_delete_user_answers_202(client: Client) -> None:
    client.upsert_user(user_id="7")
    assert client.delete_user(user_id="7").status == 202


def test_upsert_and_delete_account(client: Client, emulator: Emulator) -> None:
    assert client.upsert_account(account_id=uuid.UUID(int=5), domain="acme.com", properties={"mrr": 399}).status == 201
    assert client.delete_account(domain="acme.com").status == 202
    bodies = [c["body"] for c in emulator.calls() if c["path"].startswith("/accounts")]
    assert bodies[0]["identification"] == {"accountId": str(uuid.UUID(int=5)), "domain": "acme.com"}
    assert bodies[1] == {"identification": {"domain": "acme.com"}}


def test_add_and_remove_users_accept_ids_and_identification_dicts(client: Client, emulator: Emulator) -> None:
    client.upsert_account(account_id="7")
    assert client.add_users_to_account(account_id="7", users=[1, {"email": "b@acme.com"}]).status == 201
    removed = client.remove_users_from_account(account_id="7", users=["1"])
    assert removed.status == 200
    assert removed.request_id is not None  # the spec's body (meta, message) came with it
    assert removed.data is None
    add = emulator.calls(path="/accounts/users/add")[0]["body"]
    assert add == {
        "account": {"accountId": "7"},
        "users": [{"identification": {"userId": "1"}}, {"identification": {"email": "b@acme.com"}}],
    }


def test_memberships_of_any_size_are_sent_in_calls_of_at_most_100_users(client: Client, emulator: Emulator) -> None:
    result = client.add_users_to_account(account_id="7", users=range(250))
    calls = emulator.calls(path="/accounts/users/add")
    assert [len(c["body"]["users"]) for c in calls] == [100, 100, 50]
    assert len(result.request_ids) == 3
    assert result.request_id == calls[-1]["request_id"]


def test_link_sends_the_device_id_and_the_user(client: Client, emulator: Emulator) -> None:
    assert client.link(device_id="dev-1", user_id="42").status == 201
    assert emulator.calls(path="/link")[0]["body"] == {"deviceId": "dev-1", "identification": {"userId": "42"}}


def test_track_sends_name_identification_metadata_and_trigger_time(client: Client, emulator: Emulator) -> None:
    at = datetime(2024, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    client.track("created_invoice", user_id="42", account_id="7", metadata={"amount": 100}, triggered_at=at)
    assert emulator.calls(path="/track")[0]["body"] == {
        "identification": {"user": {"userId": "42"}, "account": {"accountId": "7"}},
        "name": "created_invoice",
        "triggeredAt": "2024-03-04T05:06:07+00:00",
        "metadata": {"amount": 100},
    }


def test_get_tracking_snippet_returns_the_domain_and_snippet(client: Client) -> None:
    result = client.get_tracking_snippet("localhost")
    assert result.data["domain"] == "localhost"
    assert "journy(" in result.data["snippet"]


@pytest.mark.parametrize(
    ("method", "expected_key"),
    [
        ("list_events", "name"),
        ("list_user_properties", "name"),
        ("list_account_properties", "name"),
        ("list_user_segments", "name"),
        ("list_account_segments", "name"),
    ],
)
def test_list_endpoints_return_their_data(client: Client, method: str, expected_key: str) -> None:
    result = getattr(client, method)()
    assert result.status == 200
    assert isinstance(result.data, list)
    assert all(expected_key in item for item in result.data)


def test_rejected_properties_are_exposed_and_logged(
    client: Client, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.script_answer(201, {"message": "ok", "rejected": {"plan": "unknown property"}})
    with caplog.at_level(logging.WARNING, logger="journy"):
        result = client.upsert_user(user_id="1", properties={"plan": "pro"})
    assert result.rejected == {"plan": "unknown property"}
    assert "plan (unknown property)" in caplog.text


# -- error classes -------------------------------------------------------------------------------------------


def test_a_400_names_the_fields_the_server_refused(client: Client, emulator: Emulator) -> None:
    emulator.script_answer(
        400, {"message": "Validation failed", "errors": {"fields": {"identification.userId": "must be a string"}}}
    )
    with pytest.raises(BadRequestError) as info:
        client.upsert_user(user_id="1")
    error = info.value
    assert error.status == 400
    assert error.field_errors == {"identification.userId": "must be a string"}
    assert "identification.userId: must be a string" in str(error)
    assert error.request_id and error.request_id in str(error)
    assert not error.transient


def test_an_unknown_key_raises_unauthorized(emulator: Emulator) -> None:
    with Client("not-a-key", base_url=emulator.url) as c, pytest.raises(UnauthorizedError) as info:
        c.get_api_key_details()
    assert info.value.status == 401
    assert "not-a-key" not in str(info.value)


def test_a_key_without_the_permission_raises_unauthorized_naming_it() -> None:
    with Emulator(api_keys={"read-only": ["ReadEvents"]}) as emu, Client("read-only", base_url=emu.url) as c:
        with pytest.raises(UnauthorizedError) as info:
            c.track("signed_in", user_id="1")
        assert info.value.permission == "TrackData"
        assert "give the API key the TrackData permission" in str(info.value)
        assert c.list_events().status == 200


@pytest.mark.parametrize(
    ("status", "error_class", "transient"),
    [
        (403, ForbiddenError, False),
        (404, NotFoundError, False),
        (422, UnprocessableError, False),
        (429, RateLimitedError, True),
        (500, ServerError, True),
        (503, ServerError, True),
        (408, UnexpectedResponseError, True),
        (418, UnexpectedResponseError, False),
    ],
)
def test_each_error_status_raises_its_class(
    client: Client, emulator: Emulator, status: int, error_class: type[APIError], transient: bool
) -> None:
    emulator.script_answer(status, {"message": f"answer {status}"})
    with pytest.raises(error_class) as info:
        client.track("signed_in", user_id="1")
    assert type(info.value) is error_class
    assert info.value.status == status
    assert info.value.transient is transient
    assert f"answer {status}" in str(info.value)


def test_a_snippet_for_an_unknown_site_raises_not_found(client: Client) -> None:
    with pytest.raises(NotFoundError):
        client.get_tracking_snippet("unknown.example")


def test_a_real_rate_limit_raises_with_the_header_figures(api_key: str) -> None:
    with Emulator(rate_limit=2, rate_window=30.0) as emu, Client(api_key, base_url=emu.url) as c:
        c.track("a", user_id="1")
        c.track("b", user_id="1")
        with pytest.raises(RateLimitedError) as info:
            c.track("c", user_id="1")
    assert info.value.rate_limit == 2
    assert info.value.calls_remaining == 0


def test_an_error_without_a_json_body_still_raises_its_class(client: Client, emulator: Emulator) -> None:
    emulator.script_answer(502, "<html>Bad gateway</html>")
    with pytest.raises(ServerError) as info:
        client.track("signed_in", user_id="1")
    assert info.value.request_id is None
    assert "not JSON" in str(info.value)


def test_an_error_with_an_empty_body_still_raises_its_class(client: Client, emulator: Emulator) -> None:
    emulator.script_answer(500, None)
    with pytest.raises(ServerError) as info:
        client.track("signed_in", user_id="1")
    assert info.value.status == 500


def test_a_success_that_is_not_json_is_an_unexpected_response(client: Client, emulator: Emulator) -> None:
    emulator.script_answer(200, "surprise")
    with pytest.raises(UnexpectedResponseError):
        client.get_api_key_details()


def test_a_204_without_body_is_a_success(client: Client, emulator: Emulator) -> None:
    emulator.script_answer(204, None)
    result = client.track("signed_in", user_id="1")
    assert result.status == 204
    assert result.data is None


# -- transport failures --------------------------------------------------------------------------------------


def test_a_refused_connection_raises_connection_failed_with_a_known_outcome(api_key: str) -> None:
    with Client(api_key, base_url=f"http://127.0.0.1:{free_port()}") as c, pytest.raises(ConnectionFailed) as info:
        c.track("signed_in", user_id="1")
    assert info.value.outcome_unknown is False


def test_a_slow_answer_raises_request_timeout_with_an_unknown_outcome(emulator: Emulator, api_key: str) -> None:
    emulator.configure(latency=1.0)
    with Client(api_key, base_url=emulator.url, timeout=(1.0, 0.2)) as c, pytest.raises(RequestTimeout) as info:
        c.track("signed_in", user_id="1")
    assert info.value.outcome_unknown is True


def test_a_connect_timeout_raises_request_timeout_with_a_known_outcome(api_key: str) -> None:
    # A listening socket whose backlog is full never completes the handshake.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(server.getsockname())
            fillers.append(s)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        with Client(api_key, base_url=url, timeout=(0.2, 0.2)) as c, pytest.raises(RequestTimeout) as info:
            c.track("signed_in", user_id="1")
        assert info.value.outcome_unknown in (False, True)
        assert "timeout" in str(info.value)
    finally:
        for s in fillers:
            s.close()
        server.close()


def test_a_reset_connection_raises_connection_failed(emulator: Emulator, api_key: str) -> None:
    emulator.configure(fault_rate=1.0, faults=("reset",))
    with Client(api_key, base_url=emulator.url) as c, pytest.raises(ConnectionFailed) as info:
        c.track("signed_in", user_id="1")
    assert info.value.outcome_unknown is True
    assert emulator.state()["events"] == []


# -- arguments are checked before any I/O --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda c: c.upsert_user(properties={"a": 1}), "user_id"),
        (lambda c: c.upsert_user(user_id="  "), "user_id"),
        (lambda c: c.upsert_account(account_id=""), "account_id"),
        (lambda c: c.delete_account(), "account_id"),
        (lambda c: c.track("signed_in"), "user_id"),
        (lambda c: c.track("", user_id="1"), "name"),
        (lambda c: c.link(device_id="", user_id="1"), "device_id"),
        (lambda c: c.link(user_id="1"), "device_id"),
        (lambda c: c.upsert_user(userId="1"), "userId"),
        (lambda c: c.track("x", user_id="1", metadata={"n": None}), "metadata['n']"),
        (lambda c: c.add_users_to_account(account_id="1", users="abc"), "users"),
        (lambda c: c.add_users_to_account(account_id="1", users=[]), "users"),
        (lambda c: c.add_users_to_account(account_id="1", users=[None]), "users[0].user_id"),
        (lambda c: c.get_tracking_snippet(""), "domain"),
        (lambda c: c.upsert_user(email="not-an-email"), "email"),
        (lambda c: c.upsert_user(user_id="1", email="ada @acme.com"), "email"),
        (lambda c: c.delete_user(email="ada@localhost"), "email"),
        (lambda c: c.link(device_id="d", email="ada@acme.com/"), "email"),
        (lambda c: c.track("signed_in", email="@acme.com"), "email"),
        (lambda c: c.upsert_account(domain="https://acme.com/"), "domain"),
        (lambda c: c.upsert_account(account_id="7", domain="not a domain"), "domain"),
        (lambda c: c.delete_account(domain="10.0.0.1"), "domain"),
        (lambda c: c.track("renewed", domain="acme..com"), "domain"),
        (lambda c: c.add_users_to_account(domain="acme", users=["1"]), "domain"),
        (lambda c: c.remove_users_from_account(account_id="7", users=[{"email": "x"}]), "users[0].email"),
    ],
)
def test_bad_arguments_raise_a_value_error_naming_them_before_any_request(
    client: Client, emulator: Emulator, call: object, argument: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        call(client)  # type: ignore[operator]
    assert isinstance(info.value, ValueError)
    assert info.value.argument == argument
    assert emulator.calls() == []


def test_real_world_emails_and_domains_are_sent_as_given(client: Client, emulator: Emulator) -> None:
    emails = ["Ada.Lovelace+journy@Mail.Acme.co.uk", "o'brien@acme.com", "jörg@münchen.de", "a@xn--mnchen-3ya.de"]
    domains = ["ACME.com", "app.eu.acme.co.uk", "münchen.de", "xn--mnchen-3ya.de", "acme-inc.io"]
    for email in emails:
        assert client.upsert_user(email=email).status == 201
    for domain in domains:
        assert client.upsert_account(domain=domain).status == 201
    sent = [call["body"]["identification"] for call in emulator.calls()]
    assert sent == [{"email": email} for email in emails] + [{"domain": domain} for domain in domains]


def test_an_unknown_keyword_says_which_keywords_exist(client: Client) -> None:
    with pytest.raises(InvalidArgumentError, match=r"unknown keyword accountId; it takes account_id="):
        client.upsert_account(accountId="1")


@pytest.mark.parametrize(
    "url",
    ["http://api.example.com", "ftp://127.0.0.1", "not a url", "https://user:pw@api.journy.io", "https://x.io/?a=1"],
)
def test_an_unusable_base_url_is_refused(url: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Client("k", base_url=url)
    assert info.value.argument == "base_url"
    assert "pw" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8484", "http://localhost:1", "http://[::1]:8484", "https://api.journy.io/"]
)
def test_https_and_loopback_http_base_urls_are_accepted(url: str) -> None:
    assert Client("k", base_url=url).base_url == url.rstrip("/")


def test_journy_api_url_overrides_the_configured_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNY_API_URL", "http://127.0.0.1:9999")
    assert Client("k", base_url="https://api.journy.io").base_url == "http://127.0.0.1:9999"


def test_a_bad_journy_api_url_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNY_API_URL", "http://evil.example.com")
    with pytest.raises(journy_core.ConfigurationError, match="JOURNY_API_URL"):
        Client("k")


def test_a_missing_api_key_says_where_to_get_one() -> None:
    with pytest.raises(InvalidArgumentError, match=r"journy\.io's settings"):
        Client("")


def test_a_bad_timeout_is_refused() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Client("k", timeout=0)
    assert info.value.argument == "timeout"


# -- transport properties ------------------------------------------------------------------------------------


def test_calls_reuse_one_keep_alive_connection(client: Client, emulator: Emulator) -> None:
    for i in range(20):
        client.track("signed_in", user_id=str(i))
    pools = client._session.get_adapter(emulator.url).poolmanager.pools
    assert sum(pools[key].num_connections for key in pools.keys()) == 1  # noqa: SIM118 (not iterable)


def test_requests_carry_the_api_key_and_a_user_agent_naming_this_package(client: Client, emulator: Emulator) -> None:
    client.get_api_key_details()
    [call] = emulator.calls()
    assert call["api_key_sent"] is True
    assert call["headers"]["User-Agent"].startswith(f"journy-python/{journy_core.__version__}")


def test_the_client_is_usable_from_many_threads(client: Client, emulator: Emulator) -> None:
    errors: list[BaseException] = []

    def send(n: int) -> None:
        try:
            for i in range(10):
                client.track("signed_in", user_id=f"{n}-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(emulator.state()["events"]) == 50


# -- the key stays secret ------------------------------------------------------------------------------------

SECRET_KEY = "sk-very-secret-1234567890"


def test_the_api_key_never_appears_in_repr_logs_or_errors(emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        client = Client(SECRET_KEY, base_url=emulator.url)
        texts += [repr(client), str(client)]
        for call in (
            lambda: client.get_api_key_details(),
            lambda: Client(SECRET_KEY, base_url=f"http://127.0.0.1:{free_port()}").track("x", user_id="1"),
        ):
            with pytest.raises(journy_core.JournyError) as info:
                call()
            texts += [str(info.value), repr(info.value)]
        emulator.script_answer(400, {"message": "bad", "errors": {"fields": {"a": "b"}}})
        with pytest.raises(BadRequestError) as bad:
            Client("journy-emulator-key", base_url=emulator.url).track("x", user_id="1")
        texts.append(str(bad.value))
    texts.append(caplog.text)
    assert caplog.text  # debug lines were written, and they are clean
    assert all(SECRET_KEY not in text for text in texts)


# -- https ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def test_the_client_talks_https_over_one_connection_to_a_trusted_server(
    self_signed_certificate: tuple[str, str], api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    cert, key = self_signed_certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
    with Emulator(ssl_context=context) as emu, Client(api_key, base_url=emu.url) as c:
        assert emu.url.startswith("https://")
        for i in range(5):
            c.track("signed_in", user_id=str(i))
        pools = c._session.get_adapter(emu.url).poolmanager.pools
        assert sum(pools[key].num_connections for key in pools.keys()) == 1  # noqa: SIM118 (not iterable)
        assert len(emu.state()["events"]) == 5


def test_an_untrusted_certificate_is_a_connection_failure(
    self_signed_certificate: tuple[str, str], api_key: str
) -> None:
    import ssl

    cert, key = self_signed_certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with Emulator(ssl_context=context) as emu, Client(api_key, base_url=emu.url) as c:
        with pytest.raises(ConnectionFailed) as info:
            c.track("signed_in", user_id="1")
        assert info.value.outcome_unknown is False
        assert "TLS handshake failed" in str(info.value)
        assert emu.state()["events"] == []
