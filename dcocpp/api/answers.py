"""The API's error answers: every error is `{"error": "<reason>"}` with its status code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class Reject(Exception):
    """An error answer: status code and the human readable reason."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


Endpoint = Callable[[Request], Awaitable[Response]]


def answering(endpoint: Endpoint) -> Endpoint:
    """Turn a `Reject` raised by the endpoint into its JSON error answer."""

    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Reject as reject:
            return error(reject.status_code, reject.reason)

    return answer


def error(status_code: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"error": reason}, status_code=status_code, headers=headers)
