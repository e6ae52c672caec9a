"""The JSON-prefix checker behind response_format json_object."""

import json
import random

import pytest

from workers.json_prefix import JSON_START, json_closing, json_done, json_feed


def _random_value(rng: random.Random, depth: int = 0):
    kinds = [lambda: rng.choice([True, False, None]), lambda: rng.choice([0, -1, 12, 3.5, -0.25e-3, 1e10]),
             lambda: "".join(rng.choice('ab"\\\n\u00e9\u2603 /\t') for _ in range(rng.randrange(5)))]
    if depth < 3:
        kinds += [lambda: {_random_key(rng): _random_value(rng, depth + 1) for _ in range(rng.randrange(3))},
                  lambda: [_random_value(rng, depth + 1) for _ in range(rng.randrange(3))]]
    return rng.choice(kinds)()


def _random_key(rng: random.Random) -> str:
    return "".join(rng.choice('k"\\\u00e9') for _ in range(rng.randrange(3)))


def test_every_prefix_of_a_json_object_is_accepted_and_closes_into_one():
    rng = random.Random(0)
    for _ in range(300):
        document = {_random_key(rng): _random_value(rng) for _ in range(rng.randrange(4))}
        text = json.dumps(document, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
        state = JSON_START
        for end, char in enumerate(text, 1):
            state = json_feed(state, char)
            assert state is not None, text[:end]
            assert isinstance(json.loads(text[:end] + json_closing(state)), dict), text[:end]
        assert json_done(state) and json_closing(state) == ""


def test_whatever_random_characters_it_accepts_close_into_a_json_object():
    rng = random.Random(1)
    alphabet = '{}[]":,0123456789-+.eEtrufalsn \\u"abAF\n\x01'
    for _ in range(3000):
        state, text = JSON_START, ""
        while len(text) < 40 and not json_done(state):
            char = rng.choice(alphabet)
            if (following := json_feed(state, char)) is not None:
                state, text = following, text + char
                assert isinstance(json.loads(text + json_closing(state)), dict), text


@pytest.mark.parametrize("text", ["[", " {", "{,", '{"a"}', '{"a":}', '{"a":01', '{"a":1.}', '{"a":-}',
                                  '{"a":tru }', "{}x", '{"\x01', '{"a":"\\x"}', '{"a":1,}', '{"a":[1,]}', '{"a":NaN'])
def test_text_that_cannot_begin_a_json_object_is_refused(text):
    assert json_feed(JSON_START, text) is None
