"""Rendering: every file fabstack writes to a host comes from a Jinja2 template.

A user's templates_dir is searched first, so a file of the same name there replaces
ours; undefined variables are errors, never empty strings in a live config.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2
import jinja2.meta

from deploy.settings import TEMPLATES, SettingsError

OWN_TEMPLATES = TEMPLATES


@cache
def variables(name: str) -> frozenset[str]:
    """The variables fabstack's own template name uses: what its step passes, and all a
    user's template of that name may use. Read from the template itself, so a new
    template is its file alone; parsed only when asked (a user's template, a test)."""
    jinja = environment()
    assert jinja.loader is not None  # environment() always gives one
    source, filename, _ = jinja.loader.get_source(jinja, name)
    return frozenset(jinja2.meta.find_undeclared_variables(jinja.parse(source, name, filename)))


def names() -> list[str]:
    """Every template fabstack renders (the files of templates/, the sample project aside)."""
    return sorted(p.name for p in Path(OWN_TEMPLATES).glob("*.j2"))


def check(templates_dir: str = "", every: bool = False) -> None:
    """Parse the templates of templates_dir (every: ours too) and refuse variables fabstack
    does not pass, so a broken user template stops the run before any host is contacted.

    Only a user's own files are read at each run: ours are checked by the test suite, and
    parsing all of them at every task had grown to a third of a no-op run (~0.18 s a task).
    """
    jinja = environment(templates_dir)
    for name in names():
        if not every and not (templates_dir and (Path(templates_dir) / name).is_file()):
            continue
        try:
            assert jinja.loader is not None  # environment() always gives one
            source, filename, _ = jinja.loader.get_source(jinja, name)
            used = jinja2.meta.find_undeclared_variables(jinja.parse(source, name, filename))
        except jinja2.TemplateSyntaxError as exc:
            raise SettingsError(
                f"template {exc.filename or name} line {exc.lineno}: {exc.message}; fix the template"
            ) from None
        known = variables(name)
        unknown = sorted(used - known)
        if unknown:
            raise SettingsError(
                f"template {filename}: {{{{ {unknown[0]} }}}} is not a variable fabstack passes; "
                f"use one of: {', '.join(sorted(known))}"
            )


@cache
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
    """Render template name; any template error becomes a one-line SettingsError (a
    variable the step did not pass among them: the environment's undefined is strict)."""
    try:
        return jinja.get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise SettingsError(
            f"template {exc.filename or name} line {exc.lineno}: {exc.message}; fix the template"
        ) from None
    except jinja2.TemplateError as exc:
        raise SettingsError(f"template {name}: {exc}; fix the template or the setting it uses") from None
