"""Organization users through the official `telnyx` Python SDK: with only `base_url`
changed, the SDK lists, gets and removes Warden's members (`/v2/organizations/users`), with
Telnyx's filters, `include_groups` and paging.

Sub-users join by invitation: Warden emails the token through its `http` sender, which
posts to a small local receiver here.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
import telnyx

from warden_harness import WardenClient, expect

SUB_PASSWORD = "a sub-user's own long passphrase"


class MessageSink:
    """Receives what Warden's `http` sender posts: {channel, to, message, code, purpose}."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length", "0"))
                sink.messages.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/messages"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def last_to(self, address: str) -> dict:
        return [m for m in self.messages if m.get("to") == address][-1]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def sink() -> Iterator[MessageSink]:
    s = MessageSink()
    try:
        yield s
    finally:
        s.close()


def sdk(warden: WardenClient, token: str) -> telnyx.Telnyx:
    return telnyx.Telnyx(api_key=token, base_url=warden.base_url + "/v2", max_retries=0)


def test_the_telnyx_sdk_lists_gets_and_removes_organization_users(start_warden, sink):
    warden = start_warden(WARDEN_SENDER="http", WARDEN_SENDER_URL=sink.url)
    owner = warden.sign_up()
    owner_token = warden.sign_in(owner)["token"]
    api = warden.with_token(owner_token)
    group = expect(api.post("/v2/organization/permission_groups",
                            {"name": "Support", "permissions": ["users:read"]}), 201)["data"]

    members = []
    for _ in range(3):
        email = f"sdk-sub-{uuid.uuid4().hex[:10]}@example.com"
        expect(api.post("/v2/organization/invitations",
                        {"email": email, "permission_group_ids": [group["id"]]}), 201)
        token = sink.last_to(email)["code"]
        joined = expect(warden.post("/v2/invitations/actions/accept", {
            "token": token, "password": SUB_PASSWORD, "first_name": "Grace", "last_name": "Hopper",
        }), 201)["data"]
        members.append((joined["id"], email))

    client = sdk(warden, owner_token)

    # List: every member, the owner first; Telnyx's fields and record types.
    listed = client.organizations.users.list()
    users = list(listed)
    assert len(users) == 4
    assert users[0].record_type == "organization_owner"
    assert users[0].email == owner.email
    assert {u.record_type for u in users[1:]} == {"organization_sub_user"}
    assert all(u.user_status == "enabled" for u in users)
    assert all(u.groups is None for u in users)

    # Paging and filters.
    page = client.organizations.users.list(page_number=2, page_size=3)
    assert [u.id for u in page.data] == [users[3].id]
    sub_id, sub_email = members[1]
    found = client.organizations.users.list(filter_email=sub_email.upper()[:16], include_groups=True)
    assert [u.id for u in found.data] == [sub_id]
    assert found.data[0].groups[0].name == "Support"
    assert found.data[0].groups[0].id == group["id"]

    # Get one, with and without groups.
    one = client.organizations.users.retrieve(sub_id, include_groups=True)
    assert one.data.id == sub_id
    assert one.data.email == sub_email
    assert one.data.groups[0].name == "Support"
    assert one.data.last_sign_in_at is not None

    # Remove: the SDK's action; the member is gone and their session is dead.
    sub_session = warden.sign_in(type("A", (), {"email": sub_email, "password": SUB_PASSWORD})())
    removed = client.organizations.users.actions.remove(sub_id)
    assert removed.data.id == sub_id
    assert len(list(client.organizations.users.list())) == 3
    with pytest.raises(telnyx.NotFoundError):
        client.organizations.users.retrieve(sub_id)
    expect(warden.get("/v2/users/me", token=sub_session["token"]), 401)

    # Another organization's owner cannot see or remove these members.
    stranger = warden.sign_up()
    other = sdk(warden, warden.sign_in(stranger)["token"])
    with pytest.raises(telnyx.NotFoundError):
        other.organizations.users.retrieve(members[0][0])
    with pytest.raises(telnyx.NotFoundError):
        other.organizations.users.actions.remove(members[0][0])
    assert [u.email for u in other.organizations.users.list()] == [stranger.email]

    # An API key works as the SDK's key, like a session token.
    key = expect(api.post("/v2/api_keys", {"name": "sdk"}), 201)["data"]["secret"]
    assert len(list(sdk(warden, key).organizations.users.list())) == 3
