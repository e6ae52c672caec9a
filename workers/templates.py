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

TEMPLATES = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
        "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ '<|begin_of_text|>' }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
        "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|eot_id|>' }}"
        "{% endgeneration %}{% else %}{{ message['content'] + '<|eot_id|>' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "mistral": (
        "{{ '<s>' }}{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '</s>' }}{% endgeneration %}"
        "{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
        "{% else %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}{% endfor %}"
    ),
    "alpaca": (
        "{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}{{ '### Response:\n' }}{% generation %}"
        "{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n\n' }}"
        "{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
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
    one after them) as the prompt, the assistant's turns joined by new lines as the completion."""
    prompt = "\n".join(m.get("content") or "" for m in messages if m["role"] != "assistant")
    answer = "\n".join(m.get("content") or "" for m in messages if m["role"] == "assistant")
    return {"prompt": prompt + "\n", "completion": answer}


def render(tokenizer, row: dict, fmt: str, *, template: str, max_length: int) -> Rendered:
    """Tokens and loss mask of a normalised row of training format ``fmt``."""
    if fmt == "chat" and template != "completion":
        ids, mask = _chat(tokenizer, row["messages"])
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


def _chat(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    if not tokenizer.chat_template:
        raise TemplateError("the model has no chat template; choose one (chatml, llama3, mistral, alpaca, "
                            "completion)")
    if "generation" not in tokenizer.chat_template:
        raise TemplateError("the chat template does not mark the assistant's turns with {% generation %}, so the "
                            "trainer cannot put loss on them only; choose a named template")
    clean = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
    out = tokenizer.apply_chat_template(clean, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
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
