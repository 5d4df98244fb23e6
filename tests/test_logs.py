"""The operator's console: one record, one line, whatever text a peer slips into it."""

from __future__ import annotations

import logging
import sys

from dcocpp.cli.logs import _FORMAT, MAX_LINE_CHARS, LoggingSetup, OperatorFormatter


def formatted(message: str, *args: object) -> str:
    record = logging.LogRecord("dcocpp.session", logging.WARNING, __file__, 1, message, args, None)
    return OperatorFormatter(_FORMAT).format(record)


def test_a_peers_newline_cannot_forge_a_line_of_its_own() -> None:
    """A CALLERROR description (or an idTag) with a newline and a fake log line in it stays in
    the one line of the record that quotes it, escaped."""
    forged = "refused\r\n2026-12-06 10:00:00,000 ERROR   dcocpp: the station is on fire\x1b[2J"
    line = formatted("StatusNotification failed: %s", forged)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.endswith(
        "StatusNotification failed: refused\\r\\n2026-12-06 10:00:00,000 ERROR   dcocpp: the"
        " station is on fire\\x1b[2J"
    )


def test_a_long_message_is_cut_and_says_how_much() -> None:
    line = formatted("CALLERROR: %s", "x" * 10_000)
    message = line.split("dcocpp.session: ", 1)[1]
    assert message == "CALLERROR: " + "x" * (MAX_LINE_CHARS - 11) + "... (9011 more characters)"


def test_a_traceback_still_follows_on_lines_of_its_own() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "dcocpp",
            logging.ERROR,
            __file__,
            1,
            "failed",
            (),
            exc_info=sys.exc_info(),
        )
    text = OperatorFormatter(_FORMAT).format(record)
    assert text.splitlines()[0].endswith("dcocpp: failed")
    assert "Traceback (most recent call last):" in text.splitlines()[1]


def test_the_http_clients_request_lines_stay_off_the_console_even_at_info() -> None:
    # httpx2 logs each request's URL at INFO: a presigned URL's signature would show there.
    root_level = logging.getLogger().level
    setup = LoggingSetup()
    setup.start("INFO", None, console=False)
    try:
        assert not logging.getLogger("httpx2").isEnabledFor(logging.INFO)
        assert logging.getLogger("httpx2").isEnabledFor(logging.WARNING)
        assert logging.getLogger("dcocpp.ocpp.transfer").isEnabledFor(logging.INFO)
    finally:
        setup.stop()
        logging.getLogger().setLevel(root_level)
