"""The playground's form (one prompt, two models, the same sampling settings for both), the evaluation form
and the stored completions page's filters."""

import datetime

from django import forms
from django.http import Http404

from models_app import selectors
from models_app.base_models.models import BaseModel
from models_app.base_models.selectors import base_models_usable_by
from models_app.models import FineTunedModel

SIDES = ("left", "right")


def model_choices(user) -> list:
    """Select options: the user's fine-tuned models, then the base models."""
    tuned = [(m.id, f"{m.reference} ({m.id})") for m in selectors.fine_tuned_models_visible_to(user)[:200]]
    base = [(m.name, m.name) for m in base_models_usable_by(user)]
    return [("Your fine-tuned models", tuned), ("Base models", base)] if tuned else [("Base models", base)]


class PlaygroundForm(forms.Form):
    system = forms.CharField(label="System message (optional)", required=False, max_length=20_000,
                             widget=forms.Textarea(attrs={"rows": 2}))
    prompt = forms.CharField(max_length=20_000, widget=forms.Textarea(attrs={"rows": 4}))
    left_model = forms.CharField(label="Left model")
    right_model = forms.CharField(label="Right model")
    temperature = forms.FloatField(min_value=0, max_value=2, initial=0,
                                   help_text="0 is greedy: the same prompt gives the same reply.")
    max_tokens = forms.IntegerField(label="Max tokens", min_value=1, max_value=2048, initial=64)
    seed = forms.IntegerField(required=False, min_value=0, max_value=2**63 - 1,
                              help_text="Optional: repeats a sampled reply (temperature above 0).")

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        choices = model_choices(user)
        for side in SIDES:
            self.fields[f"{side}_model"].widget = forms.Select(choices=choices)

    def clean_left_model(self) -> BaseModel | FineTunedModel:
        return self._model("left_model")

    def clean_right_model(self) -> BaseModel | FineTunedModel:
        return self._model("right_model")

    def _model(self, name: str) -> BaseModel | FineTunedModel:
        value = self.cleaned_data[name]
        try:
            return selectors.model_get(self.user, value)  # another user's model is no model at all
        except Http404:
            raise forms.ValidationError(f"No such model: {value}") from None

    def models(self) -> dict[str, BaseModel | FineTunedModel]:
        """The model of each side, once valid."""
        return {side: self.cleaned_data[f"{side}_model"] for side in SIDES}

    def generate_config(self) -> dict:
        """``workers.inference.GenerateConfig``'s fields, the same for both sides."""
        data = self.cleaned_data
        messages = [{"role": "system", "content": data["system"]}] if data["system"].strip() else []
        config = {"messages": [*messages, {"role": "user", "content": data["prompt"]}],
                  "temperature": data["temperature"], "max_tokens": data["max_tokens"]}
        if data.get("seed") is not None:
            config["seed"] = data["seed"]
        return config


def playground_initial(user, model_id: str | None) -> dict:
    """Left: the model asked for (else the newest fine-tuned one, else a base model); right: its base model.

    A ``model_id`` the user may not see raises ``Http404``.
    """
    if model_id:
        left = selectors.model_get(user, model_id)
    else:
        left = selectors.fine_tuned_models_visible_to(user).first() or base_models_usable_by(user).first()
    if left is None:
        return {}
    right = left.base_model if isinstance(left, FineTunedModel) else left
    return {"left_model": selectors.model_public_id(left), "right_model": selectors.model_public_id(right)}


class EvaluationForm(forms.Form):
    """The model page's "evaluate on" form; the service checks the dataset and the limits again."""

    file = forms.CharField(label="Evaluate on")
    max_rows = forms.IntegerField(label="Rows (from the top)", min_value=1, max_value=1000, initial=100)
    max_new_tokens = forms.IntegerField(label="Tokens generated per row", min_value=0, max_value=512, initial=32)
    checkpoints = forms.BooleanField(required=False, label="Also every checkpoint (marks the best)")

    def error_text(self) -> str:
        """Every field error in one line, each with its field's label."""
        return "; ".join(f"{self.fields[name].label}: {' '.join(errors)}" for name, errors in self.errors.items())


class CompletionFilterForm(forms.Form):
    """The stored completions page's filters; ``filters()`` are ``stored_completions_filtered``'s arguments
    (the API takes the same as query parameters: model, metadata[key], rating, created_after/before)."""

    model = forms.CharField(required=False, label="Model")
    metadata = forms.CharField(required=False, label="Metadata", help_text="key=value, several separated by commas")
    rating = forms.ChoiceField(required=False, label="Rating", choices=[
        ("", "any"), *((r, r) for r in selectors.COMPLETION_RATINGS)])
    created_after = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    created_before = forms.DateField(required=False, label="Until (inclusive)",
                                     widget=forms.DateInput(attrs={"type": "date"}))

    def clean_metadata(self) -> dict:
        pairs = {}
        for part in (self.cleaned_data.get("metadata") or "").split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise forms.ValidationError("write key=value pairs, separated by commas")
            pairs[key.strip()] = value.strip()
        return pairs

    def filters(self) -> dict:
        data = self.cleaned_data if self.is_valid() else {}
        day = datetime.timedelta(days=1)

        def start(value, plus=datetime.timedelta(0)):
            return datetime.datetime.combine(value + plus, datetime.time(), tzinfo=datetime.UTC) if value else None

        return {"model": data.get("model") or "", "metadata": data.get("metadata") or {},
                "rating": data.get("rating") or "", "created_after": start(data.get("created_after")),
                "created_before": start(data.get("created_before"), day)}
