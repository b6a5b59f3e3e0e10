"""The web console at /ui (master/ui/views.py): server-rendered Jinja2 pages, htmx for partial updates."""

from master.ui.views import bp

__all__ = ["bp"]
