"""Rendering: every file fabstack writes to a host comes from a Jinja2 template.

A user's templates_dir is searched first, so a file of the same name there replaces
ours; undefined variables are errors, never empty strings in a live config.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from deploy.settings import REPO, SettingsError

OWN_TEMPLATES = REPO / "templates"


def environment(templates_dir: str = "") -> jinja2.Environment:
    paths = [templates_dir, str(OWN_TEMPLATES)] if templates_dir else [str(OWN_TEMPLATES)]
    if templates_dir and not Path(templates_dir).is_dir():
        raise SettingsError(f"setting templates_dir={templates_dir!r}: no such directory")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(paths),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(jinja: jinja2.Environment, name: str, **context) -> str:
    """Render template name; any template error becomes a one-line SettingsError."""
    try:
        return jinja.get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise SettingsError(
            f"template {exc.filename or name} line {exc.lineno}: {exc.message}; fix the template"
        ) from None
    except jinja2.TemplateError as exc:
        raise SettingsError(f"template {name}: {exc}; fix the template or the setting it uses") from None
