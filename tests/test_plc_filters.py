"""The driver's acceptance filters: exactly the configured plcIds, in few filters."""

from __future__ import annotations

import hypothesis
from hypothesis import strategies as st

from dcocpp.hardware.plc.busprotocol import plc_id_blocks


@hypothesis.given(st.sets(st.integers(0, 15)))
def test_plc_id_blocks_accept_exactly_the_configured_plc_ids(plc_ids: set[int]) -> None:
    blocks = plc_id_blocks(plc_ids)
    accepted = {i for i in range(16) if any(i & mask == value for value, mask in blocks)}
    assert accepted == plc_ids
    assert len(blocks) <= len(plc_ids)


def test_a_full_bus_needs_one_filter_per_message() -> None:
    assert plc_id_blocks(range(16)) == [(0, 0)]
    assert plc_id_blocks([0, 1, 2, 3, 5]) == [(0, 0b1100), (5, 0b1111)]
