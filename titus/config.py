"""Moved to shared/config.py (the parser is not the CLI's); kept so existing imports keep working."""

from shared.config import ConfigError as ConfigError
from shared.config import get_float as get_float
from shared.config import get_int as get_int
from shared.config import load_env_file as load_env_file
from shared.config import merged as merged
