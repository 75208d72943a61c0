"""Runs the real `warden` binary for the independent-client checks and talks to it over HTTP.

`WardenServer` starts `warden serve` on a free port with a fresh data directory (embedded
SQLite, in-process bus unless the caller's extra environment says otherwise), waits for
`/readyz`, and stops it with SIGTERM. `WardenClient` is a thin `requests` wrapper whose
`expect` helper fails with the full request and response.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]

# Variables the server must not inherit from the caller's shell: they would point it at a
# shared database, a real NATS or a production configuration. Checks that want any of them
# pass them explicitly as extra environment.
_STRIPPED_ENV_PREFIXES = ("WARDEN_",)
_STRIPPED_ENV = ("DATABASE_URL", "NATS_URL")

READY_TIMEOUT_SECS = float(os.environ.get("WARDEN_CLIENT_CHECKS_READY_TIMEOUT", "60"))
STOP_TIMEOUT_SECS = 15.0
HTTP_TIMEOUT_SECS = 15.0


def warden_binary() -> Path:
    """The binary under test: $WARDEN_BIN (set by scripts/client-checks.sh) or target/debug."""
    explicit = os.environ.get("WARDEN_BIN")
    path = Path(explicit) if explicit else REPO_ROOT / "target" / "debug" / "warden"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RuntimeError(
            f"warden binary not found at {path}; run `bash scripts/client-checks.sh` "
            "(or `cargo build --bin warden` first)"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def tail(path: Path, lines: int = 60, start: int = 0) -> str:
    """The last `lines` lines of `path` from byte offset `start` on, without colours."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError as e:
        return f"(cannot read {path}: {e})"
    text = _ANSI.sub("", data.decode("utf-8", errors="replace")).rstrip("\n")
    if not text:
        return "(empty)"
    kept = text.split("\n")[-lines:]
    return "\n".join(kept)


class ServerError(RuntimeError):
    pass


class WardenServer:
    """One `warden serve` process. Use `start()`/`stop()`, or the pytest fixtures."""

    def __init__(self, workdir: Path, extra_env: Mapping[str, str] | None = None,
                 name: str = "warden", args: tuple[str, ...] = ()):
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "server.log"
        self.extra_env = dict(extra_env or {})
        self.extra_args = tuple(args)
        self.name = name
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.exit_code: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {"NO_COLOR": "1"}
        env.update(
            (k, v)
            for k, v in os.environ.items()
            if k not in _STRIPPED_ENV and not k.startswith(_STRIPPED_ENV_PREFIXES)
        )
        env.update(self.extra_env)
        return env

    def start(self) -> "WardenServer":
        binary = warden_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        last_error: Exception | None = None
        # A free port can be taken between probing and binding; retry with another one.
        for _ in range(3):
            self.port = free_port()
            cmd = [str(binary), "serve", "--listen", f"127.0.0.1:{self.port}",
                   "--data-dir", str(self.data_dir), *self.extra_args]
            with open(self.log_path, "ab") as log:
                log.write(f"$ {' '.join(cmd)}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    cmd, cwd=self.workdir, env=self.env(), stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT,
                )
            try:
                self._wait_ready()
                return self
            except ServerError as e:
                last_error = e
                self.stop()
                if "address" not in tail(self.log_path, 20).lower():
                    break  # not a port clash: retrying will not help
        raise last_error  # type: ignore[misc]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECS
        last = "no response"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise ServerError(
                    f"{self.name} exited with status {code} before /readyz answered 200; "
                    f"its output ({self.log_path}):\n{tail(self.log_path)}"
                )
            try:
                r = requests.get(f"{self.base_url}/readyz", timeout=2)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:300]}"
            except requests.RequestException as e:
                last = type(e).__name__
            time.sleep(0.1)
        raise ServerError(
            f"{self.name} not ready after {READY_TIMEOUT_SECS:.0f}s (last /readyz: {last}); "
            f"its output ({self.log_path}):\n{tail(self.log_path)}"
        )

    def stop(self) -> int | None:
        """SIGTERM, wait; SIGKILL if it does not exit. Returns the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return self.exit_code
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_SECS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                with open(self.log_path, "ab") as log:
                    log.write(b"(harness: no exit within %ds of SIGTERM; killed)\n"
                              % STOP_TIMEOUT_SECS)
        self.exit_code = proc.returncode
        return self.exit_code

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def client(self, token: str | None = None) -> "WardenClient":
        return WardenClient(self.base_url, token=token, server=self)


class WardenClient:
    """HTTP helpers against one server; `token` is sent as `Authorization: Bearer`."""

    def __init__(self, base_url: str, token: str | None = None,
                 server: WardenServer | None = None):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.server = server
        self.http = requests.Session()

    def with_token(self, token: str | None) -> "WardenClient":
        return WardenClient(self.base_url, token=token, server=self.server)

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, path: str, json_body: Any = None, *,
                token: str | None = None, headers: Mapping[str, str] | None = None,
                **kwargs: Any) -> requests.Response:
        h = {"Accept": "application/json"}
        bearer = token if token is not None else self.token
        if bearer:
            h["Authorization"] = f"Bearer {bearer}"
        h.update(headers or {})
        kwargs.setdefault("timeout", HTTP_TIMEOUT_SECS)
        if json_body is not None:
            kwargs["json"] = json_body
        return self.http.request(method, self.url(path), headers=h, **kwargs)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.request("POST", path, body if body is not None else {}, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, body if body is not None else {}, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    # --- accounts and sessions -------------------------------------------------------

    def sign_up(self, email: str | None = None, password: str | None = None) -> "Account":
        account = Account(
            email=email or f"client-check-{uuid.uuid4().hex[:12]}@example.com",
            password=password or f"violet-lantern-{uuid.uuid4().hex[:16]}",
        )
        expect(self.post("/v2/accounts", {
            "email": account.email, "password": account.password,
            "first_name": "Client", "last_name": "Check", "billing_currency": "USD",
        }), 201)
        return account

    def sign_in(self, account: "Account") -> dict:
        """POST /v2/sessions; returns `data` (a session or a two_factor_challenge)."""
        return expect(self.post("/v2/sessions", {
            "email": account.email, "password": account.password,
        }, token=""), 201)["data"]


class Account:
    def __init__(self, email: str, password: str):
        self.email = email
        self.password = password

    def __repr__(self) -> str:
        return f"Account({self.email!r})"


def describe(r: requests.Response) -> str:
    """The request and the response, for an assertion message."""
    req = r.request
    body = req.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    auth = " (bearer token)" if req.headers.get("Authorization") else ""
    try:
        shown = json.dumps(r.json(), indent=2)
    except ValueError:
        shown = r.text
    return (f"request:  {req.method} {req.url}{auth}\n"
            f"          {body or '(no body)'}\n"
            f"response: {r.status_code} {r.reason}\n{shown}")


def expect(r: requests.Response, status: int, code: str | None = None) -> Any:
    """Asserts the status (and, for errors, `errors[0].code`); returns the JSON body."""
    body: Any = None
    if r.content:
        try:
            body = r.json()
        except ValueError:
            body = None
    ok = r.status_code == status
    if ok and code is not None:
        ok = isinstance(body, dict) and bool(body.get("errors")) and \
            body["errors"][0].get("code") == code
    if not ok:
        wanted = f"{status}" + (f" {code}" if code else "")
        raise AssertionError(f"expected {wanted}\n{describe(r)}")
    return body
