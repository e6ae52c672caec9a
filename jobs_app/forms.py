"""Forms of the job wizard. Its option fields are generated from ``workers.hyperparameters``: the
text a user types becomes the API's value, and the API's own checks say what is wrong."""

import json

from django import forms

from finetune_site.errors import InvalidRequest
from jobs_app.services import (
    hyperparameters_param,
    job_format_problem,
    job_grader_check,
    job_hyperparameters_resolve,
    job_integrations_check,
    job_model_name,
    job_suffix_check,
    job_version_check,
)
from workers.hyperparameters import (
    ADAPTERS,
    AUTO,
    BY_NAME,
    OBJECTIVES,
    OPTIONS,
    TEXT_OBJECTIVES,
    Choice,
    Context,
    option_problem,
    options_applying,
)

# The wizard makes language-model jobs (vision jobs come through the API): their options only.
TEXT_OPTIONS = [option for option in OPTIONS if set(option.objectives) & set(TEXT_OBJECTIVES)]
ADVANCED = [option for option in TEXT_OPTIONS if option.name != "adapter"]  # adapter sits with the main choices
FIELD_NAMES = [option.name for option in TEXT_OPTIONS]


def _applies_note(option) -> str:
    parts = []
    if not set(TEXT_OBJECTIVES) <= set(option.objectives):
        parts.append("/".join(option.objectives))
    if option.adapters != tuple(ADAPTERS):
        parts.append("/".join(option.adapters).replace("qlora", "QLoRA").replace("lora", "LoRA"))
    return f" Only for {' and '.join(parts)}." if parts else ""


def wizard_fields(texts: dict[str, str], errors: dict[str, str]) -> list[dict]:
    """The advanced panel: one field per option, in the spec's order, with what "auto" means."""
    fields = []
    for option in ADVANCED:
        choices = None
        if isinstance(option.kind, Choice):
            choices = [(AUTO, f"Auto: {option.auto_doc}"), *option.kind.labels.items()]
        value = texts.get(option.name, "")
        fields.append({"name": option.name, "label": option.label, "choices": choices,
                       "help": f"{option.help} Auto: {option.auto_doc}.{_applies_note(option)}",
                       "value": "" if value == AUTO and not choices else value, "error": errors.get(option.name, "")})
    return fields


def hyperparameters_from_texts(texts: dict[str, str]) -> dict:
    """Only the options the user set (not "auto"), as the API would receive them."""
    values = {name: BY_NAME[name].parse(text) for name, text in texts.items() if name in BY_NAME}
    return {name: value for name, value in values.items() if value != AUTO}


def _context(base_model, rows: int, objective: str, has_validation: bool) -> Context:
    return Context(objective=objective, parameters=base_model.parameters, context_length=base_model.context_length,
                   rows=rows, has_validation=has_validation)


def hyperparameter_error(name: str, text: str, *, base_model, rows: int, objective: str,
                         has_validation: bool) -> str:
    """The API's message for one field alone, or "" when it is valid."""
    value = BY_NAME[name].parse(text)
    return option_problem(name, value, _context(base_model, rows, objective, has_validation))


def hyperparameters_errors(texts: dict[str, str], *, base_model, rows: int, objective: str,
                           has_validation: bool) -> dict[str, str]:
    """Every field's own error, then the errors that only the combination shows (by field name)."""
    errors = {name: message for name, text in texts.items() if name in BY_NAME and (
        message := hyperparameter_error(name, text, base_model=base_model, rows=rows, objective=objective,
                                        has_validation=has_validation))}
    if not errors:
        try:
            job_hyperparameters_resolve(hyperparameters_from_texts(texts), objective=objective, base_model=base_model,
                                        rows=rows, has_validation=has_validation)
        except InvalidRequest as error:
            errors[(error.param or "").removeprefix(hyperparameters_param(objective) + ".") or "__all__"] = \
                error.message
    return errors


def review_rows(resolved: dict, *, objective: str) -> list[dict]:
    """The resolved options that apply to the job, as a person reads them, whether each was auto and
    the rule that chose it (``why``)."""
    auto = set(resolved.get("auto_resolved", []))
    return [{"name": option.name, "label": option.label, "value": option.display(resolved[option.name]),
             "auto": option.name in auto, "why": option.auto_doc}
            for option in options_applying(objective, resolved["adapter"]) if option.name in resolved]


TRACKER_CHOICES = [("tensorboard", "TensorBoard"), ("mlflow", "MLflow"), ("wandb", "Weights & Biases")]


def wizard_integrations(trackers: list[str], *, wandb_project: str = "", mlflow_experiment: str = "") -> list[dict]:
    """The API's ``integrations`` for the trackers ticked in the wizard (checked by ``job_integrations_check``)."""
    fields = {"wandb": {"project": wandb_project.strip()} if wandb_project.strip() else {},
              "mlflow": {"experiment": mlflow_experiment.strip()} if mlflow_experiment.strip() else {}}
    return [{"type": kind, **({kind: fields[kind]} if fields.get(kind) else {})} for kind in trackers]


class DatasetStepForm(forms.Form):
    training_file = forms.ChoiceField(label="Training dataset")
    validation_file = forms.ChoiceField(label="Validation dataset (optional)", required=False)

    def __init__(self, *args, datasets, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(d.id, f"{d.filename} · {d.row_count:,} rows · {d.id}") for d in datasets]
        self.fields["training_file"].choices = choices
        self.fields["validation_file"].choices = [("", "None"), *choices]

    def clean(self):
        data = super().clean()
        if data.get("validation_file") and data.get("validation_file") == data.get("training_file"):
            self.add_error("validation_file", "Pick a different file than the training dataset, or none.")
        return data


class ModelStepForm(forms.Form):
    model = forms.ChoiceField(label="Base model")
    objective = forms.ChoiceField(label="Objective", choices=[(k, OBJECTIVES[k]) for k in TEXT_OBJECTIVES],
                                  help_text="What the model learns from.")
    adapter = forms.ChoiceField(label="Adapter", choices=list(BY_NAME["adapter"].kind.labels.items()),
                                help_text=BY_NAME["adapter"].help)
    suffix = forms.CharField(label="Model name (optional)", required=False, max_length=64,
                             help_text="The tuned model's name in the registry (name@v1, name@v2, …); left empty, "
                                       "it is the base model's name + -ft, e.g. tiny-llama-ft.")
    version = forms.CharField(label="Version (optional)", required=False, max_length=32,
                              help_text="The tuned model's registry version, e.g. 1.4.0: newer than its name's "
                                        "newest; left empty, it is bumped by rule.")
    grader = forms.CharField(
        label="Grader (reinforcement and rlaif only)", required=False, widget=forms.Textarea(attrs={"rows": 6}),
        help_text='What scores each sampled answer, as OpenAI\'s graders (JSON), e.g. {"type": "string_check", '
                  '"input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}; for '
                  'rlaif, a score_model judge (a base model or one of your tuned models) with your rubric as its '
                  'input ranks the answers.')

    trackers = forms.MultipleChoiceField(
        label="Experiment trackers (optional)", required=False, choices=TRACKER_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        help_text="The run's metrics also go to these (the API's integrations): TensorBoard's event files are kept "
                  "with the job; MLflow logs to this platform's store (or the operator's server); W&B logs online "
                  "when the worker has a WANDB_API_KEY, else offline, its run kept with the job.")
    wandb_project = forms.CharField(label="W&B project", required=False, max_length=256,
                                    help_text="Required with Weights & Biases.")
    mlflow_experiment = forms.CharField(label="MLflow experiment (optional)", required=False, max_length=256,
                                        help_text="Left empty: finetune.")

    def __init__(self, *args, base_models, dataset=None, owner=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.dataset = dataset
        self.owner = owner
        self.base_models = {m.name: m for m in base_models}
        self.fields["model"].choices = [(m.name, m.name) for m in base_models]

    def clean(self):
        data = super().clean()
        problem = job_format_problem(self.dataset, data["objective"]) if self.dataset and "objective" in data else ""
        if problem:
            self.add_error("objective", problem)
        data["grader"] = self._grader(data)
        data["integrations"] = self._integrations(data)
        base = self.base_models.get(data.get("model"))
        if base is not None and data.get("suffix"):
            try:
                job_suffix_check(data["suffix"], base_model=base)
            except InvalidRequest as refused:
                self.add_error("suffix", refused.message)
        if base is not None and data.get("version") and "suffix" not in self.errors:
            try:  # the API's check: a semantic version newer than the name's newest
                job_version_check(data["version"].strip(), owner=self.owner,
                                  name=job_model_name(suffix=data.get("suffix") or "", base_model=base))
            except InvalidRequest as refused:
                self.add_error("version", refused.message)
        return data

    def _integrations(self, data: dict) -> list[dict]:
        """The ticked trackers, checked as the API checks them; an error sits next to the field it names."""
        try:
            return job_integrations_check(wizard_integrations(
                data.get("trackers") or [], wandb_project=data.get("wandb_project") or "",
                mlflow_experiment=data.get("mlflow_experiment") or ""))
        except InvalidRequest as refused:
            param = refused.param or ""
            field = ("wandb_project" if ".wandb." in param else "mlflow_experiment" if ".mlflow." in param
                     else "trackers")
            self.add_error(field, refused.message)
            return []

    def _grader(self, data: dict) -> dict:
        """The grader as the API receives it, checked as the API checks it (empty for other objectives)."""
        text = (data.get("grader") or "").strip()
        try:
            grader = json.loads(text) if text else None
        except ValueError as error:
            self.add_error("grader", f"is not JSON ({error}); write the grader as a JSON object")
            return {}
        if self.dataset is None or "objective" not in data:
            return grader or {}
        try:
            return job_grader_check(grader, objective=data["objective"], dataset=self.dataset)
        except InvalidRequest as refused:
            self.add_error("grader", refused.message)
            return {}
