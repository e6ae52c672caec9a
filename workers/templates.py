"""Render rows exactly as the trainer will see them: token ids and which tokens carry loss.

Templates: the model's own chat template (``""``), or a named one — ``chatml``, ``llama3``,
``mistral``, ``alpaca`` (each marks the assistant's turns with ``{% generation %}`` so only they
carry loss) and ``completion`` (no template: the turns joined by new lines, loss on the answers;
the trainer reads such chat rows as prompt/completion, see ``chat_as_completion``).
Prompt/completion rows are tokenized as TRL's SFTTrainer does (prompt, and prompt + completion +
EOS, each with the tokenizer's special tokens; loss from where the two diverge); text rows get EOS
and carry loss on every token.
"""

from dataclasses import dataclass

from workers.formats import json_cell, tool_arguments, turn_text

# How the named templates (and the tiny model's) write the assistant's tool calls: one JSON object
# ``{"name", "arguments"}`` per call, inside the assistant's generation block so the calls carry loss.
TOOL_CALLS = (
    "{% for call in message.tool_calls or [] %}{{ '<tool_call>' + ({'name': call.function.name, "
    "'arguments': call.function.arguments} | tojson) + '</tool_call>' }}{% endfor %}"
)


def tools_block(opening: str, closing: str) -> str:
    """Jinja that writes the tools a row offers (OpenAI's list, as JSON) between ``opening`` and ``closing``."""
    return "{% if tools %}{{ '" + opening + "' + (tools | tojson) + '" + closing + "' }}{% endif %}"


TEMPLATES = {
    "chatml": (
        tools_block("<|im_start|>system\n# Tools\n", "<|im_end|>\n")
        + "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}" + TOOL_CALLS
        + "{{ '<|im_end|>' }}{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
        "{{ '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ '<|begin_of_text|>' }}"
        + tools_block("<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>")
        + "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
        "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}" + TOOL_CALLS
        + "{{ '<|eot_id|>' }}{% endgeneration %}{% else %}{{ message['content'] + '<|eot_id|>' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "mistral": (
        "{{ '<s>' }}" + tools_block("[AVAILABLE_TOOLS] ", " [/AVAILABLE_TOOLS]")
        + "{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}" + TOOL_CALLS
        + "{{ '</s>' }}{% endgeneration %}"
        "{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
        "{% elif message['role'] == 'tool' %}{{ '[TOOL_RESULTS] ' + message['content'] + ' [/TOOL_RESULTS]' }}"
        "{% else %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}{% endfor %}"
    ),
    "alpaca": (
        tools_block("### Tools:\n", "\n\n")
        + "{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}{{ '### Response:\n' }}{% generation %}"
        "{{ message['content'] }}" + TOOL_CALLS + "{{ eos_token }}{% endgeneration %}{{ '\n\n' }}"
        "{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
        "{% elif message['role'] == 'tool' %}{{ '### Tool result:\n' + message['content'] + '\n\n' }}"
        "{% else %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}{% endif %}{% endfor %}"
    ),
}
# Not for training (the trainer reads such rows as prompt/completion): saved with a model trained on
# ``completion`` so inference builds the same prompt, the turns joined by new lines.
COMPLETION_CHAT_TEMPLATE = (
    "{% set ns = namespace(prompt=[], answer=[]) %}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% set ns.answer = ns.answer + [message['content']] %}"
    "{% else %}{% set ns.prompt = ns.prompt + [message['content']] %}{% endif %}{% endfor %}"
    "{{ ns.prompt | join('\n') + '\n' }}{% if ns.answer %}{% generation %}{{ ns.answer | join('\n') + eos_token }}"
    "{% endgeneration %}{% endif %}"
)
TEMPLATE_NAMES = ("", *TEMPLATES, "completion")


@dataclass(frozen=True)
class Rendered:
    """One row as the trainer sees it.

    ids: token ids after truncation to ``max_length``.
    loss_mask: 1 where a token carries loss, aligned with ``ids``.
    total_tokens / target_tokens: before truncation, all tokens / tokens carrying loss.
    """

    ids: list[int]
    loss_mask: list[int]
    total_tokens: int
    target_tokens: int

    @property
    def trainable(self) -> int:
        return sum(self.loss_mask)

    @property
    def truncated(self) -> bool:
        return self.total_tokens > len(self.ids)


class TemplateError(ValueError):
    """The template cannot be used for this row or model (no chat template, no loss marks)."""


def tokenizer_prepare(tokenizer, template: str):
    """Set ``template`` on ``tokenizer`` (``""`` keeps the model's own); return the tokenizer.

    ``completion`` sets a chat template that builds the same prompt (turns joined by new lines),
    so a tokenizer saved after training on it prompts the tuned model as it was trained.
    """
    if template not in TEMPLATE_NAMES:
        raise TemplateError(f"template must be one of {', '.join(repr(t) for t in TEMPLATE_NAMES)}")
    if template in TEMPLATES:
        tokenizer.chat_template = TEMPLATES[template]
    elif template == "completion":
        tokenizer.chat_template = COMPLETION_CHAT_TEMPLATE
    return tokenizer


def chat_as_completion(messages: list[dict]) -> dict:
    """A chat row as the ``completion`` template trains it: the other turns joined by new lines (and
    one after them) as the prompt, the assistant's turns (their tool calls as JSON) joined by new lines
    as the completion."""
    prompt = "\n".join(m.get("content") or "" for m in messages if m["role"] != "assistant")
    answer = "\n".join(turn_text(m) for m in messages if m["role"] == "assistant")
    return {"prompt": prompt + "\n", "completion": answer}


def render(tokenizer, row: dict, fmt: str, *, template: str, max_length: int) -> Rendered:
    """Tokens and loss mask of a normalised row of training format ``fmt``."""
    if fmt == "chat" and template != "completion":
        ids, mask = chat_tokens(tokenizer, row)
    elif fmt == "chat":
        pair = chat_as_completion(row["messages"])
        ids, mask = _pair(tokenizer, pair["prompt"], pair["completion"])
    elif fmt == "prompt_completion":
        ids, mask = _pair(tokenizer, row["prompt"], row["completion"])
    elif fmt == "text":
        ids = _encode(tokenizer, _with_eos(tokenizer, row["text"]))
        mask = [1] * len(ids)
    else:
        raise TemplateError(f"{fmt or 'this'} rows are not trained by supervised fine-tuning")
    return Rendered(ids=ids[:max_length], loss_mask=mask[:max_length], total_tokens=len(ids),
                    target_tokens=sum(mask))


def chat_inputs(row: dict) -> tuple[list[dict], list | None]:
    """A chat row as chat templates read it: (messages, tools). Every turn's content is a string; tool
    calls keep their id and function name, their arguments an object (OpenAI sends a JSON string,
    templates read an object); a tool turn keeps ``tool_call_id`` and ``name``."""
    messages = []
    for message in json_cell(row["messages"]):
        turn = {"role": message["role"], "content": message.get("content") or ""}
        if message.get("tool_calls"):
            turn["tool_calls"] = [_call(call) for call in message["tool_calls"]]
        for key in ("tool_call_id", "name"):
            if message.get(key) is not None:
                turn[key] = message[key]
        messages.append(turn)
    return messages, json_cell(row.get("tools")) or None


def _call(call: dict) -> dict:
    function = call["function"]
    out = {"type": "function", "function": {"name": function["name"],
                                            "arguments": tool_arguments(function.get("arguments")) or {}}}
    return {"id": call["id"], **out} if call.get("id") else out


def chat_tokens(tokenizer, row: dict) -> tuple[list[int], list[int]]:
    """Token ids and loss mask (1 on the assistant's turns, tool calls included) of a chat row through
    the tokenizer's chat template, untruncated: what the trainer trains and ``render`` shows."""
    messages, tools = chat_inputs(row)
    template = tokenizer.chat_template or ""
    if not template:
        raise TemplateError("the model has no chat template; choose one (chatml, llama3, mistral, alpaca, "
                            "completion)")
    if "generation" not in template:
        raise TemplateError("the chat template does not mark the assistant's turns with {% generation %}, so the "
                            "trainer cannot put loss on them only; choose a named template")
    # a template that ignores them would drop the calls (or the tools) silently and train empty turns
    if any("tool_calls" in m for m in messages) and "tool_calls" not in template:
        raise TemplateError("the chat template does not write tool calls, so the assistant's calls would be "
                            "dropped; choose a named template (chatml, llama3, mistral, alpaca)")
    if tools and "tools" not in template:
        raise TemplateError("the chat template does not write the tools a row offers; choose a named template "
                            "(chatml, llama3, mistral, alpaca)")
    out = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    return list(out["input_ids"]), list(out["assistant_masks"])


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])  # special tokens as the tokenizer adds them, as TRL calls it


def _with_eos(tokenizer, text: str) -> str:
    eos = tokenizer.eos_token
    return text + eos if eos and not text.endswith(eos) else text


def _pair(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """As TRL's SFTTrainer: the completion starts where the tokenized prompt and the tokenized
    prompt + completion diverge (tokens may merge across the boundary)."""
    head = _encode(tokenizer, prompt)
    ids = _encode(tokenizer, prompt + _with_eos(tokenizer, completion))
    start = 0
    while start < min(len(head), len(ids)) and head[start] == ids[start]:
        start += 1
    return ids, [0] * start + [1] * (len(ids) - start)


def tokens_show(tokenizer, rendered: Rendered) -> list[dict]:
    """Each token's text and whether it carries loss, for a dry run a person reads."""
    return [{"text": tokenizer.decode([token]), "loss": bool(flag)}
            for token, flag in zip(rendered.ids, rendered.loss_mask, strict=True)]
