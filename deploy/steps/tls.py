"""HTTPS steps (provision, tls.renew): the certificate on every host that ends TLS.

A certificate of your own, or the first lb's ACME certificate copied to the other lbs,
is uploaded like a secret (root's, the key 600). On the ACME host, certbot from the
distribution asks only when the certificate is missing, lacks a domain, no longer
matches its key or is within certbot's renewal window; the challenge is answered by the
running nginx (deploy/steps/nginx.py puts the location in the site first).
"""

from __future__ import annotations

from deploy import scripts
from deploy.facts import CertificateFact, HostFacts
from deploy.host import HostContext
from deploy.ops import Command, Handler, Notify, Probe, Say, Steps, step
from deploy.render import environment, render
from deploy.scripts import plain, quote
from deploy.settings.tls import RENEW_DAYS, uncovered
from deploy.steps.files import ensure_file

TLS = ["tls.sh"]
NGINX = ["nginx.sh"]


@step("certificate files")
def certificate_files(h: HostContext) -> Steps:
    """Your certificate and key (or the first lb's copy) where nginx reads them: root's,
    the key readable by root alone, neither ever shown in a diff."""
    tls, layout = h.settings.site_tls, h.layout
    if h.tls_mode != "files" or tls is None or not tls.certificate:
        return  # no copy of the first lb's certificate in hand yet: nothing to put
    if h.facts.file(layout.tls_key) is None:
        yield Command(plain(f"install -d -o root -g root -m 700 {quote(layout.tls_key.rsplit('/', 1)[0])}"))
    key = yield from ensure_file(h, layout.tls_key, tls.key, "root", "root", "600", secret=True)
    chain = yield from ensure_file(h, layout.tls_certificate, tls.certificate, "root", "root", "644", secret=True)
    if key or chain:
        yield Notify(Handler.RELOAD_NGINX)


HOOK_PROGRAM = "/usr/local/lib/fabstack/certbot-deployed"  # deploy/remote/certbot-deployed.sh


@step("certbot renewal hook", files=(HOOK_PROGRAM,))
def acme_files(h: HostContext) -> Steps:
    """certbot's side on the ACME host: the deploy hook that reloads nginx after a renewal
    and, for a private ACME server, the CA its renewals trust."""
    tls, layout, s = h.settings.site_tls, h.layout, h.settings
    if h.tls_mode != "acme" or tls is None:
        return
    jinja = environment(s.templates_dir)
    lineage = layout.acme_certificate.rsplit("/", 1)[0]
    hook = render(jinja, "certbot-deploy-hook.sh.j2", app_name=s.app_name, lineage=lineage, program=HOOK_PROGRAM)
    yield from ensure_file(h, HOOK_PROGRAM, scripts.text("certbot-deployed.sh"), "root", "root", "755")
    yield from ensure_file(h, layout.acme_hook, hook, "root", "root", "755")
    if tls.directory_ca:
        yield from ensure_file(h, layout.acme_ca, tls.directory_ca, "root", "root", "644")
        if h.facts.pid1 == "systemd":
            dropin = render(jinja, "certbot-service.conf.j2", app_name=s.app_name, ca_bundle=layout.acme_ca)
            if (yield from ensure_file(h, layout.certbot_dropin, dropin, "root", "root", "644")):
                yield Command(plain("systemctl daemon-reload"))


def wanted_issue(h: HostContext) -> str:
    """Why the ACME host must ask for a certificate now ('' when the one it has will do)."""
    tls, cert = h.settings.site_tls, h.facts.certificate
    if tls is None:
        return ""
    if cert is None:
        return "no certificate yet"
    if not cert.key_matches:
        return "the certificate does not match its key"
    missing = uncovered(cert.names, tls.domains)
    if missing:
        return f"the certificate lacks {', '.join(missing)}"
    if cert.days_left(h.facts.now) < RENEW_DAYS:
        return f"the certificate expires in {cert.days_left(h.facts.now):.0f} days"
    return ""


@step("certificate")
def acme_certificate(h: HostContext) -> Steps:
    """A certificate from the ACME server for the domains, when needed: nginx first serves
    the challenge location (reloaded now, after nginx -t), then certbot asks."""
    tls = h.settings.site_tls
    why = wanted_issue(h) if h.tls_mode == "acme" else ""
    if not why or tls is None:
        return
    yield Say(f"certificate for {', '.join(tls.domains)}: {why}; asking {tls.directory}")
    yield Command(h.shell(NGINX, "nginx_running"))
    h.settle(Handler.RELOAD_NGINX)
    ca = h.layout.acme_ca if tls.directory_ca else ""
    yield Command(h.shell(TLS, "issue_certificate", tls.directory, tls.email, ca, *tls.domains))
    yield from read_certificate(h)
    yield Notify(Handler.RELOAD_NGINX)


@step("certificate renewed")
def renew(h: HostContext, force: bool) -> Steps:
    """certbot renews the ACME host's certificate when due (force: now); its deploy hook
    reloads nginx."""
    tls = h.settings.site_tls
    if h.tls_mode != "acme" or tls is None:
        return
    ca = h.layout.acme_ca if tls.directory_ca else ""
    yield Command(h.shell(TLS, "renew_certificate", ca, "yes" if force else "no"))
    yield from read_certificate(h)
    yield Notify(Handler.RELOAD_NGINX)


def read_certificate(h: HostContext) -> Steps:
    """The facts of the certificate just written (a dry run: the one it would get)."""
    out = yield Probe(h.shell(TLS, "read_tls"))
    found = HostFacts.parse(out or "").certificate
    domains = h.settings.site_tls.domains if h.settings.site_tls else ()
    h.facts.certificate = found or CertificateFact(h.facts.now + 90 * 86400, True, False, "", tuple(domains))
