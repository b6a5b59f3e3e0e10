"""Moved to shared/logs.py (every component logs the same way); kept so existing imports keep working."""

from shared.logs import JsonFormatter as JsonFormatter
from shared.logs import configure as configure
