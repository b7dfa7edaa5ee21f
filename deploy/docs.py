"""docs/settings.md is generated from deploy.settings.SCHEMA (python -m deploy.docs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from deploy.settings import REPO, SCHEMA, type_name

HEADER = """# Settings reference

fabstack reads one YAML file: `fabstack.yaml` in the current directory, or the file
named by `--settings PATH` or `$FABSTACK_SETTINGS`. Every key is optional; unknown keys
and invalid values stop the run before any host is touched, with a one-line error
that names the key and the fix. Common keys are also task flags
(`fab provision --workers 4`), which win over the file.

Several apps in one file: the keys below at the top are every app's, and `apps:` maps
each app's name to its own keys ([apps.md](apps.md)); `--app NAME` picks one.

This page is generated from `deploy/settings/schema.py` by `python -m deploy.docs`; a test
fails when it is out of date.

Example:

```yaml
app_name: shop
project_path: ~/code/shop
wsgi_module: shop.wsgi:application
server_name: shop.example.com www.shop.example.com
workers: 4
worker_class: gevent
```

| key | type | default | meaning |
|---|---|---|---|
"""


def settings_reference() -> str:
    rows = [f"| `{key.name}` | {type_name(key)} | `{json.dumps(key.default)}` | {key.help} |" for key in SCHEMA]
    return HEADER + "\n".join(rows) + "\n"


TARGET = REPO / "docs" / "settings.md"

if __name__ == "__main__":
    Path(TARGET).write_text(settings_reference())
    sys.stdout.write(f"wrote {TARGET}\n")
