from django import forms

from webhooks_app.models import EVENT_TYPES

EVENT_CHOICES = [(name, f"{name} — {text}") for name, text in EVENT_TYPES.items()]


class WebhookCreateForm(forms.Form):
    url = forms.CharField(label="URL", max_length=2000,
                          widget=forms.URLInput(attrs={"placeholder": "https://example.com/hooks/finetune"}))
    events = forms.MultipleChoiceField(choices=EVENT_CHOICES, widget=forms.CheckboxSelectMultiple,
                                       initial=[name for name in EVENT_TYPES if name.startswith("fine_tuning.")])


class NotificationForm(forms.Form):
    email = forms.BooleanField(label="Email me", required=False)
    slack_url = forms.CharField(label="Slack incoming-webhook URL", max_length=2000, required=False,
                                widget=forms.URLInput(attrs={"placeholder": "https://hooks.slack.com/services/…"}))
    events = forms.MultipleChoiceField(choices=EVENT_CHOICES, widget=forms.CheckboxSelectMultiple, required=False)
