"""Settings: one YAML file, defaults, and validation that runs before any host is touched.

Each setting is declared once, as a field of Settings (schema.py) with its default, its
meaning and the validator of its type (validators.py); docs/settings.md is generated
from them (a test fails when they differ), so the reference cannot drift. loading.py
reads and checks a file; inventory.py, tls.py and background.py parse the settings of
those steps (mirroring deploy/steps/ and deploy/remote/).
"""

from deploy.settings.loading import APPS, load, load_apps, read_secrets, suggestion, type_name, validate
from deploy.settings.schema import (
    DB_PASSWORD,
    GENERATED_SETTINGS,
    KEYS,
    REDIS_URL,
    REPO,
    SAMPLE_PROJECT,
    SCHEMA,
    TEMPLATES,
    Key,
    Settings,
)
from deploy.settings.validators import LOGLEVELS, RESERVED_ENV, WORKER_CLASSES, SettingsError

__all__ = [
    "APPS", "DB_PASSWORD", "GENERATED_SETTINGS", "KEYS", "LOGLEVELS", "REDIS_URL", "REPO", "RESERVED_ENV",
    "SAMPLE_PROJECT", "SCHEMA", "TEMPLATES", "WORKER_CLASSES", "Key", "Settings", "SettingsError", "load",
    "load_apps", "read_secrets", "suggestion", "type_name", "validate",
]  # fmt: skip
