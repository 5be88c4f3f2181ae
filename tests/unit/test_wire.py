"""The wire contract both sides share: request ids kept end to end, and OpenAI's id prefixes."""

import pytest

from deployments import openai_api as api
from loadgen import wire


def test_response_ids_carry_the_request_id_with_openais_prefix() -> None:
    assert wire.response_id("completion", "run7-s0-0000012") == "cmpl-run7-s0-0000012"
    assert wire.response_id("chat", "abc") == "chatcmpl-abc"
    job = wire.Job("abc", "chat", "tp8", "hi", 4, 0, 0.0, True, "chat", False, 0.0)
    assert job.response_id == "chatcmpl-abc"


@pytest.mark.parametrize(("value", "ok"), [
    ("s0-c-0000001", True), ("0f9e1b2c-uuid-like", True), ("a" * wire.MAX_REQUEST_ID, True),
    ("a" * (wire.MAX_REQUEST_ID + 1), False), ("", False), ("has space", False), ("tab\there", False),
    ("new\nline", False), ("é", False),
])
def test_request_ids_safe_to_keep(value: str, ok: bool) -> None:
    assert wire.valid_request_id(value) == ok


def test_the_servers_usage_extras_are_what_the_client_reads() -> None:
    use = api.usage(3, 2, 50.0, ttft_s=0.012, tpot_s=0.008)
    assert use[wire.SERVER_TTFT_MS] == 12.0 and use[wire.SERVER_TPOT_MS] == 8.0
    assert use[wire.STREAM_INTERVAL_MS] == 50.0
