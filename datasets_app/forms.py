"""The dataset page's form to prepare a new version: the operations of
``POST /v1/datasets/{id}/prepare``, as fields. The form only parses; ``dataset_prepare`` checks, and
its errors come back next to the field they name."""

import re

from django import forms

from finetune_site.errors import InvalidRequest
from workers.cleaning import UNICODE_FORMS
from workers.formats import PREFERENCE
from workers.prepare import CONVERSIONS

FORMAT_LABELS = {"chat": "chat messages", "prompt_completion": "prompt/completion", "text": "plain text"}
_PARAM = re.compile(r"^operations\[(\d+)\]\.(\w+)$")


class PrepareForm(forms.Form):
    convert = forms.ChoiceField(required=False, label="Convert to")
    clean_text = forms.BooleanField(required=False, label="Clean the text",
                               help_text="repair mojibake, normalise Unicode, remove control characters, tidy spaces")
    clean_unicode = forms.ChoiceField(required=False, label="Unicode form", initial="nfc",
                                      choices=[*((f, f.upper()) for f in UNICODE_FORMS), ("", "leave as is")],
                                      help_text="NFKC also folds ligatures, full-width letters and units")
    clean_mojibake = forms.BooleanField(required=False, initial=True, label="Repair mojibake (ftfy)")
    clean_control = forms.BooleanField(required=False, initial=True, label="Remove control characters")
    clean_whitespace = forms.BooleanField(required=False, initial=True, label="Normalise whitespace")
    dedup = forms.BooleanField(required=False, label="Remove duplicate rows")
    dedup_near = forms.BooleanField(required=False, label="Near duplicates too (MinHash)")
    near_threshold = forms.FloatField(required=False, initial=0.85, label="Similarity at least",
                                      help_text="0.1 to 1; 0.85 catches rewordings of a row")
    mask_pii = forms.BooleanField(required=False, label="Mask personal data",
                                  help_text="e-mail, phone and card numbers, IBAN, IP addresses, API keys")
    language = forms.BooleanField(required=False, label="Keep rows in these languages")
    language_keep = forms.CharField(required=False, label="Languages", initial="en",
                                    help_text="ISO 639-1 codes, separated by commas: en, de, fr")
    language_confidence = forms.FloatField(required=False, initial=0.5, label="Detected with confidence at least",
                                           help_text="0 to 1")
    quality = forms.BooleanField(required=False, label="Score every row's quality")
    min_score = forms.FloatField(required=False, initial=0.0, label="Keep rows scoring at least",
                                 help_text="0 to 1; 0 only scores (the version's lineage shows the scores)")
    filter_length = forms.BooleanField(required=False, label="Keep rows of a length")
    min_chars = forms.IntegerField(required=False, label="At least (characters)")
    max_chars = forms.IntegerField(required=False, label="At most (characters)")
    min_tokens = forms.IntegerField(required=False, label="At least (tokens)")
    max_tokens = forms.IntegerField(required=False, label="At most (tokens)")
    token_model = forms.ChoiceField(required=False, label="Counted with the tokenizer of")
    chunk = forms.BooleanField(required=False, label="Cut long documents into chunks",
                               help_text="on sentence boundaries, by the tokenizer chosen above; plain text rows")
    chunk_max_tokens = forms.IntegerField(required=False, initial=512, label="Chunk at most (tokens)")
    chunk_overlap = forms.IntegerField(required=False, initial=64, label="Overlap (tokens)",
                                       help_text="whole sentences shared by consecutive chunks, up to this many tokens")
    split = forms.BooleanField(required=False, label="Split off a validation set")
    validation_share = forms.FloatField(required=False, initial=0.1, label="Validation share",
                                        help_text="between 0 and 1: 0.1 keeps a tenth of the rows for validation")
    seed = forms.IntegerField(required=False, initial=42, label="Seed",
                              help_text="the same seed gives the same split")

    def __init__(self, *args, dataset, base_models, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dataset = dataset
        self.fields["token_model"].choices = [(b.name, b.name) for b in base_models]
        current = dataset.training_format or dataset.format
        self.can_convert = dataset.format != PREFERENCE
        self.can_count_tokens = bool(dataset.training_format) and bool(base_models)
        self.fields["convert"].choices = [("", f"keep {FORMAT_LABELS.get(current, current)}")] + [
            (name, FORMAT_LABELS[name]) for name in CONVERSIONS if name != current]
        if not self.can_convert:
            del self.fields["convert"]
        if not self.can_count_tokens:
            for name in ("min_tokens", "max_tokens", "token_model", "chunk", "chunk_max_tokens", "chunk_overlap"):
                del self.fields[name]
        self.sources: list[dict[str, str]] = []  # per operation: the API's key → this form's field

    def clean(self) -> dict:
        data = super().clean()
        self.operations = []
        self.sources = []
        if data.get("convert"):
            self._add({"op": "convert", "to": data["convert"]}, "convert", to="convert")
        if data.get("clean_text"):
            op = {"op": "clean", "unicode": data.get("clean_unicode") or None,
                  "mojibake": bool(data.get("clean_mojibake")), "control_chars": bool(data.get("clean_control")),
                  "whitespace": bool(data.get("clean_whitespace"))}
            self._add(op, "clean_text", unicode="clean_unicode", mojibake="clean_mojibake",
                      control_chars="clean_control", whitespace="clean_whitespace")
        if data.get("dedup"):
            near = bool(data.get("dedup_near"))
            op = {"op": "dedup", "near": near}
            if near and data.get("near_threshold") is not None:
                op["near_threshold"] = data["near_threshold"]
            self._add(op, "dedup", near_threshold="near_threshold", near="dedup_near")
        if data.get("mask_pii"):
            self._add({"op": "mask_pii"}, "mask_pii", kinds="mask_pii")
        if data.get("language"):
            op = {"op": "language", "keep": [c.strip() for c in (data.get("language_keep") or "").split(",")
                                             if c.strip()]}
            if data.get("language_confidence") is not None:
                op["min_confidence"] = data["language_confidence"]
            self._add(op, "language", keep="language_keep", min_confidence="language_confidence")
        if data.get("quality"):
            op = {"op": "quality", "min_score": data["min_score"] if data.get("min_score") is not None else 0.0}
            self._add(op, "quality", min_score="min_score")
        if data.get("filter_length"):
            op = {"op": "filter_length"}
            bounds = {k: data.get(k) for k in ("min_chars", "max_chars", "min_tokens", "max_tokens")
                      if data.get(k) is not None}
            if not bounds:
                self.add_error("filter_length", "give at least one bound, in characters or tokens")
            op.update(bounds)
            if "min_tokens" in bounds or "max_tokens" in bounds:
                op["model"] = data.get("token_model")
            self._add(op, "filter_length", **{k: k for k in bounds}, model="token_model", template="token_model")
        if data.get("chunk"):
            op = {"op": "chunk", "model": data.get("token_model"), "max_tokens": data.get("chunk_max_tokens"),
                  "overlap_tokens": data.get("chunk_overlap") or 0}
            self._add(op, "chunk", model="token_model", max_tokens="chunk_max_tokens",
                      overlap_tokens="chunk_overlap")
        if data.get("split"):
            op = {"op": "split", "seed": 42 if data.get("seed") is None else data["seed"]}
            if data.get("validation_share") is not None:
                op["validation_share"] = data["validation_share"]
            self._add(op, "split", validation_share="validation_share", seed="seed")
        if not self.operations and not self.errors:
            raise forms.ValidationError("Choose at least one operation: the new version would be a plain copy.")
        return data

    def _add(self, operation: dict, field: str, **sources: str) -> None:
        """One operation; ``field`` is the field that asks for it, ``sources`` the fields of its keys."""
        self.operations.append(operation)
        self.sources.append({"op": field, **sources})

    def service_error(self, error: InvalidRequest) -> None:
        """Put the service's refusal next to the field it names (``operations[i].key``), else on top."""
        match = _PARAM.match(error.param or "")
        field = None
        if match and int(match.group(1)) < len(self.sources):
            field = self.sources[int(match.group(1))].get(match.group(2))
        if field not in self.fields:
            self.add_error(None, error.message)
            return
        # "operations[2].near_threshold must be …" reads, next to its field, as "must be …"
        self.add_error(field, re.sub(r"^operations\[\d+\]\.?\w*:?\s*", "", error.message) or error.message)


class ImageSplitForm(forms.Form):
    """The page's form to split a vision dataset: a stratified train/validation version, as
    ``POST /v1/datasets/<id>/prepare`` with ``[{"op": "split", ...}]``."""

    validation_share = forms.FloatField(label="Validation share", min_value=0.05, max_value=0.5, initial=0.2,
                                        help_text="of each class's images, e.g. 0.2")
    seed = forms.IntegerField(label="Seed", min_value=0, initial=42)

    def clean(self) -> dict:
        data = super().clean()
        self.operations = [{"op": "split", "validation_share": data.get("validation_share"),
                            "seed": data.get("seed")}] if not self.errors else []
        return data

    def service_error(self, error: InvalidRequest) -> None:
        self.add_error(None, error.message)
