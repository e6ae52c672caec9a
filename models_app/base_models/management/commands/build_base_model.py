from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from models_app.base_models.models import BaseModel
from models_app.base_models.services import base_model_builtin_ensure, base_model_local_path


class Command(BaseCommand):
    help = "Build a built-in base model's files now (they are also built on first use)."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", default="tiny-llama")

    def handle(self, *args, name: str, **options):
        base_model_builtin_ensure()
        base = BaseModel.objects.filter(name=name).first()
        if base is None or not base.is_builtin:
            raise CommandError(f"{name!r} is not a built-in base model")
        path = Path(base_model_local_path(base))
        self.stdout.write(f"{name} is ready at {path}")
