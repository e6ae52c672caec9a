"""The row formats we train on: detect one, check a row against it, and normalise it.

chat: ``{"messages": [{"role", "content"}, ...]}`` (roles system/user/assistant/tool; an
assistant turn may carry ``tool_calls``). alpaca: ``{"instruction", "input"?, "output"}``.
prompt_completion: ``{"prompt", "completion"}``. text: ``{"text"}`` (continued pre-training).
preference: ``{"prompt"?, "chosen", "rejected"}`` or OpenAI's DPO rows
``{"input": {"messages"}, "preferred_output": [...], "non_preferred_output": [...]}``.
unpaired_preference: ``{"prompt", "completion", "label": true|false}`` (one answer marked good or bad, for
KTO). prompt_only: ``{"messages": [...]}`` with no assistant turn, plus any fields a grader reads
(reinforcement: the model writes the answer). In a chat file, such a row is a chat row missing its answer.

Checks return ``Problem`` tuples without a location; the caller adds line and row. They are on
the hot path of a multi-GB validation, so they are plain loops over plain values.

``jsonl_rows`` reads back the JSONL the trainer reads (written by ``workers.validate`` or
``workers.prepare``): every engine step that reads training rows reads them through it.
"""

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from workers.report import ERROR, WARNING

CHAT = "chat"
ALPACA = "alpaca"
PROMPT_COMPLETION = "prompt_completion"
TEXT = "text"
PREFERENCE = "preference"
UNPAIRED = "unpaired_preference"
PROMPT_ONLY = "prompt_only"
FORMATS = (CHAT, ALPACA, PROMPT_COMPLETION, TEXT, PREFERENCE, UNPAIRED, PROMPT_ONLY)
# What the trainer reads once a format is normalised; preference pairs, marked answers and prompts
# need an objective of their own (dpo/orpo/kto, kto, reinforcement).
TRAINING_FORMAT = {CHAT: CHAT, ALPACA: CHAT, PROMPT_COMPLETION: PROMPT_COMPLETION, TEXT: TEXT}
# The formats each objective other than supervised trains on (supervised: those of TRAINING_FORMAT).
OBJECTIVE_FORMATS = {"dpo": (PREFERENCE,), "orpo": (PREFERENCE,), "kto": (UNPAIRED, PREFERENCE),
                     "reinforcement": (PROMPT_ONLY,), "rlaif": (PROMPT_ONLY,)}
ROLES = frozenset({"system", "user", "assistant", "tool"})
EXAMPLE_ROW = {
    CHAT: '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}',
    ALPACA: '{"instruction": "...", "input": "...", "output": "..."}',
    PROMPT_COMPLETION: '{"prompt": "...", "completion": "..."}',
    TEXT: '{"text": "..."}',
    PREFERENCE: '{"prompt": "...", "chosen": "...", "rejected": "..."}',
    UNPAIRED: '{"prompt": "...", "completion": "...", "label": true}',
    PROMPT_ONLY: '{"messages": [{"role": "user", "content": "..."}], "answer": "..."}',
}

# (kind, field, message, fix, severity)
Problem = tuple[str, str, str, str, str]
OK: tuple = ()


def format_detect(row: dict) -> str:
    """Which format a row is written in ("" when none is recognised)."""
    if ("chosen" in row and "rejected" in row) or ("preferred_output" in row and "non_preferred_output" in row):
        return PREFERENCE
    if "label" in row and "completion" in row:
        return UNPAIRED
    if "messages" in row:
        messages = json_cell(row["messages"])
        if type(messages) is list and messages and not any(
                type(m) is dict and m.get("role") == "assistant" for m in messages):
            return PROMPT_ONLY
        return CHAT
    if "instruction" in row and "output" in row:
        return ALPACA
    if "prompt" in row and "completion" in row:
        return PROMPT_COMPLETION
    if "text" in row:
        return TEXT
    return ""


def jsonl_rows(path: Path | str, *, every: int = 1) -> Iterator[dict]:
    """The rows of a JSONL file of normalised rows, in order; blank lines are skipped.

    every: yield only the 1st, (every + 1)-th, ... row; the others are not parsed (an even sample
        of a large file); default 1, every row.
    A line that is not a JSON object raises ``ValueError`` naming the file and the line.
    """
    with open(path, "rb") as handle:
        count = 0
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            count += 1
            if (count - 1) % every:
                continue
            yield _row_parse(raw, path, number)


def _row_parse(raw: bytes, path: Path | str, number: int) -> dict:
    try:
        row = json.loads(raw)
    except UnicodeDecodeError as exc:
        problem = f"not valid UTF-8 (byte {exc.start}); save the file as UTF-8"
    except json.JSONDecodeError as exc:
        problem = f"invalid JSON ({exc.msg} at column {exc.colno}); write one JSON object per line"
    else:
        if type(row) is dict:
            return row
        problem = "each line must be a JSON object, not a list or value"
    raise ValueError(f"{path}, line {number}: {problem}")


def unrecognised(row: dict, fmt: str) -> Problem:
    keys = ", ".join(list(row)[:8]) or "none"
    if fmt:
        return ("wrong_format", "", f"not a {fmt} row (its keys: {keys})",
                f"every row must look like {EXAMPLE_ROW[fmt]}; one file holds one format", ERROR)
    return ("unrecognised_row", "", f"unrecognised row (its keys: {keys})",
            "write chat, alpaca, prompt/completion, text, preference or prompt-only rows, or map your columns "
            "(column_map, e.g. question→prompt)", ERROR)


def row_check(row: dict, fmt: str, max_field: int) -> list[Problem] | tuple:
    """Problems of one row of format ``fmt`` (``OK`` when none); fields over ``max_field`` chars too."""
    return _CHECKS[fmt](row, max_field)


def _string(value, field: str, max_field: int, *, required: bool = True,
            kind_empty: str = "empty_field", severity_empty: str = ERROR) -> list[Problem]:
    if not isinstance(value, str):
        if value is None:
            return [] if not required else [("missing_field", field, "is missing",
                                             "add it, or map a column to it with column_map", ERROR)]
        return [("not_a_string", field, "must be a string", "write the text as a JSON string", ERROR)]
    if len(value) > max_field:
        return [("field_too_large", field, f"is {len(value)} characters long, over the {max_field} limit",
                 "shorten or split it; the limit is DATASET_MAX_FIELD_BYTES", ERROR)]
    if required and not value.strip():
        return [(kind_empty, field, "is empty", "give it the text to learn", severity_empty)]
    return []


def json_cell(value):
    """A list as given (chat turns, tools); a JSON string of one (from a CSV cell or a Parquet column)
    is parsed."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _chat_check(row: dict, max_field: int) -> list[Problem] | tuple:
    messages = json_cell(row.get("messages"))
    if type(messages) is not list or not messages:
        return [("bad_messages", "messages", "must be a non-empty list of {role, content}",
                 "write the conversation as a list of turns", ERROR)]
    problems = _turns_check(messages, "messages", max_field, need_assistant=True)
    if row.get("tools") is not None:
        bad = tools_check(row["tools"])
        if bad:
            return [*bad, *problems]
    return problems


def _turns_check(messages: list, where: str, max_field: int, *, need_assistant: bool) -> list[Problem] | tuple:
    problems = None
    assistant_text = has_assistant = started = False
    previous = None
    for index, message in enumerate(messages):
        if type(message) is not dict:
            return [("bad_message", f"{where}[{index}]", "must be an object with role and content",
                     'write {"role": "user", "content": "..."}', ERROR)]
        role = message.get("role")
        content = message.get("content")
        if role not in ROLES:
            return [("bad_role", f"{where}[{index}].role", f"must be one of {sorted(ROLES)}",
                     "use the roles system, user, assistant and tool", ERROR)]
        if type(content) is not str:
            if not (role == "assistant" and content is None and message.get("tool_calls")):
                return [("not_a_string", f"{where}[{index}].content", "must be a string",
                         "write the turn's text as a JSON string", ERROR)]
            content = ""
        elif len(content) > max_field:
            return [("field_too_large", f"{where}[{index}].content", f"is {len(content)} characters long, over "
                     f"the {max_field} limit", "shorten or split it; the limit is DATASET_MAX_FIELD_BYTES", ERROR)]
        if role == "system":
            if started:
                return [("wrong_role_order", f"{where}[{index}].role", "a system turn after the conversation started",
                         "put system turns first", ERROR)]
        elif not started:
            started = True
            if role != "user" and need_assistant:
                return [("wrong_role_order", where, "the first non-system turn must be the user's",
                         "start the conversation with a user turn", ERROR)]
        if role == "tool" and previous not in ("tool", "tool_calls"):
            return [("wrong_role_order", f"{where}[{index}].role", "a tool turn must follow an assistant turn "
                     "with tool_calls", "add the assistant's tool_calls before the tool's answer", ERROR)]
        if role == "assistant":
            has_assistant = True
            calls = message.get("tool_calls")
            if calls is not None:
                bad = tool_calls_check(calls, f"{where}[{index}].tool_calls")
                if bad:
                    return bad
            if content.strip():
                assistant_text = True
            elif not calls:
                problems = problems or []
                problems.append(("empty_turn", f"{where}[{index}].content", "is empty",
                                 "give the turn content or remove it", WARNING))
            previous = "tool_calls" if calls else "assistant"
        else:
            if role in ("user", "tool") and not content.strip():
                problems = problems or []
                problems.append(("empty_turn", f"{where}[{index}].content", "is empty or whitespace only",
                                 "give the turn content or remove it", WARNING))
            if role == "user" and previous == "user":
                problems = problems or []
                problems.append(("consecutive_turns", f"{where}[{index}].role", "two user turns in a row",
                                 "merge them, or add the assistant's answer between them", WARNING))
            previous = role
    if need_assistant:
        if not has_assistant:
            return [("no_assistant_turn", where, "has no assistant turn", "add the answer to learn", ERROR)]
        if not assistant_text:
            return [("empty_assistant", where, "every assistant turn is empty", "give it content", ERROR)]
        if messages[-1].get("role") != "assistant":
            problems = problems or []
            problems.append(("trailing_turn", where, "the last turn is not the assistant's, so nothing after "
                             "the last answer is learned", "end the conversation with an assistant turn", WARNING))
    return problems or OK


def tool_calls_check(calls, where: str) -> list[Problem]:
    """OpenAI's shape: a list of ``{"id", "type": "function", "function": {"name", "arguments"}}``, the
    arguments a JSON object (as a JSON string, or the object itself)."""
    fix = 'write each call as OpenAI does: {"id": "1", "type": "function", "function": {"name": "...", ' \
          '"arguments": "{\\"city\\": \\"Paris\\"}"}}'
    if type(calls) is not list:
        return [("bad_tool_calls", where, "must be a list", fix, ERROR)]
    for number, call in enumerate(calls):
        function = call.get("function") if type(call) is dict else None
        if type(function) is not dict:
            return [("bad_tool_calls", f"{where}[{number}].function", "is missing or not an object", fix, ERROR)]
        name = function.get("name")
        if type(name) is not str or not name.strip():
            return [("bad_tool_calls", f"{where}[{number}].function.name", "is missing or empty",
                     "give the name of the function the assistant calls", ERROR)]
        if tool_arguments(function.get("arguments")) is None:
            return [("bad_tool_arguments", f"{where}[{number}].function.arguments",
                     "must be a JSON object (or a string holding one)",
                     'write the arguments as JSON, e.g. "{\\"city\\": \\"Paris\\"}"', ERROR)]
    return []


def tool_arguments(value) -> dict | None:
    """A tool call's arguments as an object: OpenAI sends a JSON string, chat templates read an object;
    None when they are neither (missing arguments are an empty object)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if type(value) is dict else None


def tools_check(tools) -> list[Problem]:
    """The functions a row offers the model (OpenAI's ``tools``): a list of ``{"type": "function",
    "function": {"name", ...}}``."""
    tools = json_cell(tools)
    if type(tools) is not list:
        return [("bad_tools", "tools", "must be a list of tools",
                 'write tools as OpenAI does: [{"type": "function", "function": {"name": "...", "parameters": {...}}}]',
                 ERROR)]
    for number, tool in enumerate(tools):
        function = tool.get("function") if type(tool) is dict else None
        if type(function) is not dict or type(function.get("name")) is not str or not function["name"].strip():
            return [("bad_tools", f"tools[{number}].function.name", "is missing or empty",
                     "give each tool a function with a name (and its parameters)", ERROR)]
    return []


def _alpaca_check(row: dict, max_field: int) -> list[Problem] | tuple:
    problems = _string(row.get("instruction"), "instruction", max_field)
    problems += _string(row.get("input"), "input", max_field, required=False)
    problems += _string(row.get("output"), "output", max_field, kind_empty="empty_completion")
    return problems or OK


def _completion_check(row: dict, max_field: int) -> list[Problem] | tuple:
    prompt, completion = row.get("prompt"), row.get("completion")
    if type(prompt) is str and type(completion) is str and completion.strip() and \
            len(prompt) <= max_field and len(completion) <= max_field:
        if not prompt.strip():
            return [("empty_prompt", "prompt", "is empty", "give the model a prompt to answer", WARNING)]
        return OK
    problems = _string(prompt, "prompt", max_field, kind_empty="empty_prompt", severity_empty=WARNING)
    problems += _string(completion, "completion", max_field, kind_empty="empty_completion")
    return problems or OK


def _text_check(row: dict, max_field: int) -> list[Problem] | tuple:
    return _string(row.get("text"), "text", max_field, kind_empty="empty_text") or OK


def _side(value, field: str, max_field: int) -> list[Problem]:
    if isinstance(value, list):
        return list(_turns_check(value, field, max_field, need_assistant=False))
    return _string(value, field, max_field, kind_empty="empty_completion")


def _preference_check(row: dict, max_field: int) -> list[Problem] | tuple:
    if "preferred_output" in row:
        source = row.get("input")
        if not isinstance(source, dict) or type(source.get("messages")) is not list or not source["messages"]:
            return [("bad_messages", "input.messages", "must be a non-empty list of turns",
                     'write "input": {"messages": [...]} as OpenAI\'s DPO format does', ERROR)]
        problems = list(_turns_check(source["messages"], "input.messages", max_field, need_assistant=False))
        chosen, rejected = row.get("preferred_output"), row.get("non_preferred_output")
        names = ("preferred_output", "non_preferred_output")
    else:
        problems = []
        if "prompt" in row:
            problems += _side(json_cell(row["prompt"]), "prompt", max_field)
        chosen, rejected = json_cell(row.get("chosen")), json_cell(row.get("rejected"))
        names = ("chosen", "rejected")
    problems += _side(chosen, names[0], max_field)
    problems += _side(rejected, names[1], max_field)
    if not problems and chosen == rejected:
        problems.append(("identical_pair", names[0], f"{names[0]} and {names[1]} are the same",
                         "a pair teaches nothing unless the answers differ", WARNING))
    return problems or OK


def _unpaired_check(row: dict, max_field: int) -> list[Problem] | tuple:
    problems = []
    if "prompt" in row:
        problems += _side(json_cell(row["prompt"]), "prompt", max_field)
    problems += _side(json_cell(row.get("completion")), "completion", max_field)
    if type(row.get("label")) is not bool:
        problems.append(("bad_label", "label", "must be true (a good answer) or false (a bad one)",
                         'write "label": true or "label": false, without quotes', ERROR))
    return problems or OK


def _prompt_only_check(row: dict, max_field: int) -> list[Problem] | tuple:
    messages = json_cell(row.get("messages"))
    if type(messages) is not list or not messages:
        return [("bad_messages", "messages", "must be a non-empty list of {role, content}",
                 "write the conversation so far as a list of turns", ERROR)]
    if any(type(m) is dict and m.get("role") == "assistant" for m in messages):
        return [("has_answer", "messages", "has an assistant turn, but the file's first row has none, so the "
                 "file holds prompts the model answers itself (reinforcement)", "leave the answer out; or, for a "
                 "chat file, give the first row its answer", ERROR)]
    return _turns_check(messages, "messages", max_field, need_assistant=False)


_CHECKS: dict[str, Callable] = {
    CHAT: _chat_check, ALPACA: _alpaca_check, PROMPT_COMPLETION: _completion_check, TEXT: _text_check,
    PREFERENCE: _preference_check, UNPAIRED: _unpaired_check, PROMPT_ONLY: _prompt_only_check,
}
# Detected formats a file of another format checks as its own: a chat row without an answer is
# a chat row missing its answer (the chat check says so), not a change of format.
SAME_FILE = {(CHAT, PROMPT_ONLY), (PROMPT_ONLY, CHAT)}


def row_normalise(row: dict, fmt: str) -> dict:
    """The row in the trainer's shape (``TRAINING_FORMAT``); preference rows as prompt/chosen/rejected.

    A ``source`` key is kept (splits stratify by it); the trainer reads only its own columns.
    """
    normal = _normalise(row, fmt)
    if "source" in row and isinstance(row["source"], str | int):
        normal["source"] = row["source"]
    return normal


def _normalise(row: dict, fmt: str) -> dict:
    if fmt == CHAT:
        normal = {"messages": [_turn(m) for m in json_cell(row["messages"])]}
        if row.get("tools"):
            normal["tools"] = json_cell(row["tools"])
        return normal
    if fmt == ALPACA:
        user = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
        if row.get("system"):
            messages.insert(0, {"role": "system", "content": str(row["system"])})
        return {"messages": messages}
    if fmt == PROMPT_COMPLETION:
        return {"prompt": row["prompt"], "completion": row["completion"]}
    if fmt == TEXT:
        return {"text": row["text"]}
    if fmt == UNPAIRED:
        normal = {"completion": json_cell(row["completion"]), "label": row["label"]}
        return {"prompt": json_cell(row["prompt"]), **normal} if "prompt" in row else normal
    if fmt == PROMPT_ONLY:  # every field stays: graders read them as {{item.<field>}}
        return {**row, "messages": [_turn(m) for m in json_cell(row["messages"])]}
    if "preferred_output" in row:
        return {"prompt": row["input"]["messages"], "chosen": row["preferred_output"],
                "rejected": row["non_preferred_output"]}
    normal = {"chosen": json_cell(row["chosen"]), "rejected": json_cell(row["rejected"])}
    if "prompt" in row:
        normal = {"prompt": json_cell(row["prompt"]), **normal}
    return normal


def _turn(message: dict) -> dict:
    turn = {"role": message["role"], "content": message.get("content") or ""}
    for key in ("tool_calls", "tool_call_id", "name"):
        if message.get(key) is not None:
            turn[key] = message[key]
    return turn


def turn_text(message: dict) -> str:
    """A turn's words without a template: its content, then each tool call it makes as one JSON
    object ``{"name", "arguments"}`` a line (what the completion template trains, what quality reads)."""
    parts = [message.get("content") or ""] if message.get("content") else []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append(json.dumps({"name": function.get("name"), "arguments": tool_arguments(function.get("arguments"))},
                                ensure_ascii=False))
    return "\n".join(parts)


def row_texts(row: dict, fmt: str) -> tuple[str, str]:
    """(prompt side, target side) of a normalised row: what is read vs what is learned."""
    if fmt == CHAT:
        prompt = [m.get("content") or "" for m in row["messages"] if m["role"] != "assistant"]
        target = [turn_text(m) for m in row["messages"] if m["role"] == "assistant"]
        return "\n".join(prompt), "\n".join(target)
    if fmt == PROMPT_COMPLETION:
        return row["prompt"], row["completion"]
    if fmt == TEXT:
        return "", row["text"]
    if fmt in (PREFERENCE, UNPAIRED):
        return field_text(row.get("prompt", "")), field_text(row["chosen" if fmt == PREFERENCE else "completion"])
    if fmt == PROMPT_ONLY:
        return field_text(row["messages"]), ""
    return "", ""


def field_text(value) -> str:
    """A prompt or answer as text: a string, or the contents of a list of messages."""
    if isinstance(value, list):
        return "\n".join(m.get("content") or "" for m in value if isinstance(m, dict))
    return value or ""
