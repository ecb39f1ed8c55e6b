"""The client side of TLS (bench._support.tls and ServerProc): scheme mapping, the CA a
scenario names, the environment a client subprocess gets, and a context that verifies a
server signed by a throwaway trustme CA — a real TLS handshake through memory buffers."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from bench._support.args import BadInput
from bench._support.servers import LISTEN_URL, ServerProc
from bench._support.tls import (
    TlsFiles,
    client_ca_file,
    client_ssl_context,
    client_tls_env,
    http_base,
    throwaway_tls,
    tls_env,
    trust_context,
)
from chatcap.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "scenarios" / "smoke.toml"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return throwaway_tls(tmp_path_factory.mktemp("tls"))


def with_tls(files: TlsFiles, ca_file: str | None = None) -> Scenario:
    overrides = files.overrides()
    if ca_file is not None:
        overrides["server.tls.ca_file"] = ca_file
    return load_scenario(SMOKE).with_overrides(overrides)


def handshake(client: ssl.SSLContext, files: TlsFiles, hostname: str) -> str:
    """Run a TLS handshake between ``client`` and a server presenting ``files``' certificate,
    through memory buffers (no socket); returns the negotiated version."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert_file, files.key_file)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    s = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, end in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return str(c.version())
    raise AssertionError("handshake did not finish")


# ---------------------------------------------------------------------------- schemes


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("ws://127.0.0.1:8765/api/v1/ws", "http://127.0.0.1:8765"),
        ("wss://127.0.0.1:8765/api/v1/ws", "https://127.0.0.1:8765"),
        ("wss://localhost:443", "https://localhost:443"),
        ("https://127.0.0.1:9/metrics", "https://127.0.0.1:9"),
    ],
)
def test_a_listening_url_maps_to_the_http_base_of_its_scheme(url: str, base: str) -> None:
    assert http_base(url) == base


@pytest.mark.parametrize("url", ["ftp://h:1/", "127.0.0.1:8765"])
def test_a_url_of_another_scheme_is_refused_by_name(url: str) -> None:
    with pytest.raises(ValueError, match=r"expected a ws://, wss://"):
        http_base(url)


def test_the_listening_line_is_read_for_ws_and_wss() -> None:
    plain = "chatcap server listening on ws://127.0.0.1:4001/api/v1/ws codecs=chat.v1.json"
    secure = "chatcap server listening on wss://127.0.0.1:4002/api/v1/ws codecs=chat.v1.json"
    for line, port, url in ((plain, "4001", "ws://"), (secure, "4002", "wss://")):
        match = LISTEN_URL.search(line)
        assert match is not None and match.group(1) == port
        assert match.group(0).startswith(url) and match.group(0).endswith("/api/v1/ws")


def a_server(url: str, ca_file: str) -> ServerProc:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return ServerProc("s", proc, url, "", (Path("o"), Path("e")), ca_file)


def test_a_server_that_announced_wss_gets_https_a_context_and_the_ca_env(
    tls_files: TlsFiles,
) -> None:
    server = a_server("wss://127.0.0.1:4002/api/v1/ws", tls_files.ca_file)
    assert server.secure and server.base_url == "https://127.0.0.1:4002"
    context = server.client_context()
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    ca = tls_files.ca_file
    assert server.client_env() == {"SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca}


def test_a_plain_server_gets_http_no_context_and_no_env_even_with_a_ca(
    tls_files: TlsFiles,
) -> None:
    server = a_server("ws://127.0.0.1:4001/api/v1/ws", tls_files.ca_file)
    assert not server.secure and server.base_url == "http://127.0.0.1:4001"
    assert server.client_context() is None and server.client_env() == {}


# ---------------------------------------------------------------------------- trust


def test_the_throwaway_context_verifies_the_server_it_signed(tls_files: TlsFiles) -> None:
    assert handshake(trust_context(tls_files.ca_file), tls_files, "127.0.0.1").startswith("TLS")
    assert handshake(trust_context(tls_files.ca_file), tls_files, "localhost").startswith("TLS")


def test_the_system_store_does_not_trust_a_throwaway_ca(tls_files: TlsFiles) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(trust_context(""), tls_files, "127.0.0.1")


def test_the_hostname_is_checked_too(tls_files: TlsFiles) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(trust_context(tls_files.ca_file), tls_files, "chat.example")


def test_another_ca_does_not_verify_the_server(tls_files: TlsFiles, tmp_path: Path) -> None:
    other = throwaway_tls(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(trust_context(other.ca_file), tls_files, "127.0.0.1")


def test_the_throwaway_files_keep_the_key_out_of_the_certificate(tls_files: TlsFiles) -> None:
    cert = Path(tls_files.cert_file).read_text()
    assert "BEGIN CERTIFICATE" in cert and "PRIVATE KEY" not in cert
    assert "PRIVATE KEY" in Path(tls_files.key_file).read_text()
    assert "PRIVATE KEY" not in Path(tls_files.ca_file).read_text()


# ---------------------------------------------------------------------------- a scenario


def test_a_scenario_with_tls_and_a_ca_gives_its_absolute_path_and_env(
    tls_files: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = Path(tls_files.ca_file)
    (tmp_path / "ca.pem").write_bytes(ca.read_bytes())
    monkeypatch.chdir(tmp_path)
    scenario = with_tls(tls_files, ca_file="ca.pem")  # relative to the working folder
    absolute = str(tmp_path / "ca.pem")
    assert client_ca_file(scenario) == absolute
    assert client_tls_env(scenario) == {"SSL_CERT_FILE": absolute, "REQUESTS_CA_BUNDLE": absolute}
    context = client_ssl_context(scenario)
    assert context is not None
    assert handshake(context, tls_files, "127.0.0.1").startswith("TLS")


def test_tls_without_a_ca_means_the_system_store_and_no_env(tls_files: TlsFiles) -> None:
    scenario = with_tls(tls_files, ca_file="")
    assert client_ca_file(scenario) == "" and client_tls_env(scenario) == {}
    context = client_ssl_context(scenario)
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED


def test_a_plain_scenario_has_no_client_tls_whatever_its_ca_says(tls_files: TlsFiles) -> None:
    plain = load_scenario(SMOKE).with_overrides({"server.tls.ca_file": tls_files.ca_file})
    assert client_ca_file(plain) == "" and client_tls_env(plain) == {}
    assert client_ssl_context(plain) is None
    assert tls_env("") == {}


def test_a_missing_or_broken_ca_is_named(tls_files: TlsFiles, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"server.tls.ca_file = '/no/such/ca.pem': no such file"):
        client_ca_file(with_tls(tls_files, ca_file="/no/such/ca.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(BadInput, match=r"server.tls.ca_file = .*junk.pem.*not a PEM CA bundle"):
        client_ca_file(with_tls(tls_files, ca_file=str(junk)))
    with pytest.raises(BadInput, match=r"--ca-file = 'nope.pem': no such file"):
        trust_context("nope.pem", "--ca-file")
