from django.db import models

BUILTIN_PREFIX = "builtin:"


class BaseModel(models.Model):
    """A model jobs start from: built in, a local path or a Hugging Face hub id."""

    name = models.CharField(max_length=200, unique=True, help_text="The id callers use, e.g. tiny-llama.")
    source = models.CharField(
        max_length=500, help_text="builtin:NAME, an absolute local path, or a hub id like org/model."
    )
    family = models.CharField(max_length=50, default="llama")
    chat_template = models.TextField(blank=True, help_text="Empty: the tokenizer's own template.")
    parameters = models.PositiveBigIntegerField(null=True, blank=True)
    context_length = models.PositiveIntegerField(default=2048)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        db_table = "models_app_basemodel"  # the table it had when it lived in models_app

    def __str__(self) -> str:
        return self.name

    @property
    def is_builtin(self) -> bool:
        return self.source.startswith(BUILTIN_PREFIX)
