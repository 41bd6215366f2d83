"""The Cloud API error table, the delay tiers, the classifiers and the request bodies:
pure functions, no server. The codes and their fates are DESIGN.md's lists."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from inbox_common.broker.topology import RETRY_TIERS
from inbox_common.contracts.webhook import MetaError
from inbox_common.errors import ChannelStoppedError, PermanentError, TransientError
from inbox_common.whatsapp import messages
from inbox_common.whatsapp.classify import (
    error_from_exception,
    error_from_response,
    error_from_status_errors,
    error_from_webhook,
)
from inbox_common.whatsapp.errors import (
    TABLE,
    TIERS,
    UNKNOWN,
    Classification,
    CloudApiError,
    next_tier,
    rule_for,
)

RETRY = Classification.RETRY
PERMANENT = Classification.PERMANENT
STOP = Classification.STOP_CHANNEL

# DESIGN.md, "Meta facts the code must honour" and "What happens to work that fails".
RETRIED = [130429, 131056, 131000, 131016, 4, 80007, 1, 2]
NEVER_RETRIED_UNCHANGED = [
    131047, 131026, 131049, 131050, 132000, 132001, 132012, 132015, 132999,
    100, 131008, 131009, 131051, 131052, 131053,
]  # fmt: skip
CHANNEL_STOPPERS = [190, 368, 131048, 131031]


def graph_body(code: int, message: str, **extra: Any) -> bytes:
    """An error answer as Graph writes it."""
    error = {"message": message, "type": "OAuthException", "code": code, **extra}
    error.setdefault("fbtrace_id", "AbCdEf123")
    return orjson.dumps({"error": error})


@pytest.mark.parametrize("code", RETRIED)
def test_a_retried_code_is_retry_with_a_tier(code: int) -> None:
    rule = rule_for(code)
    assert rule.classification is RETRY
    assert rule.tier in TIERS


@pytest.mark.parametrize("code", NEVER_RETRIED_UNCHANGED)
def test_a_code_that_cannot_succeed_unchanged_is_permanent(code: int) -> None:
    rule = rule_for(code)
    assert rule.classification is PERMANENT
    assert rule.tier is None


@pytest.mark.parametrize("code", CHANNEL_STOPPERS)
def test_a_code_that_disables_the_channel_stops_it(code: int) -> None:
    assert rule_for(code).classification is STOP


@pytest.mark.parametrize(
    ("code", "tier"), [(130429, "30s"), (131056, "2m"), (131000, "5s"), (4, "5s"), (2, "5s")]
)
def test_first_tiers(code: int, tier: str) -> None:
    assert rule_for(code).tier == tier


@pytest.mark.parametrize("code", [131999, 133000, 0, 10, 200, 999999])
def test_a_code_the_table_does_not_know_is_permanent(code: int) -> None:
    assert rule_for(code) is UNKNOWN
    assert UNKNOWN.classification is PERMANENT


def test_every_retryable_rule_names_a_real_tier_and_no_other_rule_has_one() -> None:
    for rule in TABLE:
        if rule.classification is RETRY:
            assert rule.tier in TIERS, rule
        else:
            assert rule.tier is None, rule


def test_the_tiers_are_the_broker_s_delay_tiers() -> None:
    assert [name for name, _ in RETRY_TIERS] == list(TIERS)


# --- next_tier ------------------------------------------------------------------------------


def test_next_tier_walks_every_tier_and_then_ends() -> None:
    walked: list[str] = []
    tier = next_tier(None, "5s")
    while tier is not None:
        walked.append(tier)
        tier = next_tier(tier, "5s")
    assert walked == ["5s", "30s", "2m", "10m", "1h"]


def test_next_tier_starts_at_the_floor_and_never_goes_below_it() -> None:
    assert next_tier(None, "2m") == "2m"
    assert next_tier("2m", "2m") == "10m"
    # A pair-rate refusal after a generic failure jumps to its own floor.
    assert next_tier("5s", "2m") == "2m"
    assert next_tier("1h", "30s") is None


def test_next_tier_refuses_an_unknown_tier() -> None:
    with pytest.raises(ValueError, match="unknown delay tier '3s'"):
        next_tier("3s", "5s")
    with pytest.raises(ValueError, match="unknown delay tier"):
        next_tier(None, "1d")


# --- classifying a Graph answer ---------------------------------------------------------------


def test_a_graph_error_body_gives_every_field() -> None:
    body = graph_body(
        130429,
        "(#130429) Rate limit hit",
        error_data={"messaging_product": "whatsapp", "details": "Cloud API throughput reached."},
        fbtrace_id="Az8or2yhqkZfEZ",
    )
    error = error_from_response(400, body)
    assert error.code == 130429
    assert error.title == "Rate limit hit"
    assert error.meta_message == "(#130429) Rate limit hit"
    assert error.details == "Cloud API throughput reached."
    assert error.http_status == 400
    assert error.fbtrace_id == "Az8or2yhqkZfEZ"
    assert error.reason == "meta_130429"
    assert (error.classification, error.tier, error.maybe_sent) == (RETRY, "30s", False)
    assert "Az8or2yhqkZfEZ" in str(error)
    assert "Cloud API throughput reached." in str(error)


def test_the_190_message_says_what_to_do() -> None:
    error = error_from_response(401, graph_body(190, "Error validating access token"))
    assert error.classification is STOP
    assert str(error).startswith("the channel's access token was refused (expired or revoked)")
    assert str(error).endswith("reconnect the channel with a new token")


@pytest.mark.parametrize(("status", "reason"), [(500, "http_500"), (502, "http_502")])
def test_a_server_error_without_a_graph_body_is_retried(status: int, reason: str) -> None:
    error = error_from_response(status, b"<html>Bad Gateway</html>")
    assert (error.reason, error.classification, error.tier) == (reason, RETRY, "5s")
    assert error.code is None
    assert error.http_status == status


def test_a_429_without_a_graph_body_is_retried() -> None:
    assert error_from_response(429, b"").classification is RETRY


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"error": "nope"}', b'{"x": 1}'])
def test_a_client_error_without_a_graph_body_is_permanent(body: bytes) -> None:
    error = error_from_response(404, body)
    assert (error.reason, error.classification) == ("http_404", PERMANENT)
    assert "WHATSAPP_API_BASE_URL" in str(error)


def test_an_unknown_code_is_permanent_unless_graph_calls_it_transient() -> None:
    assert error_from_response(400, graph_body(424242, "new")).classification is PERMANENT
    marked = error_from_response(400, graph_body(424242, "new", is_transient=True))
    assert (marked.classification, marked.reason) == (RETRY, "meta_424242")
    assert error_from_response(503, graph_body(424242, "new")).classification is RETRY


def test_a_known_permanent_code_stays_permanent_whatever_the_status() -> None:
    assert error_from_response(500, graph_body(131026, "x")).classification is PERMANENT


# --- classifying a failure without an answer ----------------------------------------------


def test_a_timeout_may_have_been_sent() -> None:
    error = error_from_exception(TimeoutError(), timeout_seconds=2.5)
    assert (error.reason, error.classification, error.tier) == ("timeout", RETRY, "5s")
    assert error.maybe_sent is True
    assert "no answer within 2.5s" in str(error)


def test_a_connect_timeout_was_not_sent() -> None:
    error = error_from_exception(aiohttp.ConnectionTimeoutError("Connection timeout to host"))
    assert (error.reason, error.maybe_sent, error.classification) == (
        "connect_timeout",
        False,
        RETRY,
    )


def test_a_broken_connection_may_have_been_sent() -> None:
    error = error_from_exception(aiohttp.ServerDisconnectedError())
    assert (error.reason, error.maybe_sent, error.classification) == (
        "connection_lost",
        True,
        RETRY,
    )


# --- the error tree -------------------------------------------------------------------------


def test_each_classification_raises_its_error_of_the_tree() -> None:
    retry = error_from_response(400, graph_body(131056, "(#131056) pair rate"))
    with pytest.raises(TransientError) as transient:
        retry.raise_processing_error(channel_id="ch-1")
    assert (transient.value.reason, transient.value.tier) == ("meta_131056", "2m")
    assert transient.value.__cause__ is retry

    permanent = error_from_response(400, graph_body(131047, "(#131047) Re-engagement message"))
    with pytest.raises(PermanentError) as dead:
        permanent.raise_processing_error(channel_id="ch-1")
    assert dead.value.reason == "meta_131047"
    assert "only a template message can be sent now" in str(dead.value)

    stop = error_from_response(403, graph_body(368, "(#368) Temporarily blocked"))
    with pytest.raises(ChannelStoppedError) as stopped:
        stop.raise_processing_error(channel_id="ch-1")
    assert (stopped.value.reason, stopped.value.channel_id) == ("meta_368", "ch-1")


def test_the_retry_logic_can_name_a_later_tier() -> None:
    error = error_from_response(500, graph_body(131000, "(#131000) Something went wrong"))
    later = error.to_processing_error(channel_id="ch-1", tier=next_tier("30s", error.tier or ""))
    assert isinstance(later, TransientError)
    assert later.tier == "2m"


# --- a failed status webhook: the same table ----------------------------------------------


def _webhook_error(code: int) -> dict[str, Any]:
    return {
        "code": code,
        "title": "Title",
        "message": "Title",
        "error_data": {"details": "Some detail."},
        "href": "https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/",
    }


@pytest.mark.parametrize(
    ("code", "classification"),
    [
        (131026, PERMANENT),
        (131047, PERMANENT),
        (130429, RETRY),
        (131048, STOP),
        (132001, PERMANENT),
    ],
)
def test_a_failed_status_error_is_classified_by_the_same_table(
    code: int, classification: Classification
) -> None:
    error = error_from_webhook(MetaError.model_validate(_webhook_error(code)))
    assert error.classification is classification
    assert error.tier == rule_for(code).tier
    assert (error.code, error.details, error.http_status) == (code, "Some detail.", None)
    assert error.reason == f"meta_{code}"


def test_the_gravest_error_of_a_status_decides() -> None:
    errors = [_webhook_error(130429), _webhook_error(131031), _webhook_error(131026)]
    assert error_from_status_errors(errors).code == 131031
    assert error_from_status_errors(errors[::2]).code == 131026


def test_a_failed_status_without_errors_is_permanent() -> None:
    error = error_from_status_errors([])
    assert (error.reason, error.classification) == ("failed_without_error", PERMANENT)


def test_a_cloud_api_error_is_not_an_error_of_the_tree() -> None:
    # A handler that lets it escape has a bug: it must choose the fate explicitly.
    error = error_from_response(401, graph_body(190, "bad"))
    assert isinstance(error, CloudApiError)
    assert not isinstance(error, (TransientError, PermanentError, ChannelStoppedError))


# --- request bodies -------------------------------------------------------------------------


def test_a_phone_number_wins_over_a_bsuid() -> None:
    both = messages.address(phone="+15551234567", user_id="US.13491208655302741918")
    assert both == {"to": "+15551234567"}
    assert messages.address(user_id="US.13491208655302741918") == {
        "recipient": "US.13491208655302741918"
    }


@pytest.mark.parametrize("user_id", ["us.123", "US13491208655302741918", "USA.1", "US.", "US.1-2"])
def test_a_malformed_bsuid_is_refused_before_any_call(user_id: str) -> None:
    with pytest.raises(PermanentError) as refused:
        messages.address(user_id=user_id)
    assert refused.value.reason == "invalid_recipient"


def test_a_message_without_recipient_is_refused() -> None:
    with pytest.raises(PermanentError) as refused:
        messages.address()
    assert refused.value.reason == "no_recipient"


def test_a_text_body_is_meta_s_shape() -> None:
    body = messages.text(
        messages.address(phone="15551234567"), "Halo", reply_to="wamid.X", callback_data="m-1"
    )
    assert body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "15551234567",
        "type": "text",
        "text": {"body": "Halo", "preview_url": False},
        "context": {"message_id": "wamid.X"},
        "biz_opaque_callback_data": "m-1",
    }


def test_callback_data_past_meta_s_limit_is_refused() -> None:
    with pytest.raises(PermanentError):
        messages.text(messages.address(phone="1555"), "x", callback_data="x" * 513)


def test_a_read_receipt_is_meta_s_shape() -> None:
    assert messages.read_receipt("wamid.A") == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.A",
    }
