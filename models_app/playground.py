"""What the playground page and its websocket render: the same partials for both.

A pane is one side of the comparison: which model, where its reply stands, the text so far.
The page renders whole panes; the consumer swaps in new panes when a run starts, then sends
each piece of text as an out-of-band fragment appended to the pane's text.
"""

from dataclasses import dataclass

from django.template.loader import render_to_string

STATES = ("idle", "waiting", "loading", "generating", "done", "error")
# Before the first piece of text: the page counts the seconds (static/app.js, [data-elapsed]).
COUNTING = {"waiting", "loading"}
QUEUED = "Queued for the inference worker…"
LOADING = "Loading the model (first request)…"


@dataclass
class Pane:
    """One side: ``state`` is one of STATES; ``status`` says it in words."""

    side: str
    model_id: str = ""
    state: str = "idle"
    status: str = ""
    text: str = ""

    @property
    def counting(self) -> bool:
        return self.state in COUNTING


def panes_html(panes: list[Pane], *, oob: bool = False) -> str:
    return "".join(render_to_string("models_app/partials/playground_pane.html", {"pane": p, "oob": oob})
                   for p in panes)


def pane_status_html(pane: Pane) -> str:
    return render_to_string("models_app/partials/playground_status.html", {"pane": pane, "oob": True})


def pane_text_html(side: str, text: str) -> str:
    return render_to_string("models_app/partials/playground_delta.html", {"side": side, "text": text})


def errors_html(form=None, message: str = "") -> str:
    return render_to_string("models_app/partials/playground_errors.html",
                            {"form": form, "message": message, "oob": True})


def status_for(message: dict, *, loaded_in: float | None = None) -> tuple[str, str]:
    """``(state, status)`` of a pane after a worker message (see models_app.replies); ``loaded_in``:
    the seconds since the worker said it was loading the model."""
    kind = message["type"]
    if kind == "inference.loading":
        return "loading", LOADING
    if kind == "inference.start":
        if message.get("cache") == "hit":
            return "generating", "Generating… (model already loaded)"
        took = f" in {loaded_in:.1f} s" if loaded_in is not None else ""
        return "generating", f"Generating… (model loaded for this request{took})"
    if kind == "inference.done":
        why = "end of turn" if message["finish_reason"] == "stop" else "max tokens reached"
        return "done", f"Done: {message['completion_tokens']} tokens, {why}."
    if kind == "inference.error":
        return "error", f"Error: {message.get('message') or 'the model could not generate'}"
    return "generating", ""
