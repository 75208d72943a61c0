"""Account-level webhooks checked by independent clients: a local receiver verifies EVERY
delivery with the reference `standardwebhooks` package; it is down (refusing connections,
then answering 500) for a while and then comes back, and still receives every event, each
`webhook-id` at least once, with duplicates recognizable by that id. The delivery log is
read with the official `telnyx` SDK (`webhook_deliveries.list()` / `retrieve()`).

The server runs with WARDEN_WEBHOOK_RETRY_SCALE=0.001 (development only), so the
5 s, 5 min, 30 min… retry schedule passes in milliseconds and seconds.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import telnyx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from warden_harness import expect, free_port

EVENTS = 5


class FlakyReceiver:
    """A receiver on a fixed port: not listening at first (connections refused), then
    answering 500, then 200. Every request it sees is verified with `standardwebhooks`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.secret: str | None = None
        self.status = 500
        self.received: list[tuple[str, dict, bytes]] = []  # (webhook-id, parsed, raw)
        self.unverified: list[str] = []
        self.server: ThreadingHTTPServer | None = None
        self.lock = threading.Lock()

    def listen(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k: v for k, v in self.headers.items()}
                try:
                    parsed = Webhook(receiver.secret).verify(body, headers)
                    with receiver.lock:
                        if receiver.status == 200:
                            receiver.received.append((headers["webhook-id"], parsed, body))
                except WebhookVerificationError as e:
                    with receiver.lock:
                        receiver.unverified.append(f"{e}: {headers} {body!r}")
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ids(self) -> set[str]:
        with self.lock:
            return {i for i, _, _ in self.received}

    def close(self) -> None:
        if self.server:
            self.server.shutdown()


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_receiver_that_was_down_gets_every_event_verified(start_warden):
    warden = start_warden(WARDEN_WEBHOOK_RETRY_SCALE="0.001")
    account = warden.sign_up()
    token = warden.sign_in(account)["token"]
    client = warden.with_token(token)
    org_id = expect(client.get("/v2/users/me"), 200)["data"]["organization_id"]
    receiver = FlakyReceiver()
    try:
        created = expect(client.post("/v2/webhook_endpoints", {
            "url": receiver.url, "event_types": ["organization.updated"],
            "description": "client check",
        }), 201)["data"]
        receiver.secret = created["secret"]
        assert receiver.secret.startswith("whsec_")
        endpoint = expect(client.get(f"/v2/webhook_endpoints/{created['id']}"), 200)["data"]
        assert "secret" not in endpoint, "the secret is shown only once"

        # The receiver is down: these events' first attempts are refused.
        for i in range(EVENTS):
            expect(client.patch("/v2/organization", {"company_name": f"Down {i}"}), 200)
        time.sleep(0.5)
        receiver.listen()  # up, but failing
        time.sleep(1.0)
        with receiver.lock:
            receiver.status = 200  # back

        history = expect(client.get(f"/v2/audit/streams/organization-{org_id}/events",
                                    params={"page[size]": 250}), 200)["data"]
        expected = {e["event_id"] for e in history if e["event_type"] == "organization.updated"}
        assert len(expected) == EVENTS
        wait_until(lambda: receiver.ids() >= expected, 60, "every event to arrive")
        assert not receiver.unverified, receiver.unverified

        # Each webhook-id at least once; a redelivery is a recognizable duplicate.
        sdk = telnyx.Telnyx(api_key=token, base_url=warden.base_url + "/v2", max_retries=0)
        deliveries = list(sdk.webhook_deliveries.list(
            filter={"status": {"eq": "delivered"}}, page_size=50))
        assert {d.webhook.id for d in deliveries} >= expected
        retried = [d for d in deliveries if len(d.attempts or []) > 1]
        assert retried, "some deliveries needed retries"
        for d in retried:
            assert d.record_type == "webhook_delivery"
            assert d.attempts[0].status == "delivered", "attempts are newest first"
            assert d.attempts[-1].status == "failed"
            assert d.webhook.event_type == "organization.updated"
            assert d.started_at is not None and d.finished_at is not None
        one = sdk.webhook_deliveries.retrieve(deliveries[0].id).data
        assert one.id == deliveries[0].id and one.webhook.id in expected

        before = len(receiver.received)
        expect(client.post(f"/v2/webhook_deliveries/{one.id}/actions/redeliver"), 202)
        wait_until(lambda: len(receiver.received) > before, 30, "the redelivery")
        with receiver.lock:
            copies = [(raw, parsed) for i, parsed, raw in receiver.received if i == one.webhook.id]
        assert len(copies) >= 2, "the duplicate carries the same webhook-id"
        assert all(raw == copies[0][0] for raw, _ in copies), "and the same body"
        body = copies[0][1]
        assert body["type"] == "organization.updated"
        assert body["data"]["payload"]["company_name"].startswith("Down ")
        assert body["data"]["event_id"] == one.webhook.id
        assert isinstance(body["data"]["version"], int)
        assert "ciphertext" not in json.dumps(body)
        assert not receiver.unverified, receiver.unverified
    finally:
        receiver.close()


def test_a_forged_or_stale_delivery_fails_verification(start_warden):
    """The reference verifier really checks: a wrong secret and a changed body fail."""
    warden = start_warden(WARDEN_WEBHOOK_RETRY_SCALE="0.001")
    account = warden.sign_up()
    client = warden.with_token(warden.sign_in(account)["token"])
    receiver = FlakyReceiver()
    receiver.status = 200
    seen: list[tuple[dict, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            seen.append(({k: v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        created = expect(client.post("/v2/webhook_endpoints", {
            "url": receiver.url, "event_types": ["*"]}), 201)["data"]
        expect(client.patch("/v2/organization", {"company_name": "Forge Ltd"}), 200)
        wait_until(lambda: seen, 30, "a delivery")
        headers, body = seen[0]
        Webhook(created["secret"]).verify(body, headers)
        other = expect(client.post(f"/v2/webhook_endpoints/{created['id']}/actions/rotate_secret"),
                       200)["data"]["secret"]
        # Signed before the rotation: the new secret alone does not verify it.
        for secret, data in [(other, body), (created["secret"], body.replace(b"Forge", b"Fake"))]:
            try:
                Webhook(secret).verify(data, headers)
            except WebhookVerificationError:
                continue
            raise AssertionError("a forged delivery verified")
    finally:
        server.shutdown()
