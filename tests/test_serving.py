"""serving/: what every facematch server needs, checked without a server: the bearer rule, the addresses, the
refusal to serve beyond loopback without a secret and the bounds, each message naming the caller's own settings."""
from __future__ import annotations

import pytest

from serving import Bounds, SettingNames, bearer_token, check_beyond_loopback, client_net, is_loopback, same_secret
from utils import ConfigError


@pytest.mark.parametrize("header,token", [
    ("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER abc", "abc"), ("Bearer   abc  ", "abc"),
    ("Basic abc", ""), ("Bearerabc", ""), ("abc", ""), ("", ""), (None, ""), ("Bearer ", "")])
def test_the_bearer_scheme_is_case_insensitive(header, token):
    assert bearer_token(header) == token


def test_a_secret_is_matched_whole_and_never_when_empty():
    assert same_secret("abc", "abc") and not same_secret("abd", "abc") and not same_secret("ab", "abc")
    assert not same_secret("", "") and not same_secret("abc", "")
    assert same_secret("clé", "clé")  # not only ASCII


def test_loopback_and_the_client_a_limit_counts():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.6.7", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "", "192.0.2.1", "example.org"))
    assert client_net("127.0.0.2") == client_net("127.0.0.71") == client_net("::1") == "loopback"
    assert client_net("192.0.2.7") == "192.0.2.7" and client_net("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_net("2001:db8::1") == client_net("2001:db8::ffff:2") == "2001:db8::/64"
    assert client_net("testclient") == "testclient"  # not an address: itself


def test_serving_beyond_loopback_needs_the_secret_and_names_the_callers_settings():
    for host in ("127.0.0.1", "localhost", "::1"):
        check_beyond_loopback(host, "", host_key="web.host", secret_key="web.token", what="the page", how="set it")
    check_beyond_loopback("0.0.0.0", "s3cret", host_key="web.host", secret_key="web.token", what="the page",
                          how="set it")
    with pytest.raises(ConfigError) as refused:
        check_beyond_loopback("0.0.0.0", "", host_key="web.host", secret_key="web.token",
                              what="the page (which adds and removes photos)", how="set web.token to a long secret")
    message = str(refused.value)
    assert message.startswith("web.host=0.0.0.0 serves the page (which adds and removes photos) beyond this machine "
                              "without web.token: set web.token to a long secret")
    assert "server." not in message and "\n" not in message


@pytest.mark.parametrize("key,value", [("read_timeout", 0), ("header_timeout", -1), ("max_connections", 2.5),
                                       ("max_per_client", 0), ("read_timeout", float("inf")), ("max_connections", True)])
def test_bounds_refuse_what_would_leave_a_server_unbounded_or_closed(key, value):
    names = SettingNames.of("web")
    with pytest.raises(ConfigError, match=rf"^{getattr(names, key)} must be a positive"):
        Bounds(**{key: value}, names=names)
    assert SettingNames.of("web").max_per_client == "web.max_connections_per_client"
