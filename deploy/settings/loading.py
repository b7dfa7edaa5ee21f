"""Loading the settings: one YAML file (or its `apps:`), task-flag overrides, each value
checked by its type's validator, the inventory, TLS and processes parsed, the project
checked; anything wrong stops here, on one line naming the key, before any host."""

from __future__ import annotations

import dataclasses
import difflib
import os
import subprocess
from pathlib import Path
from typing import Any

from deploy.ignore import LinkOutside, check_links
from deploy.settings import background, tls
from deploy.settings import project as project_files
from deploy.settings.background import BackgroundError
from deploy.settings.inventory import InventoryError
from deploy.settings.inventory import parse as parse_inventory
from deploy.settings.schema import DB_PASSWORD, KEYS, REDIS_URL, SAMPLE_PROJECT, SCHEMA, Key, Settings
from deploy.settings.tls import TlsError
from deploy.settings.validators import SettingsError, control_character


def load(path: str | None = None, overrides: dict | None = None, commands: dict[str, str] | None = None) -> Settings:
    """Read the settings file (if any), apply task-flag overrides, validate everything."""
    path = path or os.environ.get("FABSTACK_SETTINGS") or ("fabstack.yaml" if Path("fabstack.yaml").exists() else "")
    raw: dict = {}
    if path:
        raw = _read_yaml(Path(path))
    for name, value in (overrides or {}).items():
        if value is not None:
            raw[name] = value
    return validate(raw, source=path or "defaults", commands=commands)


def load_apps(
    path: str | None = None, overrides: dict | None = None, app: str = "", commands: dict[str, str] | None = None
) -> list[Settings]:
    """The settings of each app the file describes (`apps:`, docs/apps.md), or of its one
    app, in the file's order; only app NAME with --app NAME. Task-flag overrides apply to
    every app. Apps that would clash on a host (a name, a bind, the default server) are
    refused here, naming both, before any host is touched."""
    path = path or os.environ.get("FABSTACK_SETTINGS") or ("fabstack.yaml" if Path("fabstack.yaml").exists() else "")
    raw = _read_yaml(Path(path)) if path else {}
    if APPS not in raw:
        one = load(path, overrides, commands)
        if app and app != one.app_name:
            where = path or "the defaults"
            raise SettingsError(
                f"--app {app!r} is not the app of {where} ({one.app_name!r}); give --app {one.app_name}"
            )
        return [one]
    described = _apps_of(raw, path)
    if app and app not in described:
        raise SettingsError(f"--app {app!r} is not in {path}; its apps: {', '.join(described)}")
    every = []
    for name, merged in described.items():
        for key, value in (overrides or {}).items():
            if value is not None:
                merged[key] = value
        every.append(validate(merged, source=f"{path} apps.{name}", commands=commands))
    _refuse_clashes(every)
    return [s for s in every if not app or s.app_name == app]


APPS = "apps"


def _apps_of(raw: dict, path: str) -> dict[str, dict]:
    """Each app's raw settings: the file's top-level keys, then the app's own over them.
    The first app is the default server unless a key says otherwise (every app's
    default would be true, and only one may be)."""
    shared = {k: v for k, v in raw.items() if k != APPS}
    apps = raw[APPS]
    if not isinstance(apps, dict) or not apps:
        raise SettingsError(f"{path}: apps must map each app's name to its settings, e.g. apps: {{shop: {{...}}}}")
    if "app_name" in shared:
        raise SettingsError(f"{path}: app_name with apps: each app's name is its key under apps; drop app_name")
    described = {}
    for index, (name, own) in enumerate(apps.items()):
        own = own or {}
        if not isinstance(own, dict):
            raise SettingsError(f"{path}: apps.{name} must be a mapping of settings, got {type(own).__name__}")
        if own.get("app_name", name) != name:
            raise SettingsError(
                f"{path}: apps.{name}.app_name is {own['app_name']!r}; an app's name is its key, drop it"
            )
        merged = {**shared, **own, "app_name": str(name)}
        merged.setdefault("default_server", index == 0)
        described[str(name)] = merged
    return described


def _refuse_clashes(apps: list[Settings]) -> None:
    """Two apps of one file that would want the same thing on a host they share."""
    for i, a in enumerate(apps):
        for b in apps[i + 1 :]:
            if not share_hosts(a, b):
                continue
            both = f"apps {a.app_name!r} and {b.app_name!r}"
            same = sorted(set(a.server_name.split()) & set(b.server_name.split()))
            if same:
                raise SettingsError(f"server_name {same[0]} is in {both}; give each app names of its own")
            if a.bind and a.bind == b.bind:
                raise SettingsError(
                    f"bind {a.bind} is in {both}; give each its own, or leave bind unset for its own unix socket"
                )
            if a.default_server and b.default_server:
                raise SettingsError(f"{both} both have default_server: true; a host has one, set it on one of them")


def share_hosts(a: Settings, b: Settings) -> bool:
    """a and b may land on one host: an inventory host in both (or no inventory: -H's)."""
    if not (a.inventory.members and b.inventory.members):
        return True
    addresses = {m.address for m in a.inventory.members}
    return any(m.address in addresses for m in b.inventory.members)


def _read_yaml(path: Path) -> dict:
    import yaml  # lazy: fab start-up should not pay for it when there is no file

    if not path.exists():
        raise SettingsError(f"settings file {path} does not exist; create it or drop --settings")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SettingsError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


# what people write for a key, from other tools and habits
ALIASES = {"domain": "server_name", "domains": "server_name", "hostname": "server_name", "port": "listen_port"}


def suggestion(name: str, known: list[str]) -> str:
    """The key name was probably meant as: spelled with dashes or another case
    (`server-name`), singular for plural (`worker` -> `workers`, before `worker_class`),
    a known alias, else the closest by edit distance (`wrokers`); "" when none is close."""
    plain = name.strip().lower().replace("-", "_").replace(" ", "_")
    for guess in (plain, plain + "s", plain.removesuffix("s"), ALIASES.get(plain, "")):
        if guess in known:
            return guess
    close = difflib.get_close_matches(plain, known, n=1, cutoff=0.75)
    if close:
        return close[0]
    prefixed = [k for k in known if k.split("_")[0] == plain.split("_")[0]]
    return prefixed[0] if prefixed else ""


def validate(raw: dict, source: str = "defaults", commands: dict[str, str] | None = None) -> Settings:
    values = {key.name: key.default for key in SCHEMA}
    for name, value in raw.items():
        key = KEYS.get(name)
        if key is None:
            close = suggestion(str(name), list(KEYS))
            hint = f" (did you mean {close}?)" if close else ""
            raise SettingsError(f"unknown setting {name!r} in {source}{hint}; see docs/settings.md")
        where = control_character(value, name)
        if where:  # a newline in a command or a name becomes a line of its own in a file root reads
            raise SettingsError(
                f"setting {where} holds a control character (a newline, tab or escape); use one line of plain text"
            )
        values[name] = _coerce(key, value)
    found = project_files.find(project_of(values["project_path"]), values["wsgi_module"], values["settings_module"])
    values["wsgi_module"], values["settings_module"] = found.wsgi_module, found.settings_module
    try:
        inventory = parse_inventory(values["hosts"], values["lb_method"])
    except InventoryError as exc:
        raise SettingsError(f"inventory: {exc}") from None
    secret_values = read_secrets(values["secrets"], commands)
    try:
        site_tls = tls.parse(values["tls"], values["server_name"])
    except TlsError as exc:
        raise SettingsError(str(exc)) from None
    if values["database"] == "postgresql" or inventory.with_role("db"):
        if DB_PASSWORD in values["secrets"]:
            raise SettingsError(f"secrets.{DB_PASSWORD}: fabstack makes the database password on the db host; drop it")
        # its value is made on the db host and read from there by provision (never from here)
        values["secrets"] = {**values["secrets"], DB_PASSWORD: "db:"}
    if values["redis"]:
        if REDIS_URL in values["secrets"]:
            raise SettingsError(
                f"secrets.{REDIS_URL}: fabstack makes Redis's URL on the db host with redis: true; drop it"
            )
        if inventory.members and not inventory.with_role("db"):
            raise SettingsError("setting redis=true: Redis runs on the inventory's db host; give a host the db role")
        values["secrets"] = {**values["secrets"], REDIS_URL: "redis:"}
    if values["preload_app"] and values["process_manager"] == "supervisor":
        raise SettingsError(
            "setting preload_app=true: supervisor cannot follow gunicorn's new master; "
            "use process_manager nohup or systemd, or preload_app: false"
        )
    settings = Settings(
        **values, source=source, inventory=inventory, secret_values=secret_values, site_tls=site_tls,
        project_note=found.note,
    )  # fmt: skip
    _check_project(settings)
    _check_hooks(settings)
    try:
        return dataclasses.replace(
            settings,
            background=background.parse(values["processes"], settings.project),
            jobs=background.parse_schedule(values["schedule"], settings.project),
        )
    except BackgroundError as exc:
        raise SettingsError(str(exc)) from None


def read_secrets(spec: dict[str, str], commands: dict[str, str] | None = None) -> dict[str, str]:
    """Each secret's value from its environment variable, file or command on this machine
    (a command's output kept in commands, so a run asks a password manager once). Errors
    name the secret and its source, never a value."""
    commands = {} if commands is None else commands
    values = {}
    for name, source in spec.items():
        kind, _, where = source.partition(":")
        if kind == "cmd":
            value = commands[where] if where in commands else run_secret_command(name, where)
            commands[where] = value
        elif kind == "env":
            value = os.environ.get(where, "").strip()
            if not value:
                raise SettingsError(
                    f"secrets.{name}: environment variable {where} is not set; export it or use file:PATH"
                )
        else:
            path = Path(where).expanduser()
            if not path.is_file():
                raise SettingsError(
                    f"secrets.{name}: file {where} does not exist; create it (chmod 600) or use env:VAR"
                )
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise SettingsError(f"secrets.{name}: {where} is readable by others (mode {mode:o}); chmod 600 {where}")
            value = path.read_text().strip()
            if not value:
                raise SettingsError(f"secrets.{name}: file {where} is empty; put the secret in it")
        values[name] = value
    return values


SECRET_COMMAND_WAIT = 120  # seconds a password manager may take (one that asks to be unlocked)


def run_secret_command(name: str, command: str) -> str:
    """A cmd: secret: the command's standard output, run by the shell here. Its standard
    error and exit code make the one-line error when it fails; its output never does."""
    try:
        done = subprocess.run(
            command, shell=True, capture_output=True, text=True, timeout=SECRET_COMMAND_WAIT, check=False
        )
    except subprocess.TimeoutExpired:
        raise SettingsError(
            f"secrets.{name}: the command {command!r} did not finish within {SECRET_COMMAND_WAIT}s"
        ) from None
    said = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    if done.returncode:
        why = f": {said[-1]}" if said else ""
        raise SettingsError(f"secrets.{name}: the command {command!r} exited {done.returncode}{why}")
    value = done.stdout.strip()
    if not value:
        raise SettingsError(f"secrets.{name}: the command {command!r} printed nothing; it must print the secret")
    return value


def _coerce(key: Key, value: Any) -> Any:
    if int in (key.type if isinstance(key.type, tuple) else (key.type,)) and _is_int_text(value):
        value = int(value)
    if key.type is bool and value in ("true", "false"):
        value = value == "true"
    if key.type is list and isinstance(value, str):
        value = [item for item in value.split(",") if item]
    if (isinstance(value, bool) and key.type is not bool) or not isinstance(value, key.type):
        raise SettingsError(f"setting {key.name}={value!r}: expected {type_name(key)}, got {type(value).__name__}")
    if key.check:
        fix = key.check(value)
        if fix:
            raise SettingsError(f"setting {key.name}={value!r} is invalid: {fix}")
    return value


def _is_int_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


def type_name(key: Key) -> str:
    types = key.type if isinstance(key.type, tuple) else (key.type,)
    return " or ".join(t.__name__ for t in types)


def project_of(project_path: str) -> Path:
    return Path(project_path).expanduser() if project_path else SAMPLE_PROJECT


def _check_hooks(settings: Settings) -> None:
    """Each hook an executable file of the project, its path leading nowhere outside it."""
    project = settings.project.resolve()
    for name, path in settings.hooks.items():
        script = (settings.project / path).resolve()
        if not script.is_relative_to(project):
            raise SettingsError(f"hooks.{name}: {path} leads out of the project (to {script}); put the script in it")
        if not script.is_file() or not os.access(script, os.X_OK):
            raise SettingsError(
                f"hooks.{name}: {path} is not an executable file in {settings.project}; create it and chmod +x {path}"
            )


def _check_project(settings: Settings) -> None:
    project = settings.project
    if not project.is_dir():
        raise SettingsError(
            f"setting project_path={str(project)!r}: no such directory; point it at your Django project"
        )
    if not (project / "manage.py").is_file():
        raise SettingsError(f"setting project_path={str(project)!r}: no manage.py there; point it at the project root")
    try:
        check_links(project, settings.static_dir, settings.exclude)
    except LinkOutside as exc:
        raise SettingsError(str(exc)) from None
    if not settings.wsgi_module:
        raise SettingsError(
            f"setting wsgi_module is empty and {project}/manage.py names no DJANGO_SETTINGS_MODULE; "
            "set wsgi_module to your project's module:callable, e.g. mysite.wsgi:application"
        )
    module = settings.wsgi_module.split(":")[0]
    if not project_files.module_exists(project, module):
        raise SettingsError(
            f"setting wsgi_module={settings.wsgi_module!r}: {module} not found in {project}; "
            "set wsgi_module to your project's module:callable"
        )
    try:
        project_files.requirements(project, settings.requirements)
    except project_files.RequirementsError as exc:
        raise SettingsError(f"setting requirements={settings.requirements!r}: {exc}") from None
    if not project_files.module_exists(project, settings.project_settings):
        raise SettingsError(
            f"setting settings_module={settings.project_settings!r}: {settings.project_settings} not found in "
            f"{project}; set settings_module to your project's settings module, e.g. mysite.settings.production"
        )
