"""The Django app config of leek: registers the system checks. Loaded by every process."""

from django.apps import AppConfig


class LeekConfig(AppConfig):
    """leek, the Django app."""

    name = "leek"
    verbose_name = "leek tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the checks."""
        from leek import checks  # noqa: F401 - registers on import
