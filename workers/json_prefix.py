"""Whether a text can still become one JSON object, and the shortest text that closes it.

``response_format: {"type": "json_object"}`` holds a reply to JSON while it is generated: before a
token is taken, the text it would add is fed to the reply's ``JsonPrefix`` state, and a token that
makes the text no longer the beginning of a JSON object is never chosen. ``json_closing`` says what
the reply still needs to be whole, so generation can close the object before ``max_tokens``.

The grammar is RFC 8259's (what ``json.loads`` reads, without NaN and Infinity), with one object
at the top and nothing before or after it. States are immutable tuples ``(stack, mode, detail)``:
``stack`` the open containers (``o`` object, ``a`` array), ``mode`` what may come next.
"""

WHITESPACE = frozenset(" \t\n\r")
DIGITS = frozenset("0123456789")
HEX = frozenset("0123456789abcdefABCDEF")
ESCAPES = frozenset('"\\/bfnrt')
LITERALS = {"t": "rue", "f": "alse", "n": "ull"}
# Number states that are a whole number as they stand (the others need another digit first).
NUMBER_ENDS = frozenset({"zero", "int", "frac", "exp"})

State = tuple[str, str, object]
JSON_START: State = ("", "start", None)


def json_feed(state: State | None, text: str) -> State | None:
    """The state after ``text``, or None when the text so far can no longer begin a JSON object."""
    for char in text:
        if state is None:
            return None
        state = _step(state, char)
    return state


def json_done(state: State | None) -> bool:
    """Whether the text is a whole JSON object (nothing may follow it)."""
    return state is not None and state[1] == "done"


def json_closing(state: State) -> str:
    """The shortest text that makes the text so far a whole JSON object: what an open string,
    number, literal, key or value needs, then the closing brackets."""
    stack, mode, detail = state
    if mode == "start":
        return "{}"
    if mode == "done":
        return ""
    head = ""
    if mode == "value":
        head = "null"
    elif mode in ("key_or_end", "value_or_end"):
        head, stack = ("}" if mode == "key_or_end" else "]"), stack[:-1]
    elif mode == "key":
        head = '"":null'
    elif mode == "colon":
        head = ":null"
    elif mode == "string":
        is_key, escape = detail
        head = ("n" if escape == 1 else "0" * (escape - 1) if escape else "") + '"' + (":null" if is_key else "")
    elif mode == "number":
        head = "" if detail in NUMBER_ENDS else "0"
    elif mode == "literal":
        head = detail
    return head + "".join("}" if kind == "o" else "]" for kind in reversed(stack))


def _step(state: State, char: str) -> State | None:
    stack, mode, detail = state
    if mode == "string":
        return _string(state, char)
    if mode == "number":
        return _number(state, char)
    if mode == "literal":
        if char != detail[0]:
            return None
        return (stack, "literal", detail[1:]) if len(detail) > 1 else (stack, "after", None)
    if mode == "start":
        return ("o", "key_or_end", None) if char == "{" else None  # an object, from the first character
    if mode == "done":
        return None
    if char in WHITESPACE:
        return state
    if mode == "value":
        return _value(stack, char)
    if mode == "value_or_end":
        return _close(stack) if char == "]" else _value(stack, char)
    if mode in ("key_or_end", "key"):
        if char == '"':
            return (stack, "string", (True, 0))
        return _close(stack) if char == "}" and mode == "key_or_end" else None
    if mode == "colon":
        return (stack, "value", None) if char == ":" else None
    if mode == "after":
        top = stack[-1]
        if char == ",":
            return (stack, "key" if top == "o" else "value", None)
        if char == ("}" if top == "o" else "]"):
            return _close(stack)
    return None


def _value(stack: str, char: str) -> State | None:
    """The state after the first character of a value."""
    if char == "{":
        return (stack + "o", "key_or_end", None)
    if char == "[":
        return (stack + "a", "value_or_end", None)
    if char == '"':
        return (stack, "string", (False, 0))
    if char == "-":
        return (stack, "number", "minus")
    if char == "0":
        return (stack, "number", "zero")
    if char in DIGITS:
        return (stack, "number", "int")
    if char in LITERALS:
        return (stack, "literal", LITERALS[char])
    return None


def _close(stack: str) -> State:
    stack = stack[:-1]
    return (stack, "after", None) if stack else ("", "done", None)


def _string(state: State, char: str) -> State | None:
    """In a string; ``escape`` is 0 (plain), 1 (after a backslash) or 1 + the hex digits a \\u still needs."""
    stack, _mode, (is_key, escape) = state
    if escape == 1:
        if char in ESCAPES:
            return (stack, "string", (is_key, 0))
        return (stack, "string", (is_key, 5)) if char == "u" else None
    if escape:
        return (stack, "string", (is_key, escape - 1 if escape > 2 else 0)) if char in HEX else None
    if char == '"':
        return (stack, "colon" if is_key else "after", None)
    if char == "\\":
        return (stack, "string", (is_key, 1))
    return None if ord(char) < 0x20 else state  # control characters must be escaped


def _number(state: State, char: str) -> State | None:
    stack, _mode, part = state
    following = None
    if char in DIGITS:
        following = {"minus": "zero" if char == "0" else "int", "int": "int", "dot": "frac", "frac": "frac",
                     "e": "exp", "esign": "exp", "exp": "exp"}.get(part)  # no digit after a leading zero
    elif char == "." and part in ("zero", "int"):
        following = "dot"
    elif char in "eE" and part in ("zero", "int", "frac"):
        following = "e"
    elif char in "+-" and part == "e":
        following = "esign"
    if following is not None:
        return (stack, "number", following)
    if part not in NUMBER_ENDS:
        return None
    return _step((stack, "after", None), char)  # the number ended; the character is what follows it
