"""Token counts from an answer's ``usage``, without parsing the whole answer."""

from __future__ import annotations

import json

import pytest

from controller.router.proxy import usage_tokens


def test_a_whole_answer() -> None:
    answer = {"id": "cmpl-1", "choices": [{"text": "hi"}], "usage": {"prompt_tokens": 7, "completion_tokens": 3,
                                                                     "total_tokens": 10}, "prompt_logprobs": None}
    assert usage_tokens(json.dumps(answer).encode()) == (7, 3)


def test_a_streams_tail_takes_the_last_usage() -> None:
    tail = (b'data: {"choices":[{"text":" a"}],"usage":null}\n\n'
            b'data: {"choices":[],"usage": {"prompt_tokens":5,"completion_tokens":2}}\n\ndata: [DONE]\n\n')
    assert usage_tokens(tail) == (5, 2)


@pytest.mark.parametrize("payload", [
    b'{"choices": []}',
    b'data: {"choices":[],"usage":null}\n\ndata: [DONE]\n\n',
    b'{"usage": {"prompt_tokens": 5, "completion_tok',  # cut short
    b'{"usage": {"prompt_tokens": -1, "completion_tokens": 2}}',
    b'{"usage": {"prompt_tokens": "5", "completion_tokens": 2}}',
    b'{"usage": [5, 2]}',
    b'{"usage": {"prompt_tokens": 5, "completion_tokens": 2, "x": "\xff"}}',
])
def test_no_usage_or_not_one_to_trust(payload: bytes) -> None:
    assert usage_tokens(payload) is None


def test_a_usage_inside_a_string_is_text_not_a_key() -> None:
    answer = {"choices": [{"text": 'he wrote "usage": {"prompt_tokens": 99, "completion_tokens": 99}'}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    assert usage_tokens(json.dumps(answer).encode()) == (1, 2)
    only_text = {"choices": [{"text": 'he wrote "usage": {"prompt_tokens": 99, "completion_tokens": 99}'}]}
    assert usage_tokens(json.dumps(only_text).encode()) is None
