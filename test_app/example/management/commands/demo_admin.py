"""`manage.py demo_admin`: make the example's admin login, with a new password each run."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    """Create the superuser `admin` (or reset its password) and print the password."""

    help = "Create or reset the example's superuser 'admin' with a new random password."

    def handle(self, *args, **options) -> None:
        """Set a fresh password on `admin` and say how to log in."""
        password = secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(
            username="admin", defaults={"email": "admin@example.com"}
        )
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        self.stdout.write(f"Admin login for this run: user admin, password {password}")
