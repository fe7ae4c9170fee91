"""``python manage.py notify USERNAME EVENT [--data JSON]``: send a notification from a
management command — synchronous code with no event loop, like a Celery task or a cron job."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from shop.notify import publisher


class Command(BaseCommand):
    help = "Send a notification to every connection of a user (needs REDIS_URL)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("event")
        parser.add_argument("--data", default="null", help="JSON data")

    def handle(self, *args: Any, **options: Any) -> None:
        if publisher is None:
            raise CommandError(
                "set REDIS_URL: outside the ASGI server there is no hub to hand it to"
            )
        try:
            user = get_user_model().objects.get(username=options["username"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user {options['username']!r}") from None
        data = json.loads(options["data"])
        notification_id = publisher.notify_user(str(user.pk), options["event"], data)
        self.stdout.write(notification_id)
