"""Fixtures for the independent-client checks: the real `warden` binary on a free port.

- `warden`: a server shared by the whole session (embedded SQLite, in-process bus), as a
  `WardenClient` without a token. Checks that share it must use their own accounts.
- `start_warden`: a factory for servers with extra environment or arguments, e.g.
  `start_warden(WARDEN_SENDER="http", WARDEN_SENDER_URL=url)` or
  `start_warden(DATABASE_URL=..., NATS_URL=...)`; each is stopped after the test.

When a test fails, the tail of each server's output written during that test is attached
to the report.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from warden_harness import WardenClient, WardenServer, tail

# Every server started in this session, with the log offset at the start of the current test.
_servers: list[WardenServer] = []
_offsets: dict[int, int] = {}


def _launch(tmp_path_factory: pytest.TempPathFactory, name: str,
            extra_env: dict[str, str], args: tuple[str, ...]) -> WardenServer:
    server = WardenServer(tmp_path_factory.mktemp(name), extra_env=extra_env, name=name,
                          args=args)
    _servers.append(server)
    return server.start()


@pytest.fixture(scope="session")
def warden_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WardenServer]:
    server = _launch(tmp_path_factory, "warden", {}, ())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def warden(warden_server: WardenServer) -> WardenClient:
    """A client (no token) for the session's shared server."""
    return warden_server.client()


@pytest.fixture
def start_warden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., WardenClient]]:
    """`start_warden(*args, **env)` starts another server and returns a client for it."""
    started: list[WardenServer] = []

    def start(*args: str, **env: str) -> WardenClient:
        server = _launch(tmp_path_factory, f"warden{len(_servers)}", env, args)
        started.append(server)
        return server.client()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _offsets.clear()
    for server in _servers:
        _offsets[id(server)] = server.log_size()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for server in _servers:
        start = _offsets.get(id(server), 0)
        if server.log_size() <= start:
            continue  # nothing written during this test
        report.sections.append((
            f"{server.name} output during this test ({server.log_path}, last lines)",
            tail(server.log_path, 60, start),
        ))
