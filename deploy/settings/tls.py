"""HTTPS settings: the `tls` mapping parsed into one object, and a certificate of your own
checked here (readable, not expired, its key, its names) before any host is touched.

Two sources of certificates (docs/https.md):
- ACME: certbot from the distribution on the first host that faces clients (the first
  lb, or the single host) gets one for `domains` over the webroot challenge its running
  nginx serves; the other lbs get copies of it.
- Files: your certificate chain and key (`file:PATH`), uploaded to every such host.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
KEYS = ("email", "domains", "directory", "directory_ca", "certificate", "key", "hsts", "port")
RENEW_DAYS = 30  # certbot's own default: a certificate this close to its end is renewed
WARN_DAYS = 14  # fab check fails a certificate this close to its end


class TlsError(Exception):
    """A bad `tls` setting: the message names the key and the fix."""


@dataclass(frozen=True)
class Tls:
    """What the `tls` setting asks for. certificate and key hold PEM text: your files,
    or (ACME, after the first lb got one) the copy the other lbs receive."""

    mode: str  # "acme" or "files"
    domains: tuple[str, ...]
    email: str = ""
    directory: str = LETS_ENCRYPT
    directory_ca: str = ""  # PEM: the CA that signed the ACME server's own HTTPS certificate
    hsts: int = 0  # Strict-Transport-Security max-age; 0: not sent
    port: int = 443
    certificate: str = field(default="", repr=False)
    key: str = field(default="", repr=False)

    @property
    def acme(self) -> bool:
        return self.mode == "acme"


def site_names(server_name: str) -> list[str]:
    """The domain names in nginx's server_name (not `_`, not regexes)."""
    return [n for n in server_name.split() if n != "_" and not n.startswith("~")]


def covers(names: list[str] | tuple[str, ...], domain: str) -> bool:
    """A certificate for names is valid for domain (one wildcard label matches one label)."""
    return any(name == domain or (name.startswith("*.") and domain.partition(".")[2] == name[2:]) for name in names)


def uncovered(names: list[str] | tuple[str, ...], domains: list[str] | tuple[str, ...]) -> list[str]:
    """The domains a certificate for names is not valid for."""
    return [d for d in domains if not covers(names, d)]


def parse(raw: dict, server_name: str) -> Tls | None:
    """The `tls` mapping, checked: None when it is empty (plain HTTP)."""
    if not raw:
        return None
    unknown = sorted(set(map(str, raw)) - set(KEYS))
    if unknown:
        raise TlsError(f"tls.{unknown[0]} is not a tls setting; use: {', '.join(KEYS)}")
    email, cert, key = (str(raw.get(k) or "") for k in ("email", "certificate", "key"))
    if email and (cert or key):
        raise TlsError("tls: set either email (a certificate from ACME) or certificate and key (your own), not both")
    if not email and not (cert and key):
        raise TlsError(
            "tls: set email (a certificate from ACME, e.g. Let's Encrypt) or both certificate: file:PATH and key: file:PATH"
        )
    names = site_names(server_name)
    domains = raw.get("domains") or names
    if isinstance(domains, str):
        domains = domains.split()
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise TlsError(f"tls.domains={domains!r}: use a list of domain names")
    if not domains:
        raise TlsError("tls: no domain to certify: set server_name to the site's domain names (not _)")
    for domain in domains:
        if not re.fullmatch(r"(\*\.)?([a-z0-9-]+\.)+[a-z0-9-]+", domain, re.IGNORECASE):
            raise TlsError(f"tls.domains: {domain!r} is not a domain name; use names like www.example.com")
        if not covers(names, domain) and "_" not in server_name.split():
            raise TlsError(f"tls.domains: {domain} is not in server_name ({server_name}); add it there or drop it")
    hsts, port = raw.get("hsts", 0), raw.get("port", 443)
    if isinstance(hsts, bool) or not isinstance(hsts, int) or hsts < 0:
        raise TlsError(f"tls.hsts={hsts!r}: use a max-age in seconds (31536000 is a year), or 0 for none")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise TlsError(f"tls.port={port!r}: use a port from 1 to 65535")
    common: dict[str, Any] = {"domains": tuple(domains), "hsts": hsts, "port": port}
    if email:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            raise TlsError(f"tls.email={email!r}: use the address the ACME CA writes to about expiry")
        if any(d.startswith("*.") for d in domains):
            wild = next(d for d in domains if d.startswith("*."))
            raise TlsError(f"tls.domains: {wild} needs a DNS challenge; ACME over HTTP certifies plain names only")
        directory = str(raw.get("directory") or LETS_ENCRYPT)
        if not directory.startswith("https://"):
            raise TlsError(f"tls.directory={directory!r}: use the ACME server's https:// directory URL")
        ca = _read_pem("directory_ca", raw["directory_ca"], private=False) if raw.get("directory_ca") else ""
        return Tls("acme", email=email, directory=directory, directory_ca=ca, **common)
    certificate = _read_pem("certificate", cert, private=False)
    private_key = _read_pem("key", key, private=True)
    check_pair(certificate, private_key, tuple(domains), where=cert)
    return Tls("files", certificate=certificate, key=private_key, **common)


def _read_pem(name: str, source: str, private: bool) -> str:
    kind, _, where = source.partition(":")
    if kind != "file" or not where:
        raise TlsError(f"tls.{name}={source!r}: use file:PATH (a PEM file on the machine running fab)")
    path = Path(where).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise TlsError(f"tls.{name}: cannot read {where} ({exc.strerror}); fix the path or its permissions") from None
    if private and path.stat().st_mode & 0o077:
        raise TlsError(
            f"tls.{name}: {where} is readable by others (mode {path.stat().st_mode & 0o777:o}); chmod 600 {where}"
        )
    if "-----BEGIN" not in text:
        raise TlsError(f"tls.{name}: {where} is not PEM; give the PEM file (-----BEGIN ...)")
    return text if text.endswith("\n") else text + "\n"


def check_pair(certificate: str, key: str, domains: tuple[str, ...], where: str = "the certificate") -> None:
    """Your chain and key belong together, cover the domains and are in date; else TlsError."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        chain = x509.load_pem_x509_certificates(certificate.encode())
    except ValueError as exc:
        raise TlsError(
            f"tls.certificate: {where} does not parse as PEM certificates ({exc}); give the full chain"
        ) from None
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise TlsError(
            f"tls.key: does not parse as an unencrypted PEM private key ({exc}); give the key file"
        ) from None
    leaf = chain[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if leaf.public_key().public_bytes(encoding, public) != private.public_key().public_bytes(encoding, public):
        raise TlsError(f"tls.key does not match tls.certificate ({where}); give the key the certificate was made for")
    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc <= now:
        raise TlsError(f"tls.certificate: {where} expired on {leaf.not_valid_after_utc:%Y-%m-%d}; renew it")
    for issued, issuer in zip(chain, chain[1:], strict=False):
        if issued.issuer != issuer.subject:
            raise TlsError(f"tls.certificate: {where}: certificate {issuer.subject.rfc4514_string()} did not issue "
                           f"{issued.subject.rfc4514_string()}; put the chain in order, leaf first")  # fmt: skip
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    missing = uncovered(dns, domains)
    if missing:
        raise TlsError(
            f"tls.certificate: {where} does not cover {missing[0]} (it names {', '.join(dns) or 'no DNS name'}); "
            "get one that does, or drop the name from server_name"
        )


def has_ocsp(certificate: str) -> bool:
    """The leaf names an OCSP responder, so nginx can staple its answer (Let's Encrypt's
    no longer do: stapling stays off for them)."""
    from cryptography import x509
    from cryptography.x509.oid import AuthorityInformationAccessOID

    leaf = x509.load_pem_x509_certificates(certificate.encode())[0]
    try:
        access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return False
    return any(d.access_method == AuthorityInformationAccessOID.OCSP for d in access)
