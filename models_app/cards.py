"""Model cards: the Markdown a version is generated with, its evaluation section, and safe HTML of it.

A card is generated when the version is made (``models_app.services.registry``) and stored; a person
may edit it (``models_app.services.cards``). The evaluation section sits between two HTML comments so
that a finished evaluation can replace it without touching what was edited around it. A version made
before cards existed has none stored: it is shown (and exported) as generated now.
"""

import re

from markdown_it import MarkdownIt

from models_app.models import Evaluation, FineTunedModel

EVALUATIONS_START, EVALUATIONS_END = "<!-- evaluations -->", "<!-- /evaluations -->"
_EVALUATIONS = re.compile(re.escape(EVALUATIONS_START) + r".*?" + re.escape(EVALUATIONS_END), re.S)
CARD_MAX_CHARS = 100_000
EVALUATIONS_SHOWN = 3  # the newest succeeded evaluations in a generated card


def model_card_generate(model: FineTunedModel, *, evaluations=None) -> str:
    """The generated card of ``model``: base model, training data (rows, sha256), objective, adapter and
    hyperparameters, evaluations, intended use and limitations. ``evaluations``: the succeeded
    evaluations to show (default: the model's newest); a model not saved yet passes ``()``.

    Tables have no column alignment: markdown-it writes it as ``style`` attributes, which the
    Content-Security-Policy refuses."""
    job, base = model.job, model.base_model
    datasets = [("training", job.dataset), ("validation", job.validation_dataset),
                ("preference pairs (judged)", job.preference_dataset)]
    lines = [
        f"# {model.name} {model.semver}", "",
        f"`{model.id}`: call it `{model.reference}`. Fine-tuned by the job `{job.id}`.", "",
        "## Base model", "",
        f"`{base.name}`" + (f" ({base.family})" if base.family else "") + ".", "",
        "## Training data", "",
        "| Role | File | Rows | SHA-256 |", "| --- | --- | --- | --- |",
        *(f"| {role} | {_cell(d.filename)} (`{d.id}`) | {d.row_count:,} | `{d.sha256 or '-'}` |"
          for role, d in datasets if d is not None), "",
        "## Training", "",
        f"- Objective: `{job.objective}`",
        f"- Adapter: `{model.adapter}`",
        f"- Seed: {job.seed}",
        *([f"- Trained tokens: {job.trained_tokens:,}"] if job.trained_tokens else []), "",
        "| Hyperparameter | Value |", "| --- | --- |",
        *(f"| {_cell(name)} | {_cell(value)} |" for name, value in sorted(job.hyperparameters.items())), "",
        model_card_evaluations(model, evaluations=evaluations), "",
        "## Intended use", "",
        f"The `{job.objective}` objective on data like `{_cell(job.dataset.filename)}`, through this platform's "
        "chat API or an export. Say here which tasks and users it is meant for.", "",
        "## Limitations", "",
        f"Trained on {job.dataset.row_count:,} rows: it knows what `{base.name}` and those rows taught it, "
        "biases included, and nothing newer. It was checked only on the evaluations above; try it on your own "
        "cases before relying on it.", "",
    ]
    return "\n".join(lines)


def model_card_evaluations(model: FineTunedModel, *, evaluations=None) -> str:
    """The card's evaluation section, markers included: a table per evaluation (base, tuned, change)."""
    from models_app.selectors import evaluation_tables

    if evaluations is None:
        evaluations = model.evaluations.filter(status=Evaluation.Status.SUCCEEDED).select_related("dataset")[
            :EVALUATIONS_SHOWN]
    lines = [EVALUATIONS_START, "## Evaluation", ""]
    for evaluation in evaluations:
        tables = evaluation_tables(evaluation)
        targets = tables["targets"]
        lines += [f"On `{_cell(evaluation.dataset.filename)}` ({evaluation.rows_evaluated:,} rows, "
                  f"{evaluation.get_kind_display()}, `{evaluation.id}`):", "",
                  "| Metric | " + " | ".join(targets) + " | Change |", "| --- |" + " --- |" * (len(targets) + 1),
                  *(f"| {row['label']} | " + " | ".join(row["texts"]) + f" | {row['delta_text'] or '-'} |"
                    for row in tables["table"]), ""]
    if len(lines) == 3:
        lines += ["No evaluation has finished yet.", ""]
    return "\n".join([*lines, EVALUATIONS_END])


def model_card_with_evaluations(card: str, section: str) -> str:
    """``card`` with its evaluation section replaced by ``section``; unchanged when its markers are gone."""
    return _EVALUATIONS.sub(lambda _: section, card, count=1)


def model_card_text(model: FineTunedModel) -> str:
    """The card as stored, or as generated now for a version made before cards were stored."""
    return model.card or model_card_generate(model)


_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")


def model_card_html(card: str) -> str:
    """The card as HTML. Raw HTML in it is escaped, not passed through (``html: False``), and markdown-it
    refuses javascript:, vbscript: and data: links, so an edited card cannot inject script."""
    return _markdown.render(card)


def _cell(value) -> str:
    """A value in a table cell: on one line, its pipes escaped."""
    return str(value).replace("\n", " ").replace("|", "\\|")
