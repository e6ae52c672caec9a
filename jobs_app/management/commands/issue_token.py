from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts_app.services import api_key_replace
from finetune_site.errors import InvalidRequest


class Command(BaseCommand):
    help = ("Print a new API key for USERNAME (creating the user if needed). The user's earlier key of the "
            "same name stops working; keys made on the API keys page are kept.")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="the key's name (default: cli)")
        parser.add_argument("--expires-in-days", type=int, default=None, help="expiry (default: never)")

    def handle(self, *args, username: str, name: str, expires_in_days: int | None, **options):
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be 1 or more")
        user, created = get_user_model().objects.get_or_create(username=username)
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        try:
            _, raw_key = api_key_replace(user=user, name=name, expires_at=expires_at)
        except InvalidRequest as error:
            raise CommandError(error.message) from None
        if created:
            self.stderr.write(f"Created user {username}")
        self.stdout.write(raw_key)
