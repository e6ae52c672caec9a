"""Forms of the job wizard: the text a user types becomes the API's hyperparameters."""

from django import forms

from finetune_site.errors import InvalidRequest
from jobs_app.hyperparameters import PARAM, hyperparameters_resolve

# The advanced panel: (name, label, help) in display order; every one may be left "auto".
ADVANCED = [
    ("n_epochs", "Epochs", "Passes over the training file (1–100)."),
    ("batch_size", "Batch size", "Rows per step (auto: rows/4, 1–8)."),
    ("learning_rate", "Learning rate", "Overrides the multiplier (auto: 1e-3 for LoRA on small models)."),
    ("learning_rate_multiplier", "Learning-rate multiplier", "Scales the automatic learning rate."),
    ("max_length", "Max length", "Tokens per row, at most the model's context."),
    ("lora_r", "LoRA rank", "Rank of the adapter matrices (auto 16)."),
    ("lora_alpha", "LoRA alpha", "Scaling of the adapter (auto 2 × rank)."),
    ("lora_dropout", "LoRA dropout", "0 to 1 (auto 0)."),
    ("lora_target_modules", "LoRA target modules", "all-linear, or module names separated by commas."),
    ("logging_steps", "Logging steps", "A metric point every N steps (auto 1)."),
    ("save_steps", "Save steps", "A checkpoint every N steps; 0 = one per epoch."),
]
ADVANCED_NAMES = [name for name, _, _ in ADVANCED]
ADAPTERS = [("lora", "LoRA"), ("full", "Full fine-tune")]
# The advanced panel's template select: how chat rows become tokens (the API's "template").
TEMPLATES = [("", "Auto: the model's own chat template"), ("chatml", "ChatML"), ("llama3", "Llama 3"),
             ("mistral", "Mistral"), ("alpaca", "Alpaca"),
             ("completion", "Completion only (turns joined, no template)")]
SELECT_NAMES = ("adapter", "template")


def hyperparameter_parse(name: str, text: str):
    """The API value for what was typed: blank means "auto", numbers become numbers."""
    text = (text or "").strip()
    if text in ("", "auto"):
        return "auto"
    if name == "lora_target_modules":
        return text if text == "all-linear" else [part.strip() for part in text.split(",") if part.strip()]
    if name in SELECT_NAMES:
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text  # not a number: the shared validation says what is expected


def hyperparameters_from_texts(texts: dict[str, str]) -> dict:
    """Only the fields the user set (not "auto"), as the API would receive them."""
    values = {name: hyperparameter_parse(name, text) for name, text in texts.items()}
    return {name: value for name, value in values.items() if value != "auto"}


def hyperparameter_error(name: str, text: str, *, base_model, rows: int) -> str:
    """The API's message for one field alone, or "" when it is valid."""
    try:
        hyperparameters_resolve(hyperparameters_from_texts({name: text}), parameters=base_model.parameters,
                                rows=rows, context_length=base_model.context_length)
    except InvalidRequest as error:
        return error.message
    return ""


def hyperparameters_errors(texts: dict[str, str], *, base_model, rows: int) -> dict[str, str]:
    """Every field's own error, then the errors that only the combination shows."""
    errors = {name: message for name, text in texts.items()
              if (message := hyperparameter_error(name, text, base_model=base_model, rows=rows))}
    if not errors:
        try:
            hyperparameters_resolve(hyperparameters_from_texts(texts), parameters=base_model.parameters,
                                    rows=rows, context_length=base_model.context_length)
        except InvalidRequest as error:
            errors[(error.param or "").removeprefix(PARAM + ".") or "__all__"] = error.message
    return errors


class DatasetStepForm(forms.Form):
    training_file = forms.ChoiceField(label="Training dataset")
    validation_file = forms.ChoiceField(label="Validation dataset (optional)", required=False)

    def __init__(self, *args, datasets, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(d.id, f"{d.filename} · {d.row_count} rows · {d.id}") for d in datasets]
        self.fields["training_file"].choices = choices
        self.fields["validation_file"].choices = [("", "None"), *choices]

    def clean(self):
        data = super().clean()
        if data.get("validation_file") and data.get("validation_file") == data.get("training_file"):
            self.add_error("validation_file", "Pick a different file than the training dataset, or none.")
        return data


class ModelStepForm(forms.Form):
    model = forms.ChoiceField(label="Base model")
    method = forms.ChoiceField(label="Method", choices=[("supervised", "Supervised fine-tuning (SFT)")])
    adapter = forms.ChoiceField(label="Adapter", choices=ADAPTERS)
    suffix = forms.CharField(label="Name suffix (optional)", required=False, max_length=64)

    def __init__(self, *args, base_models, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(m.name, m.name) for m in base_models]
