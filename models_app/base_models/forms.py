from django import forms


class BaseModelForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What you will pick as the model of a job, a chat or an "
                                                     "evaluation, e.g. my-qwen-0.5b.")
    source = forms.CharField(required=False, max_length=500,
                             help_text="A directory on the workers' shared storage (/models/qwen2.5-0.5b) or a hub "
                                       "id (Qwen/Qwen2.5-0.5B). Leave empty to upload an archive instead.")
    revision = forms.CharField(required=False, max_length=200, help_text="A hub id's branch, tag or commit (optional).")
    file = forms.FileField(required=False, label="Archive",
                           help_text="A .tar.gz or .zip of a model directory (config.json, tokenizer, weights).")
