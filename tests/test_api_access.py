"""Who may use the local API: open on loopback, a bearer token required off loopback (and
whenever one is configured); `dcocpp run` refuses an exposed API without one, `dcocpp status`
and `dcocpp sim` send it."""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from dcocpp.api.contract import NEEDS_TOKEN, TOKEN_ENV, TOKEN_MIN_LENGTH, is_loopback, token_problem
from dcocpp.api.server import ApiError, serve_api
from dcocpp.cli import commands as cli
from dcocpp.cli import demo
from dcocpp.cli import sim as simcli
from tests.processes import ManagedProcess, api_port
from tests.test_api import FakeView

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "charger.json")
TOKEN = "k3Y-for-the-tests-0123456789abcdef"
PROCESS_TIMEOUT = 20.0


# --- the decision ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped loopback
        ("localhost", True),
        ("LocalHost", True),
        ("localhost.", True),
        ("0.0.0.0", False),  # every interface
        ("::", False),  # every interface
        ("::ffff:0.0.0.0", False),
        ("192.168.1.20", False),
        ("10.0.0.1", False),
        ("169.254.10.1", False),
        ("128.0.0.1", False),
        ("fe80::1", False),
        ("2001:db8::1", False),
        ("::2", False),
        ("charger.local", False),  # a host name may resolve to any interface
        ("localhost.example.com", False),
        ("127.0.0.1.nip.io", False),
    ],
)
def test_which_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_token_problems_never_quote_the_token() -> None:
    assert token_problem(TOKEN) is None
    short = "x" * (TOKEN_MIN_LENGTH - 1)
    assert token_problem("x" * TOKEN_MIN_LENGTH) is None
    spaced = "spaces are not allowed here"
    for bad in (
        short,
        spaced,
        "tab\tinside-the-token-xx",
        "ünïcödé-tökén-xxxx",
    ):
        problem = token_problem(bad)
        assert problem is not None
        assert bad not in problem
    assert f"at least {TOKEN_MIN_LENGTH} characters" in (token_problem(short) or "")
    assert "printable ASCII" in (token_problem(spaced) or "")


# --- serving ---------------------------------------------------------------------------------


async def test_loopback_without_a_token_stays_open() -> None:
    view = FakeView()
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_api, view, "127.0.0.1", 0)
        async with _client(port) as client:
            assert (await client.get("/api/status")).status_code == 200
            assert (await client.post("/api/connectors/1/plug", json={})).status_code == 200
        assert await _cli("status", "--api", f"127.0.0.1:{port}") == 0
        nursery.cancel_scope.cancel()
    assert view.calls == [("plug", 1)]


async def test_on_loopback_another_sites_page_cannot_drive_the_charger() -> None:
    """Without a token, what a page elsewhere can make the operator's browser send (a simple
    POST: form data, plain text, no body) is refused 415; the preflight a JSON POST needs is
    not granted; `dcocpp sim` (JSON) still drives the charger."""
    view = FakeView()
    page = {"Origin": "http://attacker.example", "Referer": "http://attacker.example/"}
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_api, view, "127.0.0.1", 0)
        async with _client(port) as client:
            for headers, content in (
                ({}, b""),
                ({"Content-Type": "text/plain"}, b'{"active": true}'),
                ({"Content-Type": "application/x-www-form-urlencoded"}, b"active=true"),
            ):
                for path in ("/api/connectors/1/plug", "/api/connectors/1/faults/estop"):
                    response = await client.post(path, headers=page | headers, content=content)
                    assert response.status_code == 415, (path, headers)
            preflight = await client.options(
                "/api/connectors/1/plug",
                headers=page
                | {
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type",
                },
            )
            assert preflight.status_code == 405
            assert not any(name.startswith("access-control-") for name in preflight.headers)
        assert view.calls == []
        assert await _cli("sim", "plug", "1", "--api", f"127.0.0.1:{port}") == 0
        assert await _cli("sim", "fault", "1", "estop", "on", "--api", f"127.0.0.1:{port}") == 0
        nursery.cancel_scope.cancel()
    assert view.calls == [("plug", 1), ("set_fault", 1, "estop", True)]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "charger.local"])
async def test_off_loopback_without_a_token_refuses_to_start(host: str) -> None:
    with pytest.raises(ApiError) as refused:
        await serve_api(FakeView(), host, 0)
    assert str(refused.value).endswith(NEEDS_TOKEN)
    assert "cannot serve the API on" in str(refused.value)


async def test_a_weak_token_refuses_to_start() -> None:
    with pytest.raises(ApiError, match=f"at least {TOKEN_MIN_LENGTH} characters"):
        await serve_api(FakeView(), "127.0.0.1", 0, token="secret")


async def test_with_a_token_every_request_needs_it() -> None:
    view = FakeView()
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(partial(serve_api, token=TOKEN), view, "127.0.0.1", 0)
        async with _client(port) as client:
            for headers, reason in (
                ({}, "missing API token: send Authorization: Bearer <token>"),
                ({"Authorization": f"Basic {TOKEN}"}, "missing API token"),
                ({"Authorization": "Bearer"}, "missing API token"),
                ({"Authorization": "Bearer wrong-token-0123456789"}, "wrong API token"),
                ({"Authorization": f"Bearer {TOKEN}x"}, "wrong API token"),
                ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "wrong API token"),
            ):
                for method, path in (
                    ("GET", "/api/status"),
                    ("POST", "/api/connectors/1/plug"),
                    ("POST", "/api/connectors/2/faults/estop"),
                    ("GET", "/no/such/route"),  # 401, not 404: nothing to learn without it
                ):
                    response = await client.request(method, path, headers=headers)
                    assert response.status_code == 401, (method, path, headers)
                    assert response.json()["error"].startswith(reason)
                    assert response.headers["www-authenticate"].startswith("Bearer")
            assert view.calls == []  # nothing reached the charger

            good = {"Authorization": f"Bearer {TOKEN}"}
            assert (await client.get("/api/status", headers=good)).status_code == 200
            plugged = await client.post("/api/connectors/1/plug", headers=good, json={})
            assert plugged.status_code == 200
            assert plugged.json()["connector"]["plugged"] is True
            # The scheme is case-insensitive (RFC 7235).
            lower = {"Authorization": f"bearer {TOKEN}"}
            assert (await client.get("/api/status", headers=lower)).status_code == 200
            assert (await client.get("/no/such/route", headers=good)).status_code == 404
        nursery.cancel_scope.cancel()
    assert view.calls == [("plug", 1)]


async def test_status_and_sim_send_the_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    view = FakeView()
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(partial(serve_api, token=TOKEN), view, "127.0.0.1", 0)
        api = f"127.0.0.1:{port}"

        assert await _cli("status", "--api", api) == simcli.EXIT_REFUSED
        _, err = capsys.readouterr()
        assert err.startswith("error: missing API token")
        assert TOKEN_ENV in err and "--api-token" in err

        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        assert await _cli("status", "--api", api) == 0
        assert capsys.readouterr().out.startswith("charge point CP-TEST: connected")
        assert await _cli("sim", "plug", "1", "--api", api) == 0
        assert capsys.readouterr().out.startswith("connector 1: Preparing, plugged")

        # --api-token wins over the environment.
        wrong = "another-token-0123456789"
        assert await _cli("status", "--api", api, "--api-token", wrong) == simcli.EXIT_REFUSED
        assert capsys.readouterr().err.startswith("error: wrong API token")
        # Every sim action sends it.
        for action in (
            ["authorize", "1", "TAG-1"],
            ["ev", "1", "suspend"],
            ["fault", "1", "estop", "on"],
        ):
            assert await _cli("sim", *action, "--api", api) == 0, capsys.readouterr().err
        capsys.readouterr()
        monkeypatch.delenv(TOKEN_ENV)
        assert await _cli("sim", "unplug", "1", "--api", api, "--api-token", TOKEN) == 0
        # A token no charger accepts is refused before anything is sent.
        assert await _cli("status", "--api", api, "--api-token", "a token with spaces in it") == 2
        assert capsys.readouterr().err.endswith(
            "must be printable ASCII without spaces (it travels in an HTTP header)\n"
        )
        nursery.cancel_scope.cancel()
    assert view.calls == [
        ("plug", 1),
        ("present_id", 1, "TAG-1"),
        ("set_ev_suspended", 1, True),
        ("set_fault", 1, "estop", True),
        ("unplug", 1),
    ]


# --- dcocpp run ------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["0.0.0.0:8765", "[::]:8765", "192.168.1.20:8765"])
def test_run_refuses_an_api_off_loopback_without_a_token(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", "--config", CONFIG, "--api", address]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"dcocpp run: --api {address}: {NEEDS_TOKEN}\n"


def test_run_refuses_a_weak_token_without_repeating_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--config", CONFIG, "--api", "0.0.0.0:8765"]
    assert cli.main([*argv, "--api-token", "hunter2"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(
        f"dcocpp run: --api-token: the API token must be at least {TOKEN_MIN_LENGTH}"
    )
    assert "hunter2" not in err and err.count("\n") == 1
    monkeypatch.setenv(TOKEN_ENV, "has a space in it, 32 characters")
    assert cli.main(argv) == cli.EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"dcocpp run: {TOKEN_ENV}: the API token must be")


@pytest.mark.process
def test_run_requires_the_token_from_the_environment_and_status_sends_it(tmp_path: Path) -> None:
    """The operator's whole path: DCOCPP_API_TOKEN set for `run` (on loopback here: a test
    cannot bind a real interface) and for `dcocpp status`."""
    env = {**os.environ, TOKEN_ENV: TOKEN}
    with socket.socket() as probe:  # no central system: the API answers all the same
        probe.bind(("127.0.0.1", 0))
        csms_port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "dcocpp", "run", "--config", CONFIG]
    argv += ["--csms", f"ws://127.0.0.1:{csms_port}/ocpp", "--api", "127.0.0.1:0"]
    argv += ["--data-dir", str(tmp_path / "data"), "--log-dir", str(tmp_path / "logs")]
    with ManagedProcess(argv, name="charger", env=env) as charger:
        port = api_port(charger, PROCESS_TIMEOUT)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(f"http://127.0.0.1:{port}/api/status", timeout=5)
        with refused.value as error:
            assert error.code == 401

        status = [sys.executable, "-m", "dcocpp", "status", "--api", f"127.0.0.1:{port}"]
        with ManagedProcess(status, name="status", env=env) as client:
            assert client.wait(PROCESS_TIMEOUT) == 0, client.describe()
            client.stdout.wait_for_line(lambda line: "charge point DCOCPP-001" in line, 5)
        without = {k: v for k, v in env.items() if k != TOKEN_ENV}
        with ManagedProcess(status, name="status", env=without) as client:
            assert client.wait(PROCESS_TIMEOUT) == simcli.EXIT_REFUSED, client.describe()
        charger.send_signal()
        assert charger.wait(PROCESS_TIMEOUT) == cli.EXIT_OK, charger.describe()


def test_the_demo_serves_its_api_on_loopback_only(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo takes no token, so it does not offer an address that would need one."""
    with pytest.raises(SystemExit) as refused:
        demo.main(["demo", "--api", "0.0.0.0:8765"])
    assert refused.value.code == 2
    assert "the demo serves its API on loopback only" in capsys.readouterr().err


# --- helpers ---------------------------------------------------------------------------------


async def _cli(*argv: str) -> int:
    return await trio.to_thread.run_sync(simcli.main, list(argv))


def _client(port: int) -> httpx.AsyncClient:
    # trust_env=False: never through a proxy from the environment.
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False)
