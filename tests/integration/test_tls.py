"""TLS in popboxd: implicit TLS (RFC 8314, tls_listen) and STLS (RFC 2595)
on the plain listener, checked with Python's ssl/poplib, curl, mpop and
openssl s_client against a throw-away CA.

The test PKI (a CA and a localhost/127.0.0.1 server certificate it signed,
ECDSA P-256) is made once per session with the openssl command; the key is
root-only (popboxd reads it before dropping to mail_user).
"""
import os
import poplib
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest

from conftest import (CURL, IS_ROOT, MESSAGES, MPOP, POPBOXD, SOCKET_TIMEOUT,
                      USERS, RawPOP3, needs_curl, needs_mpop, unstuff,
                      wire_form)

PW = {u: pw for u, (_, pw) in USERS.items()}
OPENSSL = shutil.which("openssl")
STLS_OK = b"+OK begin TLS negotiation"
LISTENING = re.compile(r"event=listening addr=127\.0\.0\.1:(\d+)")


def run(cmd, timeout=30, **kw):
    return subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)


# ---------------------------------------------------------------- the PKI


class PKI:
    def __init__(self, d: Path):
        self.dir = d
        self.ca = d / "ca.pem"
        self.ca_key = d / "ca.key"
        self.cert = d / "cert.pem"
        self.key = d / "key.pem"
        self.other_key = d / "other-key.pem"   # matches no certificate
        self.garbage = d / "garbage.pem"


def _openssl(*args):
    r = run([OPENSSL, *map(str, args)])
    assert r.returncode == 0, f"openssl {' '.join(map(str, args))}: {r.stderr!r}"


@pytest.fixture(scope="session")
def pki():
    if OPENSSL is None:
        pytest.fail("the openssl command is needed to make the test PKI")
    d = Path(tempfile.mkdtemp(prefix="popbox-pki-"))
    os.chmod(d, 0o755)
    p = PKI(d)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=popbox test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", p.ca_key, "-out", p.ca)
    csr = d / "server.csr"
    _openssl("req", "-new", *ec, "-subj", "/CN=localhost",
             "-keyout", p.key, "-out", csr)
    ext = d / "server.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                   "subjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid,issuer\n")
    _openssl("x509", "-req", "-in", csr, "-CA", p.ca, "-CAkey", p.ca_key,
             "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", p.cert)
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", p.other_key)
    p.garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                         "-----END CERTIFICATE-----\n")
    # popboxd reads the key as root, before it drops to nobody.
    for k in (p.key, p.other_key, p.ca_key):
        if IS_ROOT:
            os.chown(k, 0, 0)
        os.chmod(k, 0o600)
    os.chmod(p.cert, 0o644)
    os.chmod(p.ca, 0o644)
    yield p
    shutil.rmtree(d, ignore_errors=True)


def client_ctx(pki, maximum=None, minimum=None):
    """A client context that verifies against the test CA only, hostname
    checks on."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


# ---------------------------------------------------------------- servers


def tls_server(server, pki, implicit=True, **overrides):
    """popboxd with the test certificate (so STLS on the plain listener) and,
    if implicit, one implicit-TLS listener whose port is s.tls_port."""
    conf = {"tls_cert_file": pki.cert, "tls_key_file": pki.key}
    if implicit:
        conf["tls_listen"] = "127.0.0.1:0"
    conf.update(overrides)
    s = server(**conf)
    # Plain addresses are logged first, then the TLS ones.
    ports = [int(p) for p in LISTENING.findall(s.log())]
    assert ports and ports[0] == s.port, f"listening lines {ports}:\n{s.log()}"
    if implicit:
        assert len(ports) == 2, f"expected a plain and a TLS port: {ports}"
        assert ports[1] != ports[0]
        s.tls_port = ports[1]
    else:
        assert len(ports) == 1, f"expected only the plain port: {ports}"
        s.tls_port = None
    return s


class TLSPOP3(RawPOP3):
    """RawPOP3 over implicit TLS (every byte kept, like RawPOP3)."""

    def __init__(self, host, port, ctx, timeout=SOCKET_TIMEOUT,
                 server_hostname="localhost", session=None):
        plain = socket.create_connection((host, port), timeout=timeout)
        try:
            self.sock = ctx.wrap_socket(plain, server_hostname=server_hostname,
                                        session=session)
        except BaseException:
            plain.close()
            raise
        self.buf = bytearray()
        self.greeting = self.readline()


def start_tls(c: RawPOP3, ctx, server_hostname="localhost"):
    """STLS on a RawPOP3: the +OK, then the handshake on the same socket."""
    r = c.cmd("STLS")
    assert r == STLS_OK, f"STLS: {r!r}"
    assert not c.buf, f"plaintext after the STLS +OK: {bytes(c.buf)!r}"
    c.sock = ctx.wrap_socket(c.sock, server_hostname=server_hostname)
    return c


def capa_lines(c: RawPOP3):
    status, body = c.multi("CAPA")
    assert status == b"+OK capability list follows", status
    return body.decode().split("\r\n")[:-1]


def fill(env, user="alice"):
    for m in MESSAGES:
        env.deliver(user, m)


@pytest.fixture
def conns():
    """Closes every connection a test opens."""
    out = []
    yield out
    for c in out:
        try:
            c.close()
        except Exception:
            pass


# ---------------------------------------------------------------- 1. POP3_SSL


def test_pop3_ssl_login_stat_retr_dele(env, server, pki):
    fill(env)
    s = tls_server(server, pki)
    p = poplib.POP3_SSL("localhost", s.tls_port, context=client_ctx(pki),
                        timeout=SOCKET_TIMEOUT)
    try:
        assert p.sock.version() in ("TLSv1.2", "TLSv1.3"), p.sock.version()
        cert = p.sock.getpeercert()
        assert ("DNS", "localhost") in cert["subjectAltName"], cert
        assert p.getwelcome().startswith(b"+OK"), p.getwelcome()
        p.user("alice")
        assert p.pass_(PW["alice"]).startswith(b"+OK")
        wires = [wire_form(m) for m in MESSAGES]
        assert p.stat() == (len(MESSAGES), sum(len(w) for w in wires))
        got = []
        for n in range(1, len(MESSAGES) + 1):
            resp, lines, _ = p.retr(n)
            assert resp.startswith(b"+OK"), resp
            got.append(b"".join(line + b"\r\n" for line in lines))
        assert sorted(got) == sorted(wires), "RETR over TLS differs from the wire form"
        assert p.dele(1).startswith(b"+OK")
        first = got[0]
    finally:
        r = p.quit()
    assert r.startswith(b"+OK") and b"1 messages deleted" in r, r
    left = sorted(wire_form(m) for m in env.files("alice").values())
    assert len(left) == 2
    assert left == sorted(w for w in wires if w != first), "DELE 1 removed the wrong message"
    s.wait_log(r"event=logout session=\S+ user=alice .*deleted=1")


# ---------------------------------------------------------------- 2. poplib stls()


def test_poplib_stls(env, server, pki):
    fill(env)
    s = tls_server(server, pki, implicit=False)
    p = poplib.POP3("localhost", s.port, timeout=SOCKET_TIMEOUT)
    try:
        caps = p.capa()
        assert "STLS" in caps, f"CAPA before TLS: {caps}"
        assert "USER" in caps and "PIPELINING" in caps, caps
        r = p.stls(client_ctx(pki))
        assert r == STLS_OK, r
        assert isinstance(p.sock, ssl.SSLSocket)
        caps = p.capa()
        assert "STLS" not in caps, f"CAPA inside TLS still offers STLS: {caps}"
        assert "USER" in caps, caps
        p.user("alice")
        assert p.pass_(PW["alice"]).startswith(b"+OK")
        resp, lines, _ = p.retr(2)
        assert resp.startswith(b"+OK"), resp
        body = b"".join(line + b"\r\n" for line in lines)
        assert body in [wire_form(m) for m in MESSAGES], body
    finally:
        p.quit()
    assert len(env.files("alice")) == len(MESSAGES)


# ---------------------------------------------------------------- 3. curl


@needs_curl
def test_curl_pop3s_and_stls(env, server, pki):
    fill(env)
    s = tls_server(server, pki)
    auth = ["-u", f"alice:{PW['alice']}"]
    wires = sorted(wire_form(m) for m in MESSAGES)

    r = run([CURL, "-sS", "--cacert", str(pki.ca), *auth,
             f"pop3s://localhost:{s.tls_port}/"])
    assert r.returncode == 0, f"curl pop3s LIST: {r.returncode} {r.stderr!r}"
    lines = r.stdout.split(b"\r\n")
    assert lines[-1] == b"" and len(lines) == len(MESSAGES) + 1, r.stdout
    assert sorted(int(l.split()[1]) for l in lines[:-1]) == sorted(len(w) for w in wires)

    got = []
    r = run([CURL, "-sS", "--cacert", str(pki.ca), *auth,
             f"pop3s://localhost:{s.tls_port}/1"])
    assert r.returncode == 0, f"curl pop3s RETR: {r.returncode} {r.stderr!r}"
    got.append(r.stdout)

    # STLS on the plain port; -v shows curl really negotiated TLS there.
    r = run([CURL, "-sS", "-v", "--ssl-reqd", "--cacert", str(pki.ca), *auth,
             f"pop3://localhost:{s.port}/2"])
    assert r.returncode == 0, f"curl STLS RETR: {r.returncode} {r.stderr!r}"
    assert b"> STLS" in r.stderr and b"< " + STLS_OK in r.stderr, r.stderr
    assert b"SSL connection using" in r.stderr, r.stderr
    got.append(r.stdout)
    assert len(set(got)) == 2 and all(g in wires for g in got), got

    # Without the CA, the certificate does not verify: exit 60
    # (CURLE_PEER_FAILED_VERIFICATION), over implicit TLS and over STLS.
    r = run([CURL, "-sS", *auth, f"pop3s://localhost:{s.tls_port}/"])
    assert r.returncode == 60, f"curl without --cacert: {r.returncode} {r.stderr!r}"
    assert r.stdout == b""
    r = run([CURL, "-sS", "--ssl-reqd", *auth, f"pop3://localhost:{s.port}/1"])
    assert r.returncode == 60, f"curl STLS without --cacert: {r.returncode} {r.stderr!r}"
    assert r.stdout == b""
    assert len(env.files("alice")) == len(MESSAGES)


# ---------------------------------------------------------------- 4. mpop


def fetched(dest: Path):
    return [p.read_bytes() for sub in ("new", "cur") for p in (dest / sub).iterdir()]


def assert_fetched(files, originals):
    assert len(files) == len(originals), f"fetched {len(files)} messages"
    for m in originals:
        want = wire_form(m).replace(b"\r\n", b"\n")
        assert any(f.endswith(want) for f in files), f"{m[:40]!r} not fetched"


@needs_mpop
def test_mpop_implicit_tls_and_stls(env, server, pki):
    s = tls_server(server, pki)
    home = env.root / "mpop-home"
    home.mkdir()
    pwfile = home / "pw"
    pwfile.write_text(PW["alice"] + "\n")
    os.chmod(pwfile, 0o600)
    e = dict(os.environ, HOME=str(home))

    def mpop(port, starttls, dest):
        for sub in ("new", "cur", "tmp"):
            (dest / sub).mkdir(parents=True)
        cmd = [MPOP, "--host=localhost", f"--port={port}", "--tls=on",
               f"--tls-starttls={'on' if starttls else 'off'}",
               f"--tls-trust-file={pki.ca}", "--auth=user", "--user=alice",
               f"--passwordeval=cat {pwfile}", f"--uidls-file={home / 'uidls'}",
               f"--delivery=maildir,{dest}"]
        return run(cmd, env=e)

    fill(env)
    dest = home / "implicit"
    r = mpop(s.tls_port, False, dest)
    assert r.returncode == 0, f"mpop implicit TLS: {r.returncode} {r.stderr!r} {r.stdout!r}"
    assert_fetched(fetched(dest), MESSAGES)
    assert env.files("alice") == {}, "mpop did not delete after fetching"

    fill(env)
    dest = home / "stls"
    r = mpop(s.port, True, dest)
    assert r.returncode == 0, f"mpop STLS: {r.returncode} {r.stderr!r} {r.stdout!r}"
    assert_fetched(fetched(dest), MESSAGES)
    assert env.files("alice") == {}


# ---------------------------------------------------------------- 5. s_client


def test_openssl_s_client_starttls(server, pki):
    s = tls_server(server, pki, implicit=False)
    r = run([OPENSSL, "s_client", "-starttls", "pop3",
             "-connect", f"127.0.0.1:{s.port}", "-CAfile", str(pki.ca),
             "-verify_return_error", "-verify_hostname", "localhost", "-quiet"],
            input=b"CAPA\r\nQUIT\r\n", timeout=15)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, f"s_client exit {r.returncode}: {r.stderr!r} {out!r}"
    lines = out.split("\r\n")
    assert "+OK capability list follows" in lines, out
    capa = lines[lines.index("+OK capability list follows") + 1:]
    capa = capa[:capa.index(".")]
    assert "USER" in capa and "STLS" not in capa, f"CAPA inside TLS: {capa}"
    assert any(l.startswith("+OK popbox signing off") for l in lines), out

    # The same against a CA that did not sign the certificate: refused.
    r = run([OPENSSL, "s_client", "-starttls", "pop3",
             "-connect", f"127.0.0.1:{s.port}", "-CAfile", str(pki.cert),
             "-verify_return_error", "-quiet"],
            input=b"CAPA\r\nQUIT\r\n", timeout=15)
    assert r.returncode != 0, f"s_client verified without the CA: {r.stdout!r}"
    assert b"capability list" not in r.stdout


# ---------------------------------------------------------------- 6. injection


def test_stls_pipelined_commands_are_discarded(env, server, pki, conns):
    """CVE-2011-0411 class: bytes after STLS in the same packet must never be
    executed, neither in plaintext nor inside TLS."""
    fill(env)
    s = tls_server(server, pki, implicit=False)
    ctx = client_ctx(pki)

    # STLS and CAPA in one send(): the server sees them in one read.
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sock.send(b"STLS\r\nCAPA\r\n")
    assert c.readline() == STLS_OK
    # Nothing else in plaintext: a CAPA answer here would be the
    # injected command run before TLS.
    assert not c.wait_closed(timeout=0.5), "server closed after STLS"
    assert not c.buf, f"plaintext after the STLS +OK: {bytes(c.buf)!r}"
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
    # Inside TLS: CAPA then QUIT.  Had the injected CAPA run, its answer
    # would come first and QUIT's reply would be a second CAPA answer.
    c.send(b"CAPA\r\nQUIT\r\n")
    assert c.readline() == b"+OK capability list follows"
    capa = unstuff(c.read_body()).decode().split("\r\n")[:-1]
    assert "STLS" not in capa, capa
    r = c.readline()
    assert r.startswith(b"+OK popbox signing off"), \
        f"after one CAPA answer came {r!r}: the pipelined CAPA was executed"
    assert c.wait_closed(timeout=5), "no close after QUIT"
    assert c.buf == b"", f"extra bytes inside TLS: {bytes(c.buf)!r}"
    s.wait_log(r"event=stls-discarded session=\S+ rip=127\.0\.0\.1 bytes=6\b")

    # An injected USER must not pair with the victim's PASS inside TLS.
    mark = len(s.log())
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    c.sock.send(b"STLS\r\nUSER alice\r\n")
    assert c.readline() == STLS_OK
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
    r = c.cmd(f"PASS {PW['alice']}")
    assert r.startswith(b"-ERR"), f"PASS after an injected USER: {r!r}"
    assert c.cmd("QUIT").startswith(b"+OK")
    s.wait_log(r"event=stls-discarded session=\S+ rip=\S+ bytes=12\b", start=mark)
    assert "event=login " not in s.log()[mark:]

    # Commands before STLS in the same packet are answered (in plaintext,
    # before the +OK); the ones after it are not.
    mark = len(s.log())
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    c.sock.send(b"CAPA\r\nSTLS\r\nCAPA\r\n")
    assert c.readline() == b"+OK capability list follows"
    assert "STLS" in unstuff(c.read_body()).decode().split("\r\n")
    assert c.readline() == STLS_OK
    assert not c.wait_closed(timeout=0.3) and not c.buf, bytes(c.buf)
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
    c.send(b"CAPA\r\nQUIT\r\n")
    assert c.readline() == b"+OK capability list follows"
    c.read_body()
    r = c.readline()
    assert r.startswith(b"+OK popbox signing off"), f"second answer inside TLS: {r!r}"
    s.wait_log(r"event=stls-discarded session=\S+ rip=\S+ bytes=6\b", start=mark)

    # Plaintext that arrives after the +OK is handshake garbage: the
    # handshake fails, the command never runs, the server lives on.
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    assert c.cmd("STLS") == STLS_OK
    c.send(b"CAPA\r\n")
    assert c.wait_closed(timeout=5), "server kept a connection sending garbage"
    assert b"capability" not in c.buf, f"CAPA ran after STLS: {bytes(c.buf)!r}"
    s.wait_log(r"event=tls-error session=\S+ rip=127\.0\.0\.1")
    c2 = start_tls(RawPOP3(s.host, s.port), ctx)
    conns.append(c2)
    c2.login("alice", PW["alice"])
    assert c2.cmd("STAT").startswith(b"+OK 3 ")
    assert c2.cmd("QUIT").startswith(b"+OK")


# ---------------------------------------------------------------- 7. STLS rules


def test_stls_rules(env, server, pki, conns):
    s = tls_server(server, pki)
    ctx = client_ctx(pki)

    # Plain, before login: STLS offered, also after USER.
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    assert "STLS" in capa_lines(c)
    assert c.cmd("USER alice").startswith(b"+OK")
    assert "STLS" in capa_lines(c)
    start_tls(c, ctx)
    # STLS forgets the USER given in plaintext.
    assert c.cmd(f"PASS {PW['alice']}").startswith(b"-ERR")
    assert "STLS" not in capa_lines(c)
    r = c.cmd("STLS")
    assert r.startswith(b"-ERR"), f"second STLS: {r!r}"
    # Still a working TLS session after the refusal.
    c.login("alice", PW["alice"])
    assert c.cmd("STAT").startswith(b"+OK 0 ")
    assert c.cmd("QUIT").startswith(b"+OK")

    # Implicit TLS: no STLS in CAPA, STLS refused, session goes on.
    t = TLSPOP3("127.0.0.1", s.tls_port, ctx)
    conns.append(t)
    assert t.greeting.startswith(b"+OK"), t.greeting
    caps = capa_lines(t)
    assert "STLS" not in caps and "USER" in caps, caps
    r = t.cmd("STLS")
    assert r.startswith(b"-ERR"), f"STLS on the implicit-TLS port: {r!r}"
    t.login("alice", PW["alice"])
    assert t.cmd("QUIT").startswith(b"+OK")

    # Plain, after login: not in CAPA, refused, nothing switched.
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    c.login("alice", PW["alice"])
    assert "STLS" not in capa_lines(c)
    assert c.cmd("STLS") == b"-ERR command not valid after login"
    assert c.cmd("NOOP") == b"+OK", "plaintext session broken after STLS refusal"
    assert c.cmd("QUIT").startswith(b"+OK")


def test_no_certificate_no_stls(server, conns):
    s = server()
    assert len(LISTENING.findall(s.log())) == 1
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    assert "STLS" not in capa_lines(c)
    r = c.cmd("STLS")
    assert r.startswith(b"-ERR") and r != STLS_OK, r
    # Still plaintext POP3 afterwards.
    assert c.cmd("USER alice").startswith(b"+OK")
    assert c.cmd(f"PASS {PW['alice']}").startswith(b"+OK")
    assert c.cmd("QUIT").startswith(b"+OK")


# ---------------------------------------------------------------- 8. versions


def _handshake(port, ctx):
    t = TLSPOP3("127.0.0.1", port, ctx)
    try:
        assert t.greeting.startswith(b"+OK")
        return t.sock.version()
    finally:
        t.close()


def _legacy_ctx(pki):
    """A client that can speak TLS 1.0/1.1 and nothing newer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = client_ctx(pki, maximum=ssl.TLSVersion.TLSv1_1,
                         minimum=ssl.TLSVersion.TLSv1)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


VERSION_ERRORS = ("PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE")


def test_tls_versions_default(server, pki):
    s = tls_server(server, pki)
    assert _handshake(s.tls_port, client_ctx(pki)) == "TLSv1.3"
    assert _handshake(s.tls_port, client_ctx(pki, maximum=ssl.TLSVersion.TLSv1_2)) == "TLSv1.2"
    with pytest.raises(ssl.SSLError) as ei:
        _handshake(s.tls_port, _legacy_ctx(pki))
    assert any(k in str(ei.value) for k in VERSION_ERRORS), \
        f"TLS 1.1 refused, but not for its version: {ei.value}"
    # STLS follows the same floor.
    c = RawPOP3(s.host, s.port)
    try:
        with pytest.raises(ssl.SSLError):
            start_tls(c, _legacy_ctx(pki))
    finally:
        c.close()


def test_tls_min_version_13(server, pki, conns):
    s = tls_server(server, pki, tls_min_version="TLSv1.3")
    with pytest.raises(ssl.SSLError) as ei:
        _handshake(s.tls_port, client_ctx(pki, maximum=ssl.TLSVersion.TLSv1_2))
    assert any(k in str(ei.value) for k in VERSION_ERRORS), str(ei.value)
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    with pytest.raises(ssl.SSLError):
        start_tls(c, client_ctx(pki, maximum=ssl.TLSVersion.TLSv1_2))
    assert _handshake(s.tls_port, client_ctx(pki)) == "TLSv1.3"
    c = start_tls(RawPOP3(s.host, s.port), client_ctx(pki))
    conns.append(c)
    assert c.sock.version() == "TLSv1.3"
    c.login("alice", PW["alice"])
    assert c.cmd("QUIT").startswith(b"+OK")


# ---------------------------------------------------------------- 9. resumption


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
def test_session_resumption(server, pki, conns, version):
    s = tls_server(server, pki)
    maximum = ssl.TLSVersion.TLSv1_2 if version == "TLSv1.2" else None
    ctx = client_ctx(pki, maximum=maximum)
    a = TLSPOP3("localhost", s.tls_port, ctx)
    conns.append(a)
    assert a.sock.version() == version
    assert not a.sock.session_reused
    # TLS 1.3 tickets come after the handshake: read a reply first.
    assert capa_lines(a)
    a.login("alice", PW["alice"])
    assert a.cmd("QUIT").startswith(b"+OK")
    sess = a.sock.session
    assert sess is not None
    a.close()
    if version == "TLSv1.3":
        assert sess.has_ticket, "no TLS 1.3 session ticket from the server"

    b = TLSPOP3("localhost", s.tls_port, ctx, session=sess)
    conns.append(b)
    assert b.sock.session_reused, f"{version} session not resumed"
    assert b.sock.version() == version
    b.login("alice", PW["alice"])
    assert b.cmd("QUIT").startswith(b"+OK")


# ---------------------------------------------------------------- 10. idle


def test_idle_tls_client_closed_at_login_timeout(env, server, pki, conns):
    fill(env)
    s = tls_server(server, pki, login_timeout=5)
    idle = socket.create_connection(("127.0.0.1", s.tls_port), timeout=10)
    conns.append(idle)
    t0 = time.monotonic()
    idle_stls = RawPOP3(s.host, s.port)       # STLS'd, then silent
    conns.append(idle_stls)
    assert idle_stls.cmd("STLS") == STLS_OK

    # Meanwhile another client does a whole session.
    p = poplib.POP3_SSL("localhost", s.tls_port, context=client_ctx(pki),
                        timeout=SOCKET_TIMEOUT)
    try:
        p.user("alice")
        assert p.pass_(PW["alice"]).startswith(b"+OK")
        assert p.stat()[0] == len(MESSAGES)
    finally:
        p.quit()
    assert time.monotonic() - t0 < 4, "the concurrent login was slow"

    closed = {}

    def wait(name, sock):
        # Plaintext or TLS bytes may come first (an alert, an -ERR the
        # server cannot encrypt yet): only the end of the stream counts.
        sock.settimeout(9)
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            return
        closed[name] = time.monotonic() - t0

    th = [threading.Thread(target=wait, args=("implicit", idle)),
          threading.Thread(target=wait, args=("stls", idle_stls.sock))]
    for x in th:
        x.start()
    for x in th:
        x.join(12)
    s.wait_log(r"event=timeout session=\S+ rip=127\.0\.0\.1 state=tls-handshake")
    for name in ("implicit", "stls"):
        assert name in closed, (
            f"idle {name} TLS client (no handshake) still open 9s after connect, "
            f"though login_timeout = 5 and the server logged the timeout:\n{s.log()}")
        assert 4.5 <= closed[name] <= 7.5, \
            f"idle {name} TLS client closed after {closed[name]:.1f}s (login_timeout = 5)"


# ---------------------------------------------------------------- 11. bad config


def _start_fails(env, name, **overrides):
    conf = env.root / f"{name}.conf"
    conf.write_text(env.config_text(**overrides))
    proc = subprocess.Popen([str(POPBOXD), "-c", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"popboxd started with a bad TLS config ({name})")
    text = err.decode("utf-8", "replace")
    assert proc.returncode not in (0, None), f"{name}: exit {proc.returncode}\n{text}"
    assert "event=started" not in text, text
    return text


def test_bad_certificate_config_fails_at_start(env, pki, hashes):
    missing = pki.dir / "no-such-file.pem"
    cases = {
        "key-mismatch": ({"tls_key_file": pki.other_key}, r"TLS.*(key values mismatch|key does not match)"),
        "missing-cert": ({"tls_cert_file": missing}, r"TLS.*no-such-file\.pem.*No such file"),
        "missing-key": ({"tls_key_file": missing}, r"TLS.*no-such-file\.pem.*No such file"),
        "garbage-cert": ({"tls_cert_file": pki.garbage}, r"TLS.*garbage\.pem.*PEM"),
        "key-as-cert": ({"tls_cert_file": pki.key}, r"TLS.*/key\.pem.*PEM"),
    }
    for name, (over, pattern) in cases.items():
        conf = {"tls_listen": "127.0.0.1:0", "tls_cert_file": pki.cert,
                "tls_key_file": pki.key}
        conf.update(over)
        text = _start_fails(env, name, **conf)
        assert re.search(pattern, text), f"{name}: no TLS error matching {pattern!r}:\n{text}"
        assert "AddressSanitizer" not in text and "runtime error:" not in text, text
    # Half a pair, and tls_listen without a certificate: config errors.
    text = _start_fails(env, "cert-only", tls_cert_file=pki.cert)
    assert "tls_key_file" in text, text
    text = _start_fails(env, "key-only", tls_key_file=pki.key)
    assert "tls_cert_file" in text, text
    text = _start_fails(env, "listen-only", tls_listen="127.0.0.1:0")
    assert "tls_cert_file" in text, text
    text = _start_fails(env, "bad-version", tls_cert_file=pki.cert,
                        tls_key_file=pki.key, tls_min_version="TLSv1.1")
    assert "TLSv1.2 or TLSv1.3" in text, text


# ------------------------------------------- cleartext refused off trusted nets


def test_cleartext_login_refused_off_trusted_networks(env, server, pki, conns):
    """trusted_networks = none makes loopback look like a remote client:
    USER is refused before TLS (so PASS is never sent), CAPA does not offer
    USER, and after STLS the login works."""
    fill(env)
    s = tls_server(server, pki, implicit=False, trusted_networks="none")
    c = RawPOP3(s.host, s.port)
    conns.append(c.sock)
    st, capa = c.multi("CAPA")
    caps = capa.split(b"\r\n")
    assert b"USER" not in caps and b"STLS" in caps, capa
    r = c.cmd("USER alice")
    assert r.startswith(b"-ERR [AUTH] ") and b"STLS" in r, r
    assert c.cmd(f"PASS {PW['alice']}").startswith(b"-ERR"), "PASS got past a refused USER"
    assert "event=login " not in s.log()

    p = poplib.POP3(s.host, s.port, timeout=SOCKET_TIMEOUT)
    try:
        p.stls(client_ctx(pki))
        assert "USER" in p.capa()
        p.user("alice")
        assert p.pass_(PW["alice"]).startswith(b"+OK")
        assert p.stat()[0] == len(MESSAGES)
    finally:
        p.quit()


def test_cleartext_refused_by_curl_without_tls(env, server, pki):
    fill(env)
    s = tls_server(server, pki, implicit=False, trusted_networks="none")
    r = subprocess.run(["curl", "-sS", "-u", f"alice:{PW['alice']}",
                        f"pop3://127.0.0.1:{s.port}/"],
                       capture_output=True, timeout=30)
    assert r.returncode != 0, "curl logged in without TLS off a trusted network"
    r = subprocess.run(["curl", "-sS", "--ssl-reqd", "--cacert", str(pki.ca),
                        "-u", f"alice:{PW['alice']}",
                        f"pop3://localhost:{s.port}/"],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_allow_cleartext_option(env, server, pki, conns):
    fill(env)
    s = tls_server(server, pki, implicit=False, trusted_networks="none",
                   allow_cleartext="yes")
    c = RawPOP3(s.host, s.port)
    conns.append(c.sock)
    c.login("alice", PW["alice"])
    assert c.cmd("QUIT").startswith(b"+OK")


def test_pop3s_only_server(env, server, pki, conns):
    """listen = none: only the implicit-TLS port exists."""
    fill(env)
    s = server(listen="none", tls_listen="127.0.0.1:0", tls_cert_file=pki.cert,
               tls_key_file=pki.key)
    ports = [int(p) for p in LISTENING.findall(s.log())]
    assert ports == [s.port], f"expected one (TLS) listener: {ports}\n{s.log()}"
    c = TLSPOP3(s.host, s.port, client_ctx(pki))
    conns.append(c)
    c.login("alice", PW["alice"])
    assert c.cmd("STAT").startswith(b"+OK 3 ")
    # No STLS on a TLS port, and nothing on a plain one.
    assert "STLS" not in capa_lines(c)
