"""The client side of TLS: what chatcap's own clients trust when the server speaks wss://.

A scenario's ``[server.tls]`` says what the server presents (``cert_file``, ``key_file``)
and what chatcap's own clients — the Locust generator, the load client of
``server-overhead`` and ``calibrate``, the run orchestrator's scrapes — trust
(``ca_file``; empty = the system store). Every client asks this module, never its own copy:

* :func:`http_base` — a listening URL (``ws://`` / ``wss://``, as the server's first
  line says) → the HTTP base of the same port (``http://`` / ``https://``);
* :func:`client_ca_file` — the scenario's ``server.tls.ca_file``, absolute and checked
  (``""`` when TLS is off or the system store is meant);
* :func:`trust_context` — an :class:`ssl.SSLContext` that verifies the server against
  a CA file (hostname checked, as a browser would);
* :func:`client_ssl_context` — that context for a scenario, ``None`` when TLS is off;
* :func:`tls_env` / :func:`client_tls_env` — the environment that makes a client
  *subprocess* trust the CA: ``SSL_CERT_FILE`` (OpenSSL's default verify file, read by
  ``ssl.create_default_context()``: websockets' client, geventhttpclient) and
  ``REQUESTS_CA_BUNDLE`` (a requests-based Locust ``HttpUser``). The variable replaces
  the system bundle for that process: fine for a loopback benchmark;
* :func:`throwaway_tls` — a fresh CA and a server certificate for ``127.0.0.1`` /
  ``localhost`` (trustme, a dev dependency) written into a folder that the caller
  deletes: benchmarks and tests make their own, no key is ever committed.

No asyncio, no gevent: both sides import it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from bench._support.args import BadInput
from chatcap.scenario import Scenario

CA_KEY = "server.tls.ca_file"


def http_base(url: str) -> str:
    """``ws://127.0.0.1:8765/api/v1/ws`` → ``http://127.0.0.1:8765`` (``wss`` → ``https``)."""
    scheme, sep, rest = url.partition("://")
    mapped = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(scheme)
    if not sep or mapped is None:
        raise ValueError(f"{url!r}: expected a ws://, wss://, http:// or https:// URL")
    return f"{mapped}://{rest.split('/', 1)[0]}"


def is_secure(url: str) -> bool:
    """Whether ``url`` is ``wss://`` or ``https://``."""
    return url.startswith(("wss://", "https://"))


def trust_context(ca_file: str, key: str = CA_KEY) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca_file`` (the system store
    when empty); a missing or unreadable file is :class:`BadInput` naming ``key``."""
    if not ca_file:
        return ssl.create_default_context()
    if not Path(ca_file).is_file():
        raise BadInput(f"{key} = {ca_file!r}: no such file")
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise BadInput(f"{key} = {ca_file!r}: not a PEM CA bundle ({exc})") from None


def client_ca_file(scenario: Scenario) -> str:
    """``server.tls.ca_file`` as an absolute path (clients may run in another folder),
    checked to load; ``""`` when the server speaks plain or the system store is meant."""
    tls = scenario.server.tls
    if not tls.enabled or not tls.ca_file:
        return ""
    path = str(Path(tls.ca_file).resolve())
    trust_context(path)
    return path


def client_ssl_context(scenario: Scenario) -> ssl.SSLContext | None:
    """The context chatcap's clients use against this scenario's server; None when plain."""
    if not scenario.server.tls.enabled:
        return None
    return trust_context(client_ca_file(scenario))


def tls_env(ca_file: str) -> dict[str, str]:
    """Environment variables that make a client subprocess trust ``ca_file`` ({} if none)."""
    if not ca_file:
        return {}
    return {"SSL_CERT_FILE": ca_file, "REQUESTS_CA_BUNDLE": ca_file}


def client_tls_env(scenario: Scenario) -> dict[str, str]:
    """:func:`tls_env` of the scenario's CA (when TLS is on and a CA is named)."""
    return tls_env(client_ca_file(scenario))


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throwaway CA and the server certificate it signed."""

    ca_file: str
    cert_file: str
    key_file: str
    key_type: str

    def overrides(self) -> dict[str, str]:
        """The scenario overrides that turn TLS on with these files."""
        return {
            "server.tls.cert_file": self.cert_file,
            "server.tls.key_file": self.key_file,
            CA_KEY: self.ca_file,
        }


def throwaway_tls(folder: Path) -> TlsFiles:
    """A new CA and a certificate for ``127.0.0.1`` and ``localhost``, written to
    ``folder`` (``ca.pem``, ``cert.pem``, ``key.pem``); needs trustme (``.[dev]``)."""
    try:
        import trustme
    except ImportError:
        raise BadInput(
            "a throwaway TLS certificate needs trustme: pip install -e '.[dev]'"
        ) from None
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca_file=str(folder / "ca.pem"),
        cert_file=str(folder / "cert.pem"),
        key_file=str(folder / "key.pem"),
        key_type="ECDSA P-256 (trustme's default)",
    )
    ca.cert_pem.write_to_path(files.ca_file)
    Path(files.cert_file).write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(files.key_file)
    return files
