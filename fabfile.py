"""fab in the checkout: the same tasks as the installed `fabstack` command (deploy/tasks.py)."""

from deploy.tasks import ns

__all__ = ["ns"]
