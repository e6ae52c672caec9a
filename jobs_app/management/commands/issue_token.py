from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Print a new API token for USERNAME (creating the user if needed); the old one stops working."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username: str, **options):
        user, created = get_user_model().objects.get_or_create(username=username)
        Token.objects.filter(user=user).delete()
        token = Token.objects.create(user=user)
        if created:
            self.stderr.write(f"Created user {username}")
        self.stdout.write(token.key)
