"""The shared config file: one INI file for the whole network, read into typed sections.

The file has a ``[global]`` section, one section per service named by its id, and optional
``[service::group]`` sub-sections. Every key is declared once, as a :class:`Key`, by srcore
(:data:`GLOBAL_KEYS`, :data:`SERVICE_KEYS`) or by a service's manifest. Loading checks the
whole file against those declarations and reports every problem at once, each naming file,
line, section and key, because an operator fixing a config wants the full list, not one
traceback per attempt.

Values may be overridden from the environment (``SRCORE__TODO__DATABASE_URL``) and read
from files (``secret-key-file = /run/secrets/todo``), for containers and secret stores.
Every value remembers where it came from. Nothing is read at import time.

The package root is the API; the modules behind it are :mod:`~srcore.config.keys`
(declaring a key, reading and writing its values), :mod:`~srcore.config.declarations`
(srcore's own keys), :mod:`~srcore.config.scan` (the INI text, with line numbers),
:mod:`~srcore.config.loader` (finding and loading the file), :mod:`~srcore.config.sections`
(the loaded result) and :mod:`~srcore.config.problems` (what is wrong with it).
"""

from __future__ import annotations

from srcore.config.declarations import GLOBAL_KEYS, SERVICE_KEYS
from srcore.config.declarations import MIN_SECRET_KEY_LENGTH as MIN_SECRET_KEY_LENGTH
from srcore.config.keys import (
    ENV_PREFIX,
    KEY_TYPES,
    Key,
    KeyType,
    env_name,
    format_duration,
    format_value,
    parse_duration,
    parse_value,
)
from srcore.config.loader import DEFAULT_PATHS as DEFAULT_PATHS
from srcore.config.loader import FILE_SUFFIX as FILE_SUFFIX
from srcore.config.loader import MAX_VALUE_FILE_SIZE as MAX_VALUE_FILE_SIZE
from srcore.config.loader import find_config_path, load_config, read_config
from srcore.config.masking import mask_url, mask_urls
from srcore.config.problems import ConfigError, Problem
from srcore.config.sections import Config, Section

__all__ = [
    "ENV_PREFIX",
    "GLOBAL_KEYS",
    "KEY_TYPES",
    "SERVICE_KEYS",
    "Config",
    "ConfigError",
    "Key",
    "KeyType",
    "Problem",
    "Section",
    "env_name",
    "find_config_path",
    "format_duration",
    "format_value",
    "load_config",
    "mask_url",
    "mask_urls",
    "parse_duration",
    "parse_value",
    "read_config",
]
