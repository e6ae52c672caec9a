"""Chat replies from a base model or a fine-tuned one, streamed token by token.

Loading a model costs far more than a short reply, so a worker keeps the models it served
last in a ``ModelCache`` and reuses them. ``generate`` renders the conversation with the
model's chat template, decodes with a KV cache (greedy when ``temperature`` is 0, else
sampling with temperature and top-p) and hands each new piece of text to ``on_text`` as
soon as it is known: multi-byte characters split over several byte-level tokens come out
whole, and text that may begin a stop string is held back until it is known not to.
"""

import json
import os
import random
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from workers.device import device_detect
from workers.formats import tool_calls_check, tools_check
from workers.json_prefix import JSON_START, json_closing, json_done, json_feed
from workers.loading import model_load, tokenizer_load
from workers.templates import chat_inputs

ROLES = ("system", "user", "assistant", "tool")
# What a turn may carry besides role and content: an assistant's calls, a tool turn's answer to one.
TURN_KEYS = ("tool_calls", "tool_call_id", "name")
# How the templates write a call (workers.templates.TOOL_CALLS): a JSON object between these tags.
TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
MAX_STOP_STRINGS = 4
MAX_TOP_LOGPROBS = 20
RESPONSE_FORMATS = ("text", "json_object")
# json_object: tokens tried, most likely first, before the next one is chosen among those that keep
# the reply JSON (sampling draws among at most JSON_CHOICES of them; greedy takes the first).
JSON_SCAN = 2048
JSON_CHOICES = 32
# Below this many parameters a CPU forward pass is a few small matrix products: splitting each
# over threads costs more in synchronisation than it saves (10-30x slower on a busy machine).
SINGLE_THREAD_PARAMETERS = 100_000_000


@dataclass(frozen=True)
class GenerateConfig:
    """One chat completion.

    messages: the conversation so far, a sequence of ``{"role", "content"}`` dicts with roles
        system, user, assistant or tool; an assistant turn may carry OpenAI's ``tool_calls`` (its
        content then may be None) and a tool turn its ``tool_call_id``; the reply continues it
        (no default).
    max_tokens: most tokens the reply may have; default 64.
    temperature: how random sampling is, 0 to 2; 0 is greedy (the most likely token every
        time), so equal requests give equal replies; default 1.0.
    top_p: nucleus sampling: draw only among the most likely tokens whose probabilities add
        up to ``top_p`` (0 < top_p <= 1; 1 keeps them all); default 1.0.
    seed: seeds sampling, so equal requests with the same seed sample the same reply; None
        draws a fresh seed; default None.
    stop: up to 4 strings; the reply ends before the first of them (which is not returned);
        default none.
    presence_penalty: -2 to 2, subtracted from the logit of every token the reply already has
        (OpenAI's formula); default 0.
    frequency_penalty: -2 to 2, times how often the reply already has the token, subtracted from its
        logit (OpenAI's formula); default 0.
    logprobs: return each generated token's log probability (before temperature and top-p);
        default False.
    top_logprobs: 0 to 20 most likely tokens returned at each position with their log
        probabilities; needs ``logprobs``; default 0.
    tools: functions the model may call, OpenAI's ``[{"type": "function", "function": {"name", ...}}]``;
        written into the prompt as training writes them, and ``<tool_call>{"name", "arguments"}</tool_call>``
        blocks in the reply come back as ``GenerateResult.tool_calls``; default none.
    tool_choice: "auto" (the model decides whether to call), "required" (it calls one of ``tools``) or
        OpenAI's ``{"type": "function", "function": {"name": ...}}`` (it calls that one). A forced call's
        block is written for the model up to where the choice is its own: the name is held to the tools
        offered and the arguments to one JSON object (``workers.json_prefix``), closed before
        ``max_tokens`` runs out; the reply ends with the call. Default "auto".
    response_format: "text", or "json_object": every token keeps the reply the beginning of one JSON
        object (``workers.json_prefix``), drawn among the allowed tokens among the most likely ones,
        and the object is closed before ``max_tokens`` runs out (a ``max_tokens`` too small for
        ``{}`` ends with "length"); the reply ends when the object does; default "text".
    """

    messages: tuple[dict, ...]
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0
    tools: tuple[dict, ...] = ()
    tool_choice: str | dict = "auto"
    response_format: str = "text"

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", tuple(_turn(m) for m in self.messages))
        object.__setattr__(self, "tools", tuple(self.tools or ()))
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        object.__setattr__(self, "stop", tuple(s for s in stop if s))
        if not self.messages:
            raise ValueError("messages must not be empty")
        if any(m["role"] not in ROLES or not isinstance(m["content"], str) for m in self.messages):
            raise ValueError(f"every message needs a role ({', '.join(ROLES)}) and text content")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if not 0 <= self.temperature <= 2:
            raise ValueError("temperature must be between 0 and 2")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be greater than 0 and at most 1")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        if not (-2 <= self.presence_penalty <= 2 and -2 <= self.frequency_penalty <= 2):
            raise ValueError("presence_penalty and frequency_penalty must be between -2 and 2")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS or (self.top_logprobs and not self.logprobs):
            raise ValueError(f"top_logprobs must be 0 to {MAX_TOP_LOGPROBS}, and needs logprobs")
        if self.response_format not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}")
        if self.response_format == "json_object" and self.stop:
            raise ValueError("stop strings would cut the JSON object; leave them out with json_object")
        problems = tools_check(list(self.tools)) if self.tools else []
        for index, message in enumerate(self.messages):
            if "tool_calls" in message:
                problems += tool_calls_check(message["tool_calls"], f"messages[{index}].tool_calls")
        if problems:
            _kind, where, message, _fix, _severity = problems[0]
            raise ValueError(f"{where} {message}")
        if self.tool_choice != "auto" and not self.forced_names:
            raise ValueError('tool_choice must be "auto", "required" or {"type": "function", "function": '
                             '{"name": <one of the tools>}}, and needs tools')

    @property
    def forced_names(self) -> tuple[str, ...]:
        """The functions a forced call may name: every tool for "required", the one named, else none."""
        names = tuple(tool["function"]["name"] for tool in self.tools)
        if self.tool_choice == "required":
            return names
        choice = self.tool_choice if isinstance(self.tool_choice, dict) else {}
        named = (choice.get("function") or {}).get("name")
        return (named,) if named in names else ()


def _turn(message: dict) -> dict:
    """A turn as templates read it: role, text content (an assistant turn that only calls has none)."""
    turn = {"role": message["role"], "content": message.get("content")}
    if turn["content"] is None and message["role"] == "assistant" and message.get("tool_calls"):
        turn["content"] = ""
    return {**turn, **{key: message[key] for key in TURN_KEYS if message.get(key) is not None}}


@dataclass(frozen=True)
class GenerateResult:
    """A finished reply.

    text: the reply (the deltas given to ``on_text``, joined).
    finish_reason: "stop" (end of turn or a stop string), "length" (``max_tokens`` reached) or
        "tool_calls" (the reply called tools).
    prompt_tokens: tokens of the rendered conversation.
    completion_tokens: tokens generated, the end-of-turn token included.
    logprobs: with ``config.logprobs``, one entry per generated token in OpenAI's shape
        (``{token, logprob, bytes, top_logprobs}``); else None.
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[dict] | None = None
    tool_calls: list[dict] | None = None


class ContextLengthExceeded(ValueError):
    """The conversation plus ``max_tokens`` does not fit the model's context."""


class TemplateCannotWrite(ValueError):
    """The model's chat template would drop what the request holds (the tools, or tool calls).

    param: the request field it concerns ("tools" or "messages").
    """

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class LoadedModel:
    """A model ready to generate, with its tokenizer and where it came from.

    key: ``(base model path, adapter path or None)``, as the cache knows it.
    context_length: most tokens (prompt and reply) the model takes.
    device: "cuda" or "cpu".
    cpu_threads: torch threads while it generates on the CPU.
    eos_token_ids: tokens that end the reply.
    """

    model: object
    tokenizer: object
    key: tuple[str, str | None]
    context_length: int
    device: str
    cpu_threads: int = 1
    eos_token_ids: frozenset[int] = field(default_factory=frozenset)


def inference_model_load(base_path: str, adapter_path: str | None = None) -> LoadedModel:
    """The base model with the adapter applied (or the full fine-tuned model), ready to generate.

    Loaded by ``workers.loading`` (the adapter's tokenizer, with the chat template it was trained
    with, when it has one). Weights go to the GPU when there is one, in bfloat16 where it has it.
    """
    import torch

    device = device_detect()
    tokenizer = tokenizer_load(base_path, adapter_path=adapter_path)
    model = model_load(base_path, adapter_path=adapter_path,
                       dtype=torch.bfloat16 if device.bf16 else torch.float32).to(device.kind)
    parameters = sum(p.numel() for p in model.parameters())
    cpu_threads = 1 if parameters < SINGLE_THREAD_PARAMETERS else len(os.sched_getaffinity(0))
    return LoadedModel(model=model, tokenizer=tokenizer, key=(str(base_path), adapter_path and str(adapter_path)),
                       context_length=int(getattr(model.config, "max_position_embeddings", 0) or 2048),
                       device=device.kind, cpu_threads=cpu_threads, eos_token_ids=_eos_token_ids(model, tokenizer))


class ModelCache:
    """Loaded models by ``(base path, adapter path)``; past ``size`` the least recently used goes.

    Thread-safe: one lock covers lookups and loads, so a model is never loaded twice at once.
    """

    def __init__(self, size: int = 2,
                 loader: Callable[[str, str | None], LoadedModel] = inference_model_load) -> None:
        self.size = max(1, size)
        self._loader = loader
        self._models: OrderedDict[tuple[str, str | None], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, base_path: str, adapter_path: str | None = None) -> tuple[LoadedModel, bool]:
        """``(model, hit)``: the loaded model, and whether it was already loaded."""
        key = (str(base_path), str(adapter_path) if adapter_path else None)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key], True
            while len(self._models) >= self.size:  # make room first: never hold size + 1 models
                self._models.popitem(last=False)
                _release_device_memory()
            loaded = self._loader(*key)
            self._models[key] = loaded
            return loaded, False

    def holds(self, base_path: str, adapter_path: str | None = None) -> bool:
        """Whether ``get`` would answer at once (the model is loaded already)."""
        return (str(base_path), str(adapter_path) if adapter_path else None) in self._models

    def __len__(self) -> int:
        return len(self._models)


def prompt_ids(tokenizer, messages, tools=()) -> list[int]:
    """Token ids of ``messages`` (and the ``tools`` offered) in the chat template, ending where the
    assistant's reply starts: turns and tools go through ``workers.templates.chat_inputs``, as training
    renders them, so a model that learned to call tools is prompted as it learned."""
    messages, tools = chat_inputs({"messages": list(messages), "tools": list(tools) or None})
    template = getattr(tokenizer, "chat_template", None) or ""
    calls = any(m.get("tool_calls") for m in messages)
    if (tools and "tools" not in template) or (calls and "tool_calls" not in template):
        raise TemplateCannotWrite(
            "this model's chat template does not write " + ("the tools offered" if tools else "tool calls")
            + "; fine-tune it with a named template (chatml, llama3, mistral, alpaca) to use tools",
            "tools" if tools else "messages")
    if template:
        text = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    else:  # a model without a template: plain turns, then the assistant's cue
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def generate(loaded: LoadedModel, config: GenerateConfig, on_text: Callable[[str], None] | None = None, *,
             on_start: Callable[[int], None] | None = None,
             on_call: Callable[[dict], None] | None = None) -> GenerateResult:
    """Generate the assistant's reply to ``config.messages``; ``on_text`` gets each new piece of text.
    With tools offered, ``on_call`` gets each tool call as it is generated, in OpenAI's stream deltas,
    and ``on_text`` only the text outside the calls (``ToolCallStream``).

    Stops at the model's end-of-turn token, at a stop string or after ``max_tokens``. Raises
    ``ContextLengthExceeded`` before generating when the prompt and ``max_tokens`` do not fit;
    otherwise ``on_start`` gets the prompt's token count before the first token is generated.
    """
    import torch

    ids = prompt_ids(loaded.tokenizer, config.messages, config.tools)
    heads = _forced_heads(config)  # a forced call: the block's beginnings, one per function it may name
    head = os.path.commonprefix(heads) if heads else ""
    head_ids = loaded.tokenizer(head, add_special_tokens=False)["input_ids"] if head else []
    if len(ids) + len(head_ids) + config.max_tokens > loaded.context_length:
        raise ContextLengthExceeded(
            f"this model's maximum context length is {loaded.context_length} tokens; you requested "
            f"{len(ids) + config.max_tokens} tokens ({len(ids)} in the messages, {config.max_tokens} in the "
            "completion); shorten the messages or lower max_tokens")
    if on_start is not None:
        on_start(len(ids))
    if loaded.device == "cpu":
        torch.set_num_threads(loaded.cpu_threads)
    sampler = torch.Generator().manual_seed(config.seed if config.seed is not None else random.getrandbits(63))
    calls = ToolCallStream(on_text or (lambda text: None), on_call or (lambda call: None)) if config.tools else None
    stream = _TextStream(loaded.tokenizer, config.stop, calls.feed if calls else on_text or (lambda text: None))
    finish, count = "length", 0
    counts: dict[int, int] = {}
    logprobs: list[dict] | None = [] if config.logprobs else None
    for token in head_ids:  # written for the model: the reply begins with them
        stream.add(token)
    naming = heads if len(heads) > 1 else ()  # the name is the model's choice among these
    json_state = JSON_START if config.response_format == "json_object" or len(heads) == 1 else None
    with torch.inference_mode():
        out = loaded.model(input_ids=torch.tensor([ids + head_ids], device=loaded.device), use_cache=True)
        while count < config.max_tokens:
            logits = _penalised(out.logits[0, -1].float().cpu(), counts, config)
            if naming:
                token = _named_token(loaded.tokenizer, logits, config, sampler, stream, naming)
            elif json_state is None:
                token = _next_token(logits, config, sampler)
            else:
                token, json_state = _json_token(loaded.tokenizer, logits, config, sampler, stream, json_state,
                                                remaining=config.max_tokens - count)
            if logprobs is not None:
                logprobs.append(_logprob_entry(loaded.tokenizer, logits, token, config.top_logprobs))
            counts[token] = counts.get(token, 0) + 1
            count += 1
            if token in loaded.eos_token_ids or stream.add(token) or json_done(json_state):
                finish = "stop"
                break
            if naming and stream.text in naming:  # the name is whole: its arguments follow, as one object
                naming, json_state = (), JSON_START
            if count < config.max_tokens:
                out = loaded.model(input_ids=torch.tensor([[token]], device=loaded.device),
                                   past_key_values=out.past_key_values, use_cache=True)
    stream.finish()
    if calls is None:
        return GenerateResult(text=stream.text, finish_reason=finish, prompt_tokens=len(ids), completion_tokens=count,
                              logprobs=logprobs)
    if heads and json_done(json_state):
        calls.feed("}" + CLOSE_TAG)  # the forced block's end
    calls.finish()
    return GenerateResult(text=calls.text, finish_reason="tool_calls" if calls.calls and calls.complete else finish,
                          prompt_tokens=len(ids), completion_tokens=count + len(head_ids), logprobs=logprobs,
                          tool_calls=calls.calls or None)


def _forced_heads(config: GenerateConfig) -> tuple[str, ...]:
    """A forced call's block up to its arguments, for each function it may name (none when not forced)."""
    return tuple(f'{OPEN_TAG}{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": '
                 for name in config.forced_names)


def _named_token(tokenizer, logits, config: GenerateConfig, sampler, stream: "_TextStream",
                 heads: tuple[str, ...]) -> int:
    """The next token of a forced call's name: only one that keeps the reply the beginning of one of
    ``heads`` (the most likely when greedy, else drawn among the most likely such ones); when none of the
    likely ones does, the next token of the first head that fits."""
    import torch

    allowed = []
    wanted = 1 if config.temperature == 0 else JSON_CHOICES
    for token in torch.argsort(logits, descending=True)[:JSON_SCAN].tolist():
        text = tokenizer.decode([*stream.tokens, token], skip_special_tokens=True)
        if len(text) > len(stream.text) and any(head.startswith(text) for head in heads):
            allowed.append(token)
            if len(allowed) >= wanted:
                break
    if not allowed:
        rest = next(head for head in heads if head.startswith(stream.text))[len(stream.text):]
        return tokenizer(rest, add_special_tokens=False)["input_ids"][0]
    if len(allowed) == 1:
        return allowed[0]
    masked = torch.full_like(logits, float("-inf"))
    masked[torch.tensor(allowed)] = logits[torch.tensor(allowed)]
    return _next_token(masked, config, sampler)


OPEN_TAG, CLOSE_TAG = "<tool_call>", "</tool_call>"
# The start of a block a stream can send as it goes: the name first, then the arguments object opening.
CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*(?=\{)')


class ToolCallStream:
    """A reply with tools offered, split as it is generated into its text and its tool calls, sent as
    OpenAI streams them: ``on_text`` gets the text outside the ``<tool_call>`` blocks (held back while
    it may begin one, and trailing whitespace until more text follows); ``on_call`` gets a call's
    first delta (``{"index", "id", "type": "function", "function": {"name", "arguments": ""}}``) once
    its name is whole and its arguments object opens, then each piece of the arguments as generated
    (``{"index", "function": {"arguments": piece}}``), held to JSON (``workers.json_prefix``).

    ``text`` and ``calls`` are the reply as the stream sent it, so a streamed reply and a whole one
    are the same. A block written otherwise (arguments first, none) is read whole when it closes
    (``tool_calls_parse``); one that is not a call stays text. A call already sent whose arguments
    break off (``max_tokens``) keeps the arguments it had.
    """

    def __init__(self, on_text: Callable[[str], None], on_call: Callable[[dict], None]) -> None:
        self.on_text, self.on_call = on_text, on_call
        self.text = ""
        self.calls: list[dict] = []
        self.pending = ""  # outside a block: text not sent yet; inside: the block after <tool_call>
        self.in_block = False
        self.arguments: tuple | None = None  # a call being sent: (json state, sent length of pending)
        self.broken = False  # a call's arguments broke off before their object closed

    def feed(self, piece: str) -> None:
        self.pending += piece
        while self._step():
            pass

    def finish(self) -> None:
        """The reply ended: an open block that sent nothing yet is text, as is the held-back text."""
        if self.in_block and self.arguments is None:
            self.pending, self.in_block = OPEN_TAG + self.pending, False
        if not self.in_block:
            self._send_text(self.pending if not self.calls else self.pending.rstrip())
        self.pending = ""

    @property
    def complete(self) -> bool:
        """Whether every call sent is whole (one cut by ``max_tokens``, or whose arguments broke, is not)."""
        return not self.broken and not (self.in_block and self.arguments is not None)

    def _step(self) -> bool:
        """Consume what can be decided now; True when more may be."""
        if not self.in_block:
            start = self.pending.find(OPEN_TAG)
            if start < 0:
                keep = next((n for n in range(min(len(OPEN_TAG) - 1, len(self.pending)), 0, -1)
                             if OPEN_TAG.startswith(self.pending[-n:])), 0)
                sendable = self.pending[:len(self.pending) - keep]
                sent = sendable.rstrip()
                self._send_text(sent)
                self.pending = self.pending[len(sent):]
                return False
            self._send_text(self.pending[:start].rstrip())
            self.pending, self.in_block = self.pending[start + len(OPEN_TAG):], True
            return True
        if self.arguments is None:
            return self._block_start()
        return self._arguments_send()

    def _block_start(self) -> bool:
        head = CALL_HEAD.match(self.pending)
        name = json.loads(head.group(1)) if head else ""
        if isinstance(name, str) and name.strip():
            self._call_add({"id": f"call_{secrets.token_hex(12)}", "type": "function",
                            "function": {"name": name, "arguments": ""}})
            self.arguments = (JSON_START, head.end())
            return True
        end = self.pending.find(CLOSE_TAG)
        if end < 0:
            return False
        block, self.pending, self.in_block = OPEN_TAG + self.pending[:end + len(CLOSE_TAG)], \
            self.pending[end + len(CLOSE_TAG):], False
        rest, calls = tool_calls_parse(block)
        if not calls:
            self._send_text(block)
            return True
        self._call_add({**calls[0], "function": {**calls[0]["function"], "arguments": ""}})
        self._arguments_piece(calls[0]["function"]["arguments"])
        return True

    def _arguments_send(self) -> bool:
        state, sent = self.arguments
        if not json_done(state):
            piece = ""
            for char in self.pending[sent:]:
                after = json_feed(state, char)
                if after is None:
                    break
                piece, state = piece + char, after
                if json_done(state):
                    break
            self._arguments_piece(piece)
            self.arguments = (state, sent + len(piece))
            if not json_done(state) and sent + len(piece) == len(self.pending):
                return False  # more arguments to come
        end = self.pending.find(CLOSE_TAG, self.arguments[1])
        if end < 0:
            return False
        # the closing brace and tag (or whatever broke the arguments) are the block's, not the call's
        self.broken = self.broken or not json_done(self.arguments[0])
        self.pending, self.in_block, self.arguments = self.pending[end + len(CLOSE_TAG):], False, None
        return True

    def _call_add(self, call: dict) -> None:
        self.calls.append(call)
        self.on_call({"index": len(self.calls) - 1, **call, "function": dict(call["function"])})

    def _arguments_piece(self, piece: str) -> None:
        if piece:
            function = self.calls[-1]["function"]
            function["arguments"] += piece
            self.on_call({"index": len(self.calls) - 1, "function": {"arguments": piece}})

    def _send_text(self, text: str) -> None:
        if text:
            self.text += text
            self.on_text(text)


def tool_calls_parse(text: str) -> tuple[str, list[dict]]:
    """``(the rest of the text, the calls)``: each ``<tool_call>{"name", "arguments"}</tool_call>`` block
    of a reply as an OpenAI tool call (``{"id", "type": "function", "function": {"name", "arguments":
    <JSON string>}}``). A block that is not such an object (a cut or garbled one) stays in the text."""
    calls = []

    def take(match: re.Match) -> str:
        try:
            call = json.loads(match.group(1))
        except ValueError:
            return match.group(0)
        name = call.get("name") if isinstance(call, dict) else None
        arguments = call.get("arguments", {}) if isinstance(call, dict) else None
        if not isinstance(name, str) or not name.strip() or not isinstance(arguments, dict):
            return match.group(0)
        calls.append({"id": f"call_{secrets.token_hex(12)}", "type": "function",
                      "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}})
        return ""

    rest = TOOL_CALL.sub(take, text)
    return (rest.strip() if calls else text), calls


def _penalised(logits, counts: dict[int, int], config: GenerateConfig):
    """OpenAI's penalties: ``logit -= count * frequency_penalty + (count > 0) * presence_penalty`` for every
    token the reply already has."""
    if not counts or not (config.presence_penalty or config.frequency_penalty):
        return logits
    import torch

    tokens = torch.tensor(list(counts))
    times = torch.tensor(list(counts.values()), dtype=logits.dtype)
    logits = logits.clone()
    logits[tokens] -= times * config.frequency_penalty + config.presence_penalty
    return logits


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet read backwards: the character a byte-level BPE vocabulary writes for each
    byte (printable Latin-1 as itself, the other bytes as chr(256 + n) in order) -> that byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(shifted)}}


BYTE_DECODER = _byte_decoder()
BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte tokens


def token_bytes(tokenizer, token_id: int) -> bytes:
    """A token's own bytes, as OpenAI's logprobs ``bytes``: a token holding part of a multi-byte character
    decodes to U+FFFD, so its raw bytes come from its vocabulary entry (byte-level BPE's alphabet or
    SentencePiece's ``<0xNN>``), kept only when they decode to the same text."""
    text = tokenizer.decode([token_id])
    if "\ufffd" not in text:
        return text.encode()
    piece = tokenizer.convert_ids_to_tokens(token_id) or ""
    byte = BYTE_FALLBACK.fullmatch(piece)
    if byte:
        raw = bytes([int(byte.group(1), 16)])
    elif piece and all(c in BYTE_DECODER for c in piece):
        raw = bytes(BYTE_DECODER[c] for c in piece)
    else:
        return text.encode()
    return raw if raw.decode("utf-8", "replace") == text else text.encode()


def _logprob_entry(tokenizer, logits, token: int, top: int) -> dict:
    """One generated token in OpenAI's logprobs shape, with the ``top`` most likely tokens at its place."""
    import torch

    logprobs = torch.log_softmax(logits, dim=-1)

    def entry(token_id: int) -> dict:
        text = tokenizer.decode([token_id])
        return {"token": text, "logprob": float(logprobs[token_id]), "bytes": list(token_bytes(tokenizer, token_id))}

    best = torch.topk(logprobs, top).indices.tolist() if top else []
    return {**entry(token), "top_logprobs": [entry(t) for t in best]}


def _next_token(logits, config: GenerateConfig, sampler) -> int:
    import torch

    # logits are on the CPU (_penalised's caller moved them): one seeded generator, whatever the device
    if config.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / config.temperature, dim=-1)
    if config.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(0) - sorted_probs >= config.top_p  # the most likely one always stays
        sorted_probs[outside] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=sampler))


def _json_token(tokenizer, logits, config: GenerateConfig, sampler, stream: "_TextStream", state, *,
                remaining: int):
    """``(token, state after it)``: the next token of a json_object reply.

    Only a token whose text keeps the reply the beginning of a JSON object, and leaves room to close it
    (at most one token per character of ``json_closing``), may be chosen: the most likely such one when
    greedy, else one drawn among the most likely such ones. When none is left, the closing text is forced.
    The text a token adds is read from the whole reply decoded with it, as the stream reads it.
    """
    import torch

    allowed: dict[int, object] = {}
    wanted = 1 if config.temperature == 0 else JSON_CHOICES
    for token in torch.argsort(logits, descending=True)[:JSON_SCAN].tolist():
        following = _json_after(tokenizer, stream, state, token)
        if following is not None and len(json_closing(following)) < remaining:
            allowed[token] = following
            if len(allowed) >= wanted:
                break
    if not allowed:  # nothing likely fits: write the closing text, a token at a time
        closing = json_closing(state)
        token = tokenizer(closing, add_special_tokens=False)["input_ids"][0]
        return token, _json_after(tokenizer, stream, state, token) or json_feed(state, closing[:1])
    if len(allowed) == 1:
        return next(iter(allowed.items()))
    masked = torch.full_like(logits, float("-inf"))
    choices = torch.tensor(list(allowed))
    masked[choices] = logits[choices]
    token = _next_token(masked, config, sampler)
    return token, allowed[token]


def _json_after(tokenizer, stream: "_TextStream", state, token: int):
    """The JSON state after ``token``, or None when its text (none, a broken character) cannot follow."""
    text = tokenizer.decode([*stream.tokens, token], skip_special_tokens=True)
    if not text.startswith(stream.text) or len(text) == len(stream.text) or "\ufffd" in text[len(stream.text):]:
        return None
    return json_feed(state, text[len(stream.text):])


class _TextStream:
    """Turns generated tokens into text deltas.

    The whole reply is decoded again after each token (cheap next to a forward pass), so a
    byte-level token that completes a character, or a merge that changes how earlier tokens
    read, comes out right. A trailing U+FFFD (a character still missing bytes; after 4 tokens
    it is a real one: no UTF-8 character has more bytes) and any tail that may begin a stop
    string are held back until the next tokens settle them.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...], on_text: Callable[[str], None]) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.on_text = on_text
        self.tokens: list[int] = []
        self.text = ""
        self.sent = 0
        self.unsent_tokens = 0

    def add(self, token: int) -> bool:
        """Take one token; True when a stop string has appeared (the reply ends before it)."""
        self.tokens.append(token)
        self.unsent_tokens += 1
        self.text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = self._stop_at()
        if cut is not None:
            self.text = self.text[:cut]
            self._send(cut)
            return True
        if not self.text.endswith("\ufffd") or self.unsent_tokens >= 4:
            self._send(len(self.text) - self._held())
        return False

    def finish(self) -> None:
        self._send(len(self.text))

    def _stop_at(self) -> int | None:
        start = max(0, self.sent - max((len(s) for s in self.stop), default=0))
        found = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _held(self) -> int:
        """Length of the longest end of the text that is the beginning of a stop string."""
        for size in range(min(len(self.text), max((len(s) for s in self.stop), default=1) - 1), 0, -1):
            if any(s.startswith(self.text[-size:]) for s in self.stop):
                return size
        return 0

    def _send(self, upto: int) -> None:
        if upto > self.sent:
            self.on_text(self.text[self.sent:upto])
            self.sent = upto
            self.unsent_tokens = 0


def _eos_token_ids(model, tokenizer) -> frozenset[int]:
    ids = set()
    generation = getattr(model, "generation_config", None)
    for value in (getattr(generation, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return frozenset(ids)


def _release_device_memory() -> None:
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
