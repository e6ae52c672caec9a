from pathlib import Path

from django.core.management.base import BaseCommand

from workers.sample_data import classification_write


class Command(BaseCommand):
    help = "Write a small learnable JSONL data set (classify a sentence as sports, food, weather or music)."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--rows", type=int, default=48)
        parser.add_argument("--format", choices=["chat", "prompt_completion"], default="chat")
        parser.add_argument("--seed", type=int, default=0, help="another seed gives other sentences (a validation set)")

    def handle(self, *args, path: Path, rows: int, format: str, seed: int, **options):
        classification_write(path, rows, seed=seed, chat=format == "chat")
        self.stdout.write(f"Wrote {rows} {format} rows to {path}")
