"""Verify, driven by the official `telnyx` SDK with only `base_url` changed: profiles, SMS /
call / flash-call verifications with codes read from Warden's `http` sender, checks by
phone number, expiry, parallel checks, refusals in the Telnyx error envelope, and webhook
deliveries verified by the SDK's own Ed25519 verifier with Warden's public key.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest
import telnyx
from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature

from warden_harness import WardenClient, expect

PHONE = "+13035550100"


class Recorder:
    """A local HTTP endpoint that records every POST (headers, raw body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                recorder.requests.append(({k: v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def json(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]

    def last_code(self, to: str) -> str:
        codes = [m["code"] for m in self.json() if m.get("to") == to]
        assert codes, f"no message to {to}: {self.json()}"
        return codes[-1]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def sink():
    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def hooks():
    r = Recorder()
    yield r
    r.close()


def sdk_client(warden: WardenClient) -> tuple[telnyx.Telnyx, str]:
    """Signs up and in; the session token is the SDK's api_key."""
    account = warden.sign_up()
    token = warden.sign_in(account)["token"]
    return telnyx.Telnyx(api_key=token, base_url=warden.base_url + "/v2", max_retries=0), token


@pytest.fixture
def verify_env(start_warden: Callable[..., WardenClient], sink: Recorder):
    warden = start_warden(WARDEN_SENDER="http", WARDEN_SENDER_URL=sink.url)
    client, token = sdk_client(warden)
    return warden, client, token


def test_sms_code_accepted_once_wrong_rejected_expired_rejected(verify_env, sink):
    warden, client, _ = verify_env
    profile = client.verify_profiles.create(
        name="SDK check", sms={"app_name": "SDK Check", "whitelisted_destinations": ["US"]}
    ).data
    assert profile.record_type == "verification_profile"
    assert profile.sms.code_length == 6
    assert profile.sms.default_verification_timeout_secs == 300
    assert client.verify_profiles.retrieve(profile.id).data.name == "SDK check"

    v = client.verifications.trigger_sms(phone_number=PHONE, verify_profile_id=profile.id).data
    assert v.status == "pending" and v.type == "sms" and v.verify_profile_id == profile.id
    code = sink.last_code(PHONE)
    assert len(code) == 6
    wrong = "000000" if code != "000000" else "111111"
    verify = client.verifications.by_phone_number.actions.verify
    assert verify(PHONE, code=wrong, verify_profile_id=profile.id).data.response_code == "rejected"
    assert verify(PHONE, code=code, verify_profile_id=profile.id).data.response_code == "accepted"
    assert verify(PHONE, code=code, verify_profile_id=profile.id).data.response_code == "rejected"
    assert client.verifications.retrieve(v.id).data.status == "accepted"
    listed = client.verifications.by_phone_number.list(PHONE)
    assert listed.meta.total_results == 1 and listed.data[0].id == v.id

    other = "+13035550101"
    v2 = client.verifications.trigger_sms(
        phone_number=other, verify_profile_id=profile.id, timeout_secs=1
    ).data
    late = sink.last_code(other)
    time.sleep(2.5)
    assert verify(other, code=late, verify_profile_id=profile.id).data.response_code == "rejected"
    assert client.verifications.retrieve(v2.id).data.status == "expired"


def test_call_and_flashcall_verifications(verify_env, sink):
    _, client, _ = verify_env
    profile = client.verify_profiles.create(name="Voice").data
    call = client.verifications.trigger_call(
        phone_number=PHONE, verify_profile_id=profile.id, extension="1ww2"
    ).data
    assert call.type == "call"
    message = [m for m in sink.json() if m["to"] == PHONE][-1]
    assert message["channel"] == "call"
    result = client.verifications.actions.verify(call.id, code=message["code"])
    assert result.data.response_code == "accepted"

    flash = client.verifications.trigger_flashcall(
        phone_number=PHONE, verify_profile_id=profile.id
    ).data
    assert flash.type == "flashcall"
    message = [m for m in sink.json() if m["to"] == PHONE][-1]
    assert message["purpose"] == "verification_flashcall"
    verify = client.verifications.by_phone_number.actions.verify
    assert verify(PHONE, code=message["code"], verify_profile_id=profile.id).data.response_code \
        == "accepted"


def test_parallel_checks_of_the_right_code_accept_exactly_one(verify_env, sink):
    _, client, _ = verify_env
    profile = client.verify_profiles.create(name="Race").data
    client.verifications.trigger_sms(phone_number=PHONE, verify_profile_id=profile.id)
    code = sink.last_code(PHONE)

    def check(_: int) -> str:
        return client.verifications.by_phone_number.actions.verify(
            PHONE, code=code, verify_profile_id=profile.id
        ).data.response_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(check, range(20)))
    assert answers.count("accepted") == 1, answers


def test_refusals_and_bad_input_are_telnyx_errors(start_warden, sink):
    warden = start_warden(WARDEN_SENDER="http", WARDEN_SENDER_URL=sink.url,
                          WARDEN_VERIFY_SENDS_PER_NUMBER="1")
    client, _ = sdk_client(warden)
    other, _ = sdk_client(warden)
    profile = client.verify_profiles.create(
        name="Guarded", sms={"whitelisted_destinations": ["CA"]},
        daily_spend_limit=0.05, daily_spend_limit_enabled=True,
    ).data

    def refused(exc_type, call) -> dict:
        with pytest.raises(exc_type) as info:
            call()
        errors = info.value.body["errors"]
        assert errors[0]["code"] and errors[0]["title"], errors
        return errors[0]

    sms = client.verifications.trigger_sms
    err = refused(telnyx.UnprocessableEntityError,
                  lambda: sms(phone_number=PHONE, verify_profile_id=profile.id))
    assert err["code"] == "destination_not_allowed"
    err = refused(telnyx.UnprocessableEntityError,
                  lambda: sms(phone_number="4165550100", verify_profile_id=profile.id))
    assert err["source"]["pointer"] == "/phone_number"
    refused(telnyx.NotFoundError, lambda: sms(
        phone_number="+14165550100", verify_profile_id="0190a000-0000-7000-8000-000000000000"))
    refused(telnyx.NotFoundError, lambda: other.verifications.trigger_sms(
        phone_number="+14165550100", verify_profile_id=profile.id))
    err = refused(telnyx.UnprocessableEntityError, lambda: sms(
        phone_number="+14165550100", verify_profile_id=profile.id, custom_code="12ab"))
    assert err["source"]["pointer"] == "/custom_code"
    assert sink.json() == [], "nothing was sent"

    sms(phone_number="+14165550100", verify_profile_id=profile.id)
    err = refused(telnyx.RateLimitError,
                  lambda: sms(phone_number="+14165550100", verify_profile_id=profile.id))
    assert err["code"] == "too_many_sends_to_number"
    err = refused(telnyx.RateLimitError,
                  lambda: sms(phone_number="+14165550101", verify_profile_id=profile.id))
    assert err["code"] == "daily_spend_limit_reached"
    assert len(sink.json()) == 1


def test_webhooks_verify_with_the_sdk_and_a_tampered_body_fails(verify_env, sink, hooks):
    warden, client, token = verify_env
    profile = client.verify_profiles.create(name="Hooks", webhook_url=hooks.url).data
    client.verifications.trigger_sms(phone_number=PHONE, verify_profile_id=profile.id)
    client.verifications.by_phone_number.actions.verify(
        PHONE, code=sink.last_code(PHONE), verify_profile_id=profile.id)
    public_key = expect(warden.get("/v2/public_key", token=token), 200)["data"]["public_key"]

    deadline = time.monotonic() + 15
    while len(hooks.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    types = [b["data"]["event_type"] for b in hooks.json()]
    assert types == ["verify.sent", "verify.delivered", "verify.accepted"], types
    for headers, body in hooks.requests:
        verify_webhook_signature(body, headers, public_key)
        event = json.loads(body)["data"]
        assert event["payload"]["profile_id"] == profile.id
        assert event["payload"]["phone_number"] == PHONE
        assert "failed_attempts" in event["payload"] and "delivery_status" in event["payload"]
        tampered = body.replace(b'"record_type":"event"', b'"record_type":"evil"')
        assert tampered != body
        with pytest.raises(WebhookVerificationError):
            verify_webhook_signature(tampered, headers, public_key)
