"""TOTP two-factor authentication, checked with independent clients: `pyotp` computes the
codes and parses the otpauth URI, `zxing-cpp` reads the QR code.

Warden accepts each TOTP time step once and allows one step of skew. The confirm step uses
the current step; later sign-ins use the next one (`at(now + 30)`), so nothing waits for the
clock.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass

import pyotp
import pytest
import zxingcpp
from PIL import Image

from warden_harness import Account, WardenClient, expect

ENROLL = "/v2/users/me/two_factor/enrollments"


@dataclass
class Enrollment:
    account: Account
    token: str
    data: dict


@dataclass
class Enabled:
    account: Account
    token: str
    secret: str
    backup_codes: list[str]


def signed_up_and_in(warden: WardenClient) -> tuple[Account, str]:
    account = warden.sign_up()
    session = warden.sign_in(account)
    assert session["record_type"] == "session", session
    assert session["token"], session
    return account, session["token"]


def enroll_totp(warden: WardenClient) -> Enrollment:
    account, token = signed_up_and_in(warden)
    data = expect(warden.post(ENROLL, {"method": "totp"}, token=token), 201)["data"]
    for field in ("enrollment_id", "secret", "otpauth_uri", "qr_code_png", "qr_code_svg"):
        assert data.get(field), f"enrollment has no {field}: {data}"
    return Enrollment(account, token, data)


def enable_totp(warden: WardenClient) -> Enabled:
    e = enroll_totp(warden)
    secret = e.data["secret"]
    body = expect(warden.post(
        f"{ENROLL}/{e.data['enrollment_id']}/actions/confirm",
        {"code": pyotp.TOTP(secret).now()}, token=e.token), 200)
    data = body["data"]
    assert data["enabled"] is True, data
    codes = data["backup_codes"]
    assert isinstance(codes, list) and len(codes) == 10, data
    assert len(set(codes)) == 10, f"backup codes repeat: {codes}"
    return Enabled(e.account, e.token, secret, codes)


def next_step_code(secret: str) -> str:
    """The code for the next 30-second step: Warden takes it (one step of skew), and it
    cannot be the step already spent on confirm."""
    return pyotp.TOTP(secret).at(time.time() + 30)


def challenge(warden: WardenClient, account: Account) -> str:
    data = warden.sign_in(account)
    assert data["record_type"] == "two_factor_challenge", data
    assert "token" not in data, f"a challenge must not carry a token: {data}"
    assert data["challenge_id"], data
    return data["challenge_id"]


def verify(warden: WardenClient, challenge_id: str, body: dict):
    return warden.post(f"/v2/two_factor_challenges/{challenge_id}/actions/verify", body,
                       token="")


def test_sign_up_then_sign_in_gives_a_working_session(warden: WardenClient):
    account, token = signed_up_and_in(warden)
    me = expect(warden.get("/v2/users/me", token=token), 200)["data"]
    assert me["email"] == account.email, me


def test_otpauth_uri_parses_with_pyotp(warden: WardenClient):
    e = enroll_totp(warden)
    totp = pyotp.parse_uri(e.data["otpauth_uri"])
    assert isinstance(totp, pyotp.TOTP), e.data["otpauth_uri"]
    assert totp.issuer == "Warden", e.data["otpauth_uri"]
    assert totp.name == e.account.email, e.data["otpauth_uri"]
    assert totp.digits == 6, e.data["otpauth_uri"]
    assert totp.interval == 30, e.data["otpauth_uri"]
    assert totp.secret == e.data["secret"], e.data["otpauth_uri"]
    # The manual key is valid base32 and yields the same codes as the URI.
    assert len(base64.b32decode(e.data["secret"] + "=" * (-len(e.data["secret"]) % 8))) >= 16
    assert totp.at(1_700_000_000) == pyotp.TOTP(e.data["secret"]).at(1_700_000_000)


def test_qr_code_png_decodes_to_the_otpauth_uri(warden: WardenClient):
    e = enroll_totp(warden)
    png = base64.b64decode(e.data["qr_code_png"], validate=True)
    assert png.startswith(b"\x89PNG\r\n\x1a\n"), png[:16]
    image = Image.open(io.BytesIO(png))
    results = zxingcpp.read_barcodes(image)
    assert len(results) == 1, f"expected one barcode, zxing-cpp found {len(results)}"
    assert results[0].format == zxingcpp.BarcodeFormat.QRCode, results[0].format
    assert results[0].text == e.data["otpauth_uri"]
    assert "<svg" in e.data["qr_code_svg"], e.data["qr_code_svg"][:200]


def test_confirm_with_a_pyotp_code_enables_totp(warden: WardenClient):
    enabled = enable_totp(warden)
    me = expect(warden.get("/v2/users/me", token=enabled.token), 200)["data"]
    assert me["two_factor"]["enabled"] is True, me
    assert me["two_factor"]["method"] == "totp", me


def test_after_sign_out_a_pyotp_code_passes_the_challenge_once(warden: WardenClient):
    enabled = enable_totp(warden)

    expect(warden.delete("/v2/sessions/current", token=enabled.token), 204)
    expect(warden.get("/v2/users/me", token=enabled.token), 401)

    challenge_id = challenge(warden, enabled.account)
    code = next_step_code(enabled.secret)
    session = expect(verify(warden, challenge_id, {"code": code}), 201)["data"]
    assert session["record_type"] == "session", session
    assert session["token"], session
    me = expect(warden.get("/v2/users/me", token=session["token"]), 200)["data"]
    assert me["email"] == enabled.account.email, me
    assert me["two_factor"]["enabled"] is True, me

    # The same code (the same time step) on a fresh challenge is refused.
    again = challenge(warden, enabled.account)
    expect(verify(warden, again, {"code": code}), 422, "invalid_code")


def test_a_backup_code_works_once(warden: WardenClient):
    enabled = enable_totp(warden)
    backup = enabled.backup_codes[0]

    session = expect(verify(warden, challenge(warden, enabled.account),
                            {"backup_code": backup}), 201)["data"]
    assert session["record_type"] == "session", session
    expect(warden.get("/v2/users/me", token=session["token"]), 200)

    expect(verify(warden, challenge(warden, enabled.account), {"backup_code": backup}), 422)


def test_a_wrong_code_is_refused(warden: WardenClient):
    enabled = enable_totp(warden)
    wrong = "000000"
    if wrong in {pyotp.TOTP(enabled.secret).at(time.time() + d) for d in (-30, 0, 30)}:
        pytest.skip("000000 happens to be a valid code right now")
    expect(verify(warden, challenge(warden, enabled.account), {"code": wrong}), 422,
           "invalid_code")
