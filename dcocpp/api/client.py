"""A client of the local API, for `dcocpp status` and `dcocpp sim`: plain standard-library HTTP
(urllib, JSON), so that it runs anywhere the charger does and loads nothing of the server."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from dcocpp.api.contract import TOKEN_ENV, format_address

# Above the charger's own wait for an authorization's decision (station.AUTHORIZATION_WAIT).
TIMEOUT_SECONDS = 10.0


class ApiClientError(Exception):
    """A request that did not succeed, in words for the user. `refused`: the API answered and
    refused it (HTTP 4xx: unknown connector, an action that does not fit the gun's state, a
    wrong token); otherwise it could not be reached or failed."""

    def __init__(self, message: str, *, refused: bool) -> None:
        super().__init__(message)
        self.message = message
        self.refused = refused


# The API is local: never send it through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request(
    api: tuple[str, int],
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """One JSON request to the API at `api` (with `token` as a bearer token): its JSON answer,
    or `ApiClientError` with what to tell the user."""
    where = format_address(*api)
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    outgoing = urllib.request.Request(
        f"http://{where}{path}", data=data, method=method, headers=headers
    )
    try:
        with _opener.open(outgoing, timeout=TIMEOUT_SECONDS) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        with error:
            reason = _error_reason(error.read()) or f"HTTP {error.code} {error.reason}"
        if error.code == 401:
            reason += f" (the API at {where} requires its token: set {TOKEN_ENV} or --api-token)"
        raise ApiClientError(f"error: {reason}", refused=400 <= error.code < 500) from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            raise ApiClientError(
                f"no dcocpp API at {where} (start it with `dcocpp run --api {where}` "
                "or `dcocpp demo`)",
                refused=False,
            ) from None
        raise ApiClientError(
            f"cannot reach the dcocpp API at {where}: {error.reason}", refused=False
        ) from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
        raise ApiClientError(
            f"dcocpp API at {where} did not answer properly: {error!r}", refused=False
        ) from None
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ApiClientError(f"unexpected answer from {where}: not a JSON object", refused=False)
    return answer


def _error_reason(raw: bytes) -> str | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    reason = body.get("error") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) else None
