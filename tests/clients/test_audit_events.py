"""The audit log through the official `telnyx` Python SDK: with only `base_url` changed,
`client.audit_events.list` reads Warden's `/v2/audit_events` with Telnyx's created_at
filters, sort and paging, and each entry parses as the SDK's `AuditEventListResponse`
(who changed what, from what, to what; secrets redacted).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import telnyx

from warden_harness import WardenClient, expect


def sdk(warden: WardenClient, token: str) -> telnyx.Telnyx:
    return telnyx.Telnyx(api_key=token, base_url=warden.base_url + "/v2", max_retries=0)


def test_the_telnyx_sdk_lists_audit_events_with_filters_sort_and_paging(warden):
    owner = warden.sign_up()
    token = warden.sign_in(owner)["token"]
    api = warden.with_token(token)
    me = expect(api.get("/v2/users/me"), 200)["data"]
    org = expect(api.get("/v2/organization"), 200)["data"]

    time.sleep(0.01)
    before_renames = datetime.now(timezone.utc)
    time.sleep(0.01)
    for name in ("Engines Ltd", "Difference Engines plc"):
        expect(api.patch("/v2/organization", {"company_name": name}), 200)
    group = expect(api.post("/v2/organization/permission_groups",
                            {"name": "Auditors", "permissions": ["audit:read"]}), 201)["data"]
    expect(api.patch(f"/v2/organization/permission_groups/{group['id']}",
                     {"permissions": ["audit:read", "users:read"]}), 200)

    client = sdk(warden, token)

    # Everything, oldest first, two per page: the SDK follows the pages itself.
    page = client.audit_events.list(sort="asc", page_size=2)
    assert len(page.data) == 2
    entries = list(page)
    assert len(entries) >= 6
    assert [e.created_at for e in entries] == sorted(e.created_at for e in entries)
    assert len({e.id for e in entries}) == len(entries)
    assert entries[0].change_type == "user.registered" or entries[0].change_type == "organization.created"
    for e in entries:
        assert e.record_type == "audit_event"
        assert e.organization_id == org["id"]
        assert isinstance(e.created_at, datetime)

    registered = next(e for e in entries if e.change_type == "user.registered")
    email = next(c for c in registered.changes if c.field == "email")
    assert email.to == "[REDACTED]"
    assert owner.email not in str(registered.model_dump())

    # Newest first, only what happened after the first rename started.
    recent = list(client.audit_events.list(
        filter={"created_after": before_renames}, sort="desc", page_size=250))
    types = [e.change_type for e in recent]
    assert types == ["organization.permission_group_updated",
                     "organization.permission_group_created",
                     "organization.updated", "organization.updated"], types
    latest_rename = recent[2]
    rename = next(c for c in latest_rename.changes if c.field == "company_name")
    assert (rename.from_, rename.to) == ("Engines Ltd", "Difference Engines plc")
    assert latest_rename.user_id == me["id"]
    assert latest_rename.change_made_by == "account_owner"
    assert latest_rename.resource_id == org["id"]
    permissions = next(c for c in recent[0].changes if c.field == "permissions")
    assert permissions.from_ == ["audit:read"]
    assert sorted(permissions.to) == ["audit:read", "users:read"]
    assert recent[0].resource_id == group["id"]

    # And before: nothing of that.
    older = list(client.audit_events.list(
        filter={"created_before": before_renames}, page_size=250))
    assert older and all(e.created_at < before_renames for e in older)
    assert not any(e.change_type == "organization.updated" for e in older)
    none = list(client.audit_events.list(
        filter={"created_after": datetime.now(timezone.utc) + timedelta(days=1)}))
    assert none == []
