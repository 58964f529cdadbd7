"""A bridge client's seed contacts come from a msgpack answer its last hop wrote: any junk there
is refused by name (CONTACT_JUNK), never by a blanket `except Exception` that would also hide a bug."""

from __future__ import annotations

import umsgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.runtime.client.dht_over_circuits import parse_contacts

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_random_bytes_parse_or_are_refused(answer: bytes) -> None:
    result = parse_contacts(answer)  # raises nothing outside CONTACT_JUNK
    assert result is None or all(isinstance(h, str) and isinstance(p, int) for h, p in result)


@settings(max_examples=400)
@given(msgpack_values)
def test_any_msgpack_value_parses_or_is_refused(value: object) -> None:
    result = parse_contacts(umsgpack.packb(value))
    assert result is None or len(result) <= 16


def test_deep_nesting_and_good_answers() -> None:
    assert parse_contacts(b"\x91" * 100_000) is None  # RecursionError inside umsgpack
    assert parse_contacts(umsgpack.packb([["127.0.0.1", 7000]] * 20)) == [("127.0.0.1", 7000)] * 16
    assert parse_contacts(umsgpack.packb([["h", float("inf")]])) is None  # OverflowError
