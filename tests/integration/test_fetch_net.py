"""popbox-fetch's connection and authentication modules (fetch/net.c,
fetch/sasl-client.c) against popboxd as a real peer, before the fetcher
itself exists: the test-net program's --interop mode connects over implicit
TLS or STLS with verification against the test CA, reads CAPA, lets the
mechanism choice pick (falling back past a refused SCRAM), logs in, STATs
and QUITs.  Certificate failures (wrong name, unknown CA) must stop it
before any login.
"""
import subprocess

import pytest

from conftest import BUILD, MESSAGES, USERS
from test_tls import pki, tls_server  # noqa: F401  (pki is a fixture)

PW = {u: pw for u, (_, pw) in USERS.items()}
TEST_NET = BUILD / "tests" / "test-net"


def interop(mode, port, ca, name, user, password, method="auto"):
    if not TEST_NET.is_file():
        pytest.fail(f"{TEST_NET} missing: make {TEST_NET}", pytrace=False)
    r = subprocess.run([str(TEST_NET), "--interop", mode, "127.0.0.1",
                        str(port), str(ca), name, user, password, method],
                       capture_output=True, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    err = r.stderr.decode("utf-8", "replace")
    for pat in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert pat not in err, err
    return r.returncode, out


def fill(env, user):
    for m in MESSAGES:
        env.deliver(user, m)


@pytest.mark.parametrize("mode", ["implicit", "stls"])
def test_scram_user(env, server, pki, mode):  # noqa: F811
    s = tls_server(server, pki)
    fill(env, "sam")
    port = s.tls_port if mode == "implicit" else s.port
    rc, out = interop(mode, port, pki.ca, "localhost", "sam", PW["sam"])
    assert rc == 0, out
    assert "OK method=SCRAM-SHA-256 tls=TLSv1." in out, out
    assert f"stat={len(MESSAGES)} " in out, out


@pytest.mark.parametrize("mode", ["implicit", "stls"])
def test_crypt_user_falls_back_to_plain(env, server, pki, mode):  # noqa: F811
    """popboxd offers SCRAM to everyone but cannot serve it for a crypt
    hash: AUTO tries SCRAM, is refused, and goes on with PLAIN over TLS."""
    s = tls_server(server, pki)
    port = s.tls_port if mode == "implicit" else s.port
    rc, out = interop(mode, port, pki.ca, "localhost", "alice", PW["alice"])
    assert rc == 0, out
    assert "note: SCRAM-SHA-256 refused" in out, out
    assert "OK method=PLAIN" in out, out


@pytest.mark.parametrize("method,expect", [
    ("apop", "APOP"), ("user", "USER"), ("login", "LOGIN"),
    ("plain", "PLAIN"), ("scram-sha-256", "SCRAM-SHA-256")])
def test_configured_methods(env, server, pki, method, expect):  # noqa: F811
    s = tls_server(server, pki, apop="yes")
    rc, out = interop("implicit", s.tls_port, pki.ca, "localhost", "dave",
                      PW["dave"], method)
    assert rc == 0, out
    assert f"OK method={expect} " in out, out


def test_wrong_password(env, server, pki):  # noqa: F811
    s = tls_server(server, pki)
    rc, out = interop("implicit", s.tls_port, pki.ca, "localhost", "sam",
                      "not-the-password")
    assert rc == 1, out
    assert "FAIL login" in out, out


@pytest.mark.parametrize("mode", ["implicit", "stls"])
def test_certificate_refused(env, server, pki, mode):  # noqa: F811
    s = tls_server(server, pki)
    port = s.tls_port if mode == "implicit" else s.port
    rc, out = interop(mode, port, pki.ca, "mail.example.org", "sam", PW["sam"])
    assert rc == 1 and "FAIL tls: wrong host" in out, out
    # The system store does not know the test CA.
    rc, out = interop(mode, port, "/etc/ssl/certs/ca-certificates.crt",
                      "localhost", "sam", PW["sam"])
    assert rc == 1 and "FAIL tls:" in out and "unknown CA" in out, out
    assert "fingerprint" in out, out
    # Refused before any credential was sent: no login, no failed one.
    log = s.log()
    assert "event=login " not in log and "event=auth-failed" not in log, log
