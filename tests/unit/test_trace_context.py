from __future__ import annotations

import pytest

from callback_relay.trace_context import (
    PRODUCER_TRACE_KEY,
    SAMPLED_KEY,
    SPAN_KEY,
    TRACE_KEY,
    TraceContext,
)

REQUEST = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PRODUCER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def test_the_request_traceparent_header_is_the_line_trace() -> None:
    fields = TraceContext(traceparent=REQUEST).fields("proj")
    assert fields == {
        TRACE_KEY: "projects/proj/traces/4bf92f3577b34da6a3ce929d0e0e4736",
        SPAN_KEY: "00f067aa0ba902b7",
        SAMPLED_KEY: True,
    }


def test_x_cloud_trace_context_when_there_is_no_traceparent() -> None:
    trace = TraceContext(cloud_trace_context="4BF92F3577B34DA6A3CE929D0E0E4736/255;o=1")
    assert trace.fields("proj") == {
        TRACE_KEY: "projects/proj/traces/4bf92f3577b34da6a3ce929d0e0e4736",
        SPAN_KEY: "00000000000000ff",
        SAMPLED_KEY: True,
    }
    bare = TraceContext(cloud_trace_context="4bf92f3577b34da6a3ce929d0e0e4736")
    assert bare.fields("p") == {TRACE_KEY: "projects/p/traces/4bf92f3577b34da6a3ce929d0e0e4736"}


def test_the_event_traceparent_is_the_producer_trace() -> None:
    both = TraceContext(traceparent=REQUEST, event_traceparent=PRODUCER).fields("p")
    assert both[TRACE_KEY] == "projects/p/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    assert both[PRODUCER_TRACE_KEY] == "projects/p/traces/0af7651916cd43dd8448eb211c80319c"
    # Without a request header (a local run), the producer's trace is the line's.
    alone = TraceContext(event_traceparent=PRODUCER).fields("p")
    assert alone[TRACE_KEY] == "projects/p/traces/0af7651916cd43dd8448eb211c80319c"
    assert PRODUCER_TRACE_KEY not in alone


def test_headers_are_read_case_insensitively_from_a_mapping() -> None:
    trace = TraceContext.from_headers({"traceparent": REQUEST}, PRODUCER)
    assert trace == TraceContext(REQUEST, None, PRODUCER)


@pytest.mark.parametrize(
    ("trace", "project"),
    [
        (TraceContext(), "p"),
        (TraceContext(traceparent="garbage"), "p"),
        (TraceContext(traceparent="00-" + "0" * 32 + "-00f067aa0ba902b7-01"), "p"),
        (TraceContext(traceparent="ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "p"),
        (TraceContext(cloud_trace_context="not/a;trace"), "p"),
        (TraceContext(cloud_trace_context="x" * 100_000), "p"),
        (TraceContext(traceparent=REQUEST), None),
    ],
)
def test_no_trace_fields_without_a_valid_trace_and_a_project(
    trace: TraceContext, project: str | None
) -> None:
    assert trace.fields(project) == {}


# -- W3C trace-flags: only the least significant bit is "sampled" -------------------
# https://www.w3.org/TR/trace-context/#trace-flags; Level 2 adds "random" (0x02).


@pytest.mark.parametrize(
    ("flags", "sampled"),
    [("00", False), ("01", True), ("02", False), ("03", True), ("09", True), ("fe", False)],
)
def test_any_trace_flags_are_accepted_and_only_bit_0_is_sampled(flags: str, sampled: bool) -> None:
    header = f"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"
    fields = TraceContext(traceparent=header).fields("p")
    assert fields[TRACE_KEY] == "projects/p/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    assert fields[SAMPLED_KEY] is sampled


@pytest.mark.parametrize(
    ("header", "valid"),
    [
        (REQUEST, True),
        (f" {REQUEST}\t", True),  # optional whitespace around a header value
        (REQUEST + "-extra", False),  # version 00 ends at the flags
        (REQUEST + "x", False),
        ("01" + REQUEST[2:] + "-future-field", True),  # a later version may add fields
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),  # zero parent id
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),  # upper case
    ],
)
def test_traceparent_shapes(header: str, valid: bool) -> None:
    assert bool(TraceContext(traceparent=header).fields("p")) is valid
