"""The edges of the settings (no host): every string setting refuses control characters,
and every one that reaches a file root writes on a host (an nginx site, pg_hba.conf, a
unit, the app's environment, a cron file) refuses the characters that would end its
value there, before any host is touched."""

from __future__ import annotations

import pytest

from deploy import settings as s

HOSTILE = [
    "a\nb",
    "a\rb",
    "x\x1b[31m",
    "a;b",
    "a{b}",
    "a}",
    "x.example\\",
    "../x",
    "a'b",
    'a"b',
    "$(id)",
    "a`id`",
    "a b|c",
    "a&b",
]
CONTROL = ["a\nb", "a\rb", "x\x1b[31m", "a\tb", "a\x00b"]
# settings that stay on this machine (where fab reads the project and the templates) take
# any plain text; every other string setting takes only its own grammar
LOCAL = {"project_path", "templates_dir"}
STRINGS = [key.name for key in s.SCHEMA if key.type is str or key.type == (int, str)]


@pytest.mark.parametrize("name", STRINGS)
def test_a_string_setting_refuses_what_would_break_out_of_its_place(name):
    accepted = []
    for value in CONTROL if name in LOCAL else HOSTILE:
        try:
            s.validate({name: value})
        except s.SettingsError as exc:
            assert name in str(exc) and "\n" not in str(exc), exc  # one line naming the key
        else:
            accepted.append(value)
    assert not accepted, f"{name} accepted {accepted}"


@pytest.mark.parametrize(
    ("raw", "expect"),
    [
        ({"hosts": [{"host": "root@10.0.0.5", "address": "0.0.0.0/0 trust\nhost all all 0.0.0.0/0 trust\n#"}]},
         "setting hosts[0].address holds a control character"),
        ({"hosts": [{"host": "root@10.0.0.5", "address": "0.0.0.0/0"}]},
         "address='0.0.0.0/0'; use an IP address or a host name"),
        ({"schedule": {"report": {"command": "true\n* * * * * root touch /pwned", "every": "daily"}}},
         "setting schedule.report.command holds a control character"),
        ({"processes": {"worker": {"command": "python -m worker\nExecStartPre=/bin/sh"}}},
         "setting processes.worker.command holds a control character"),
        ({"lb_method": "hash", "lb_hash_key": "$request_uri consistent; } server { listen 81; root /etc; location / {"},
         "lb_hash_key="),
        ({"static_dir": "../../shared/data"}, "static_dir='../../shared/data' is invalid: use a path relative"),
        ({"static_dir": "/srv/django/shared/data"}, "static_dir='/srv/django/shared/data' is invalid"),
        ({"server_name": "x.example\\"}, "'x.example\\\\' is not a domain name; use domain names separated by spaces"),
        ({"server_name": "~^(?<sub>.+)\\.example\\.com$"}, "is not a domain name"),
        ({"allowed_hosts": ["ok.example", "evil\nDJANGO_DEBUG=1"]}, "setting allowed_hosts[1] holds a control character"),
        ({"allowed_hosts": ["a b"]}, "'a b' is not a host"),
        ({"settings_module": "mysite.settings; import os"}, "settings_module="),
        ({"bind": "unix:/run/x.sock; rm -rf /"}, "bind="),
        ({"static_url": "/static/../"}, "static_url='/static/../' is invalid"),
        ({"env": {"NOTE": "a\x1b]0;title\x07"}}, "setting env.NOTE holds a control character"),
        ({"system_packages": ["libpq-dev; rm -rf /"]}, "is not a Debian package name"),
        ({"system_packages": ["build-essential\npython3-dev"]}, "setting system_packages[0] holds a control character"),
        ({"requirements": "../other/requirements.txt"}, "requirements='../other/requirements.txt' is invalid"),
    ],
)  # fmt: skip
def test_each_break_of_the_edges_is_refused_naming_the_key(raw, expect):
    with pytest.raises(s.SettingsError) as refused:
        s.validate(raw)
    assert expect in str(refused.value), refused.value


@pytest.mark.parametrize(
    "raw",
    [
        {"server_name": "example.com www.example.com *.example.org .example.net mail.* 203.0.113.5 _"},
        {"allowed_hosts": [".example.com", "203.0.113.5", "[2001:db8::1]", "*", "localhost"]},
        {"lb_method": "hash", "lb_hash_key": "$cookie_sessionid$http_user_agent"},
        {"static_dir": "assets/collected"},
        {"settings_module": "sample.settings"},  # the sample project's; a settings package's: test_settings.py
        {"bind": "unix:/srv/django/run/gunicorn.sock"},
        {"hosts": [{"host": "root@web1.example.com"}, {"host": "root@10.0.0.6", "address": "2001:db8::6"}]},
    ],
)
def test_what_the_settings_mean_is_still_accepted(raw):
    s.validate(raw)
