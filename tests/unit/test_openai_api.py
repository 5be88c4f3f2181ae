import json

import pytest

from deployments import openai_api as api


def test_completion_defaults_and_extras() -> None:
    r = api.parse_request("completion", b'{"model": "tp8", "prompt": "a b c", "ignore_eos": false, "min_tokens": 3,'
                                        b' "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true}}')
    assert isinstance(r, api.CompletionRequest)
    got = (r.prompt_text(), r.output_limit, r.min_tokens, r.ignore_eos, r.include_usage)
    assert got == ("a b c", 5, 3, False, True)
    assert api.parse_request("completion", b'{"model": "x", "prompt": ["p"]}').output_limit == api.DEFAULT_MAX_TOKENS


@pytest.mark.parametrize(("raw", "param", "needle"), [
    (b"{not json", None, "not valid JSON"),
    (b"[1, 2]", None, "JSON object"),
    (b'{"prompt": "x"}', "model", "required"),
    (b'{"model": "m", "prompt": "x", "max_tokens": -1}', "max_tokens", "greater than or equal to 1"),
    (b'{"model": "m", "prompt": "x", "max_tokens": 2, "min_tokens": 3}', None, "min_tokens must be"),
    (b'{"model": "m", "prompt": ["a", "b"]}', None, "one prompt"),
    (b'{"model": "m", "prompt": "x", "n": 2}', "n", "less than or equal to 1"),
    (b"[" * 5000 + b"]" * 5000, None, "nests arrays or objects too deeply"),
    (b'{"model": "m", "prompt": "x", "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}", None, "too deeply"),
    (b'{"model": "m", "prompt": "x", "stop": [["a"]]}', "stop", "a list of at most 4 strings"),
    (b'{"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}', "stop", "at most 4"),
    (b'{"model": "m", "prompt": "x", "stop": 7}', "stop", "a string or a list"),
])
def test_bad_completion_requests_name_the_field(raw: bytes, param: str | None, needle: str) -> None:
    with pytest.raises(api.OpenAIError) as e:
        api.parse_request("completion", raw)
    assert e.value.status == 400
    assert e.value.param == param
    assert needle in e.value.message
    body = e.value.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("stop", [None, "\n", [], ["a", "b", "c", "d"]])
def test_stop_as_openai_takes_it(stop: object) -> None:
    body = json.dumps({"model": "m", "prompt": "x", "stop": stop}).encode()
    assert api.parse_request("completion", body).stop == stop


def test_chat_prompt_and_max_completion_tokens() -> None:
    r = api.parse_request("chat", json.dumps({
        "model": "auto", "max_tokens": 9, "max_completion_tokens": 4,
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "hi there"}]}]}).encode())
    assert r.output_limit == 4
    assert r.prompt_text() == "system: be brief\nuser: hi there\nassistant:"
    with pytest.raises(api.OpenAIError, match="messages"):
        api.parse_request("chat", b'{"model": "auto", "messages": []}')


def test_context_rule_follows_vllm() -> None:
    assert api.context_error(100, 28, 128) is None
    too_long = api.context_error(128, 1, 128)
    assert too_long is not None and too_long.param == "prompt" and too_long.code == "context_length_exceeded"
    over = api.context_error(100, 29, 128)
    assert over is not None and over.param == "max_tokens" and "at most 28" in over.message


def test_stream_events_are_openai_sse() -> None:
    first = api.stream_event("chat", "id1", "tp8", 7, "a b", None, first=True)
    assert first.startswith("data: ") and first.endswith("\n\n")
    chunk = json.loads(first[6:])
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"][0]["delta"] == {"role": "assistant", "content": "a b"}
    last = json.loads(api.stream_event("completion", "id1", "tp8", 7, "c", "length")[6:])
    assert last["choices"][0] == {"index": 0, "text": "c", "logprobs": None, "finish_reason": "length"}
    use = json.loads(api.usage_event("chat", "id1", "tp8", 7, api.usage(3, 2, 50.0))[6:])
    assert use["choices"] == [] and use["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                                                     "parallax_stream_interval_ms": 50.0}
    timed = api.usage(3, 2, 50.0, ttft_s=0.0123456, tpot_s=0.008)
    assert timed["parallax_server_ttft_ms"] == 12.346 and timed["parallax_server_tpot_ms"] == 8.0
