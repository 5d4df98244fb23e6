from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import settings

from dcocpp.api.contract import TOKEN_ENV
from tests.file_server import Tls, make_tls
from tests.station_harness import BACKENDS, use_backend

# CI draws the same examples every run (no flake from a new one; the failing example is
# printed to reproduce it); a developer's run draws new ones, and keeps failures to replay.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# A hang fails the test with its logs instead of stalling the run. Under autojump_clock a
# deadlock jumps straight to the guard, so it can be generous in virtual time.
REAL_TIME_GUARD = 60.0
VIRTUAL_TIME_GUARD = 30 * 24 * 3600.0


def _hang_guard(test: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(test)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        clock = trio.lowlevel.current_clock()
        virtual = isinstance(clock, trio.testing.MockClock)
        with trio.fail_after(VIRTUAL_TIME_GUARD if virtual else REAL_TIME_GUARD):
            return await test(*args, **kwargs)

    return guarded


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """Every trio test runs under a `fail_after` hang guard."""
    for item in items:
        function = getattr(item, "obj", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.obj = _hang_guard(function)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Any:
    """Runs a scenario on each hardware backend (`charger_config` configures it); a test
    marked `simulated_only(reason)` is skipped on the PLC backend with that reason."""
    marker = request.node.get_closest_marker("simulated_only")
    if request.param != "simulated" and marker is not None:
        pytest.skip(marker.args[0])
    use_backend(request.param)
    yield request.param
    use_backend("simulated")


@pytest.fixture(autouse=True, scope="session")
def _no_api_token_from_the_environment() -> Iterator[None]:
    """An operator's DCOCPP_API_TOKEN would make every charger the tests start (child
    processes inherit it) require a token the tests do not send."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        yield


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """The TLS material of the file transfer tests' servers (tests/file_server.py)."""
    return make_tls(tmp_path_factory.mktemp("tls"))
