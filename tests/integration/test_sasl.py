"""SASL AUTH in popboxd (RFC 5034): PLAIN (RFC 4616) with and without an
initial response, LOGIN, and SCRAM-SHA-256 (RFC 5802, RFC 7677), checked
with a byte-exact raw client, an independent SCRAM client written here with
Python's hashlib/hmac (itself checked against RFC 7677's example), curl's
SASL (PLAIN, LOGIN) and mpop's GNU SASL (SCRAM-SHA-256, PLAIN, LOGIN).
Also: every error path of the exchange, the per-address penalty for
repeated failures, and the certificate reload on SIGHUP.
"""
import base64
import hashlib
import hmac
import os
import re
import secrets
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest

from conftest import (CURL, IS_ROOT, MESSAGES, MPOP, SOCKET_TIMEOUT, USERS,
                      RawPOP3, needs_curl, needs_mpop, wire_form)
from test_tls import (TLSPOP3, _openssl, client_ctx, conns, fill, pki,  # noqa: F401
                      run, start_tls, tls_server)

PW = {u: pw for u, (_, pw) in USERS.items()}
ALL = "SASL PLAIN LOGIN SCRAM-SHA-256"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def plain_msg(user, password, authzid=""):
    return f"{authzid}\0{user}\0{password}".encode()


def challenge(line: bytes) -> bytes:
    assert line.startswith(b"+ "), f"expected a challenge, got {line!r}"
    return base64.b64decode(line[2:], validate=True)


# ------------------------------------------------------------ SCRAM client

class ScramClient:
    """The client side of SCRAM-SHA-256, from RFC 5802 section 3."""

    def __init__(self, user, password, nonce=None):
        self.user = user
        self.password = password.encode()
        self.nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
        self.gs2 = "n,,"
        self.first_bare = f"n={user},r={self.nonce}"

    def first(self) -> bytes:
        return (self.gs2 + self.first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        self.server_first = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in self.server_first.split(","))
        assert attrs["r"].startswith(self.nonce), "server nonce must extend ours"
        salt = base64.b64decode(attrs["s"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = "c=" + base64.b64encode(self.gs2.encode()).decode() + \
                        ",r=" + attrs["r"]
        self.auth_message = ",".join((self.first_bare, self.server_first,
                                      without_proof)).encode()
        signature = hmac.digest(stored_key, self.auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.expected_v = base64.b64encode(
            hmac.digest(server_key, self.auth_message, "sha256")).decode()
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()

    def check_server_final(self, data: bytes):
        assert data.decode() == "v=" + self.expected_v, \
            f"server signature {data!r}, want v={self.expected_v}"


def test_scram_client_matches_rfc7677_example():
    """The test's own SCRAM client reproduces RFC 7677 section 3."""
    c = ScramClient("user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert c.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = c.final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    c.check_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def scram_login(c: RawPOP3, user, password, initial=True):
    """A whole SCRAM exchange; returns the final status line."""
    sc = ScramClient(user, password)
    if initial:
        r = c.cmd(b"AUTH SCRAM-SHA-256 " + b64(sc.first()))
    else:
        r = c.cmd(b"AUTH SCRAM-SHA-256")
        assert r == b"+ ", r
        r = c.cmd(b64(sc.first()))
    if not r.startswith(b"+ "):
        return r
    r = c.cmd(b64(sc.final(challenge(r))))
    if not r.startswith(b"+ "):
        return r
    sc.check_server_final(challenge(r))
    return c.cmd(b"")


# ------------------------------------------------------------ the listings

def capa(c):
    status, body = c.multi("CAPA")
    assert status.startswith(b"+OK"), status
    return body.decode().split("\r\n")[:-1]


def test_capa_and_auth_list(server, pki, conns):
    s = tls_server(server, pki, implicit=False)
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    assert ALL in capa(c)
    status, body = c.multi("AUTH")
    assert status.startswith(b"+OK"), status
    assert body == b"PLAIN\r\nLOGIN\r\nSCRAM-SHA-256\r\n"

    # As a remote client sees it: before STLS, only the mechanism that
    # never sends the password; PLAIN and LOGIN are refused with [AUTH].
    s = tls_server(server, pki, implicit=False, trusted_networks="none")
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    assert "SASL SCRAM-SHA-256" in capa(c)
    assert c.cmd(b"AUTH PLAIN " + b64(plain_msg("dave", PW["dave"]))) == \
        b"-ERR [AUTH] plaintext authentication refused here: use STLS first"
    assert c.cmd("AUTH LOGIN") == \
        b"-ERR [AUTH] plaintext authentication refused here: use STLS first"
    start_tls(c, client_ctx(pki))
    assert ALL in capa(c)
    assert c.cmd(b"AUTH PLAIN " + b64(plain_msg("dave", PW["dave"]))).startswith(b"+OK")
    assert not any(l.startswith("SASL") for l in capa(c))

    # A restricted list, and none at all.
    s = server(auth_mechanisms="SCRAM-SHA-256")
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    assert "SASL SCRAM-SHA-256" in capa(c)
    assert c.cmd("AUTH PLAIN") == b"-ERR unsupported authentication mechanism"
    s = server(auth_mechanisms="none")
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    assert not any(l.startswith("SASL") for l in capa(c))


# ------------------------------------------------------------ PLAIN, LOGIN

@pytest.mark.parametrize("user", sorted(USERS))
def test_plain_with_initial_response_every_scheme(env, server, conns, user):
    env.deliver(user, MESSAGES[0])
    s = server()
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    r = c.cmd(b"AUTH PLAIN " + b64(plain_msg(user, PW[user])))
    assert r.startswith(b"+OK maildrop has 1 messages"), r
    status, body = c.multi("RETR 1")
    assert body == wire_form(MESSAGES[0])
    assert re.search(rf"event=login session=\S+ user={user} ", s.log())


def test_plain_without_initial_response_and_authzid(server, conns):
    s = server()
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    assert c.cmd("AUTH PLAIN") == b"+ "
    assert c.cmd(b64(plain_msg("alice", PW["alice"], authzid="alice"))).startswith(b"+OK")

    # Acting as another user (proxy authorization) is refused.
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    r = c.cmd(b"AUTH PLAIN " + b64(plain_msg("alice", PW["alice"], authzid="bob")))
    assert r.startswith(b"-ERR [AUTH]"), r


def test_login_mechanism(server, conns):
    s = server()
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    r = c.cmd("AUTH LOGIN")
    assert challenge(r) == b"Username:"
    r = c.cmd(b64(b"carol"))
    assert challenge(r) == b"Password:"
    assert c.cmd(b64(PW["carol"].encode())).startswith(b"+OK")
    # The user name as initial response (what some clients send).
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    r = c.cmd(b"AUTH LOGIN " + b64(b"carol"))
    assert challenge(r) == b"Password:"
    assert c.cmd(b64(b"wrong")) == b"-ERR [AUTH] invalid user name or password"


def test_wrong_and_unknown_same_answer(server, conns):
    s = server()
    answers = set()
    for user, pw in (("alice", "wrong"), ("nobody-here", "x"), ("dave", "")):
        c = RawPOP3(s.host, s.port)
        conns.append(c)
        answers.add(c.cmd(b"AUTH PLAIN " + b64(plain_msg(user, pw))))
    # An empty password is malformed PLAIN; the other two are one answer.
    assert answers == {b"-ERR [AUTH] invalid user name or password",
                       b"-ERR [AUTH] authentication exchange failed"}, answers
    assert "event=auth-failed" in s.log() and "rip=127.0.0.1 mech=PLAIN" in s.log()


# ------------------------------------------------------------ SCRAM

@pytest.mark.parametrize("user", ["sam", "dave"])
@pytest.mark.parametrize("initial", [True, False])
def test_scram_sha256(env, server, conns, user, initial):
    """sam has a stored {SCRAM-SHA-256} entry; dave a {PLAIN} one, from
    which the server derives the keys."""
    env.deliver(user, MESSAGES[1])
    s = server()
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    r = scram_login(c, user, PW[user], initial)
    assert r.startswith(b"+OK maildrop has 1 messages"), r
    assert c.multi("RETR 1")[1] == wire_form(MESSAGES[1])


@pytest.mark.parametrize("user,password", [("sam", "wrong"), ("alice", PW["alice"]),
                                           ("ghost", "x")])
def test_scram_failures(server, conns, user, password):
    """Wrong password; a crypt-only user (no SCRAM keys can exist); an
    unknown user: the same steps, no server signature, the same -ERR."""
    s = server()
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    sc = ScramClient(user, password)
    r = c.cmd(b"AUTH SCRAM-SHA-256 " + b64(sc.first()))
    first = challenge(r)
    assert re.fullmatch(rb"r=[!-+\--~]+,s=[A-Za-z0-9+/=]+,i=\d+", first), first
    r = c.cmd(b64(sc.final(first)))
    assert r == b"-ERR [AUTH] invalid user name or password", r


def test_scram_salt_stable_for_unknown_user(server, conns):
    """An unknown user's fake salt does not change between attempts, so
    probing cannot tell it from a real one."""
    s = server()
    salts = []
    for _ in range(2):
        c = RawPOP3(s.host, s.port)
        conns.append(c)
        r = c.cmd(b"AUTH SCRAM-SHA-256 " + b64(b"n,,n=ghost,r=abcdef"))
        attrs = dict(kv.split(b"=", 1) for kv in challenge(r).split(b","))
        salts.append(attrs[b"s"])
        assert attrs[b"i"] == b"4096"
    assert salts[0] == salts[1]


# ------------------------------------------------------------ error paths

def test_exchange_error_paths(server, conns):
    s = server(max_bad_commands="50", max_auth_failures="50")
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    assert c.cmd("AUTH X-UNKNOWN") == b"-ERR unsupported authentication mechanism"
    # Cancel at each step.
    assert c.cmd("AUTH PLAIN") == b"+ "
    assert c.cmd("*") == b"-ERR authentication cancelled"
    r = c.cmd("AUTH LOGIN")
    assert c.cmd(b64(b"alice")).startswith(b"+ ")
    assert c.cmd("*") == b"-ERR authentication cancelled"
    # Bad base64: in the initial response and in an answer.
    assert c.cmd("AUTH PLAIN a$b=") == b"-ERR invalid base64 in authentication exchange"
    assert c.cmd("AUTH PLAIN") == b"+ "
    assert c.cmd("AGFsaWNl AA==") == b"-ERR invalid base64 in authentication exchange"
    assert c.cmd("AUTH PLAIN AGFsaWNlAA") == b"-ERR invalid base64 in authentication exchange"
    # Wrong step order: SCRAM's final message first.
    r = c.cmd(b"AUTH SCRAM-SHA-256 " + b64(b"c=biws,r=abc,p=AAAA"))
    assert r == b"-ERR [AUTH] authentication exchange failed", r
    # Channel binding demanded: not offered.
    r = c.cmd(b"AUTH SCRAM-SHA-256 " + b64(b"p=tls-unique,,n=sam,r=abc"))
    assert r == b"-ERR [AUTH] authentication exchange failed", r
    # A non-empty answer to the server signature.
    sc = ScramClient("sam", PW["sam"])
    r = c.cmd(b"AUTH SCRAM-SHA-256 " + b64(sc.first()))
    r = c.cmd(b64(sc.final(challenge(r))))
    sc.check_server_final(challenge(r))
    assert c.cmd(b64(b"extra")) == b"-ERR [AUTH] authentication exchange failed"
    # PLAIN with a missing separator, or too many.
    assert c.cmd(b"AUTH PLAIN " + b64(b"alice\0pw")) == \
        b"-ERR [AUTH] authentication exchange failed"
    assert c.cmd(b"AUTH PLAIN " + b64(b"\0alice\0pw\0x")) == \
        b"-ERR [AUTH] authentication exchange failed"
    # An oversized answer is dropped and refused; the session goes on.
    assert c.cmd("AUTH PLAIN") == b"+ "
    c.send(b"A" * 5000 + b"\r\n")
    assert c.readline() == b"-ERR authentication answer too long"
    assert c.cmd("NOOP") == b"-ERR command not valid before login"
    # A message longer than any mechanism takes, though its base64 fits
    # the line; and a password over the 511-byte limit: just wrong.
    assert c.cmd("AUTH PLAIN") == b"+ "
    assert c.cmd(b64(b"\0alice\0" + b"p" * 1019)) == b"-ERR authentication answer too long"
    assert c.cmd("AUTH PLAIN") == b"+ "
    r = c.cmd(b64(b"\0alice\0" + b"p" * 1010))
    assert r == b"-ERR [AUTH] invalid user name or password", r
    # After all that, a good login still works.
    assert c.cmd(b"AUTH PLAIN " + b64(plain_msg("alice", PW["alice"]))).startswith(b"+OK")
    assert c.cmd("AUTH PLAIN") == b"-ERR command not valid after login"


def test_failures_close_after_max(server, conns):
    s = server(max_auth_failures="2")
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    for _ in range(2):
        r = c.cmd(b"AUTH PLAIN " + b64(plain_msg("alice", "nope")))
        assert r == b"-ERR [AUTH] invalid user name or password"
    assert c.wait_closed()


# ------------------------------------------------------------ real clients

@needs_curl
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("sasl_ir", [False, True])
def test_curl_sasl(env, server, mech, sasl_ir):
    fill(env, "bob")
    s = server()
    cmd = [CURL, "-sS", "-v", "--login-options", f"AUTH={mech}",
           "-u", f"bob:{PW['bob']}"]
    if sasl_ir:
        cmd.append("--sasl-ir")
    r = run(cmd + [f"pop3://127.0.0.1:{s.port}/1"])
    assert r.returncode == 0, f"curl {mech}: {r.returncode} {r.stderr!r}"
    assert f"> AUTH {mech}".encode() in r.stderr, r.stderr
    assert r.stdout in [wire_form(m) for m in MESSAGES]
    # A wrong password: curl's "login denied" (67).
    r = run(cmd[:-2] + ["-u", "bob:wrong", f"pop3://127.0.0.1:{s.port}/"])
    assert r.returncode == 67, f"curl {mech} wrong password: {r.returncode} {r.stderr!r}"


@needs_mpop
@pytest.mark.parametrize("auth,tls", [("scram-sha-256", False), ("scram-sha-256", True),
                                      ("plain", True), ("login", True)])
def test_mpop_sasl(env, server, pki, auth, tls):
    """mpop authenticates through GNU SASL, an independent SCRAM
    implementation; PLAIN and LOGIN only under TLS, as mpop insists."""
    user = "sam"
    fill(env, user)
    s = tls_server(server, pki)
    home = env.root / "mpop-home"
    home.mkdir()
    pwfile = home / "pw"
    pwfile.write_text(PW[user] + "\n")
    os.chmod(pwfile, 0o600)
    dest = home / "in"
    for sub in ("new", "cur", "tmp"):
        (dest / sub).mkdir(parents=True)
    cmd = [MPOP, "--host=localhost", f"--auth={auth}", f"--user={user}",
           f"--passwordeval=cat {pwfile}", f"--uidls-file={home / 'uidls'}",
           f"--delivery=maildir,{dest}"]
    if tls:
        cmd += [f"--port={s.tls_port}", "--tls=on", "--tls-starttls=off",
                f"--tls-trust-file={pki.ca}"]
    else:
        cmd += [f"--port={s.port}", "--tls=off"]
    r = run(cmd, env=dict(os.environ, HOME=str(home)))
    assert r.returncode == 0, f"mpop {auth}: {r.returncode} {r.stderr!r} {r.stdout!r}"
    got = [p.read_bytes() for sub in ("new", "cur") for p in (dest / sub).iterdir()]
    assert len(got) == len(MESSAGES)
    assert env.files(user) == {}
    assert f"mech={auth.upper()}" not in s.log()  # no failure was logged


# ------------------------------------------------------------ penalty

def connect_from(s, source):
    sock = socket.socket()
    sock.settimeout(SOCKET_TIMEOUT)
    sock.bind((source, 0))
    sock.connect((s.host, s.port))
    c = RawPOP3.__new__(RawPOP3)
    c.sock = sock
    c.buf = bytearray()
    c.greeting = c.readline()
    return c


def test_repeated_failures_slow_one_address_only(server, conns):
    s = server(auth_failure_delay_ms="0", auth_penalty_max_ms="2000",
               max_auth_failures="10")
    c = connect_from(s, "127.0.0.1")
    conns.append(c)
    times = []
    for _ in range(5):
        t = time.monotonic()
        r = c.cmd(b"AUTH PLAIN " + b64(plain_msg("alice", "guess")))
        times.append(time.monotonic() - t)
        assert r == b"-ERR [AUTH] invalid user name or password", r
    # Free tries, then 1 s, then 2 s (the cap here).
    assert max(times[:3]) < 0.8, times
    assert 0.9 < times[3] < 1.9, times
    assert 1.9 < times[4] < 3.5, times
    assert s.log().count("event=auth-penalty") == 2
    assert re.search(r"event=auth-failed session=\S+ user=alice rip=127\.0\.0\.1", s.log())

    # Another address is not slowed...
    other = connect_from(s, "127.0.0.2")
    conns.append(other)
    t = time.monotonic()
    assert other.cmd(b"AUTH PLAIN " + b64(plain_msg("alice", PW["alice"]))).startswith(b"+OK")
    assert time.monotonic() - t < 0.8
    assert other.cmd("QUIT").startswith(b"+OK")
    # ...and the real user on the guesser's address still gets in, after
    # the capped wait: never locked out.
    c2 = connect_from(s, "127.0.0.1")
    conns.append(c2)
    t = time.monotonic()
    r = c2.cmd(b"USER alice")
    r = c2.cmd(f"PASS {PW['alice']}")
    assert r.startswith(b"+OK"), r
    assert 1.9 < time.monotonic() - t < 3.5


# ------------------------------------------------------------ SIGHUP reload

def make_cert(pki, name):
    """A second server certificate from the test CA, with its own key."""
    key = pki.dir / f"{name}.key"
    cert = pki.dir / f"{name}.pem"
    csr = pki.dir / f"{name}.csr"
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-subj", f"/CN=localhost/O={name}", "-keyout", key, "-out", csr)
    _openssl("x509", "-req", "-in", csr, "-CA", pki.ca, "-CAkey", pki.ca_key,
             "-CAcreateserial", "-days", "2", "-extfile", pki.dir / "server.ext",
             "-out", cert)
    return cert, key


def peer_org(c):
    subject = dict(x[0] for x in c.sock.getpeercert()["subject"])
    return subject.get("organizationName")


def test_sighup_reloads_certificate(env, server, pki, conns):
    live = env.root / "live"
    live.mkdir()
    os.chmod(live, 0o755)
    first_cert, first_key = make_cert(pki, "first")
    second_cert, second_key = make_cert(pki, "second")
    cert, key = live / "cert.pem", live / "key.pem"

    def install(c, k, key_owner_uid):
        cert.write_bytes(c.read_bytes())
        key.write_bytes(k.read_bytes())
        os.chmod(key, 0o600)
        if IS_ROOT:
            os.chown(key, key_owner_uid, -1)

    nobody = 65534
    install(first_cert, first_key, nobody)
    fill(env)
    s = server(tls_cert_file=cert, tls_key_file=key, tls_listen="127.0.0.1:0")
    tls_port = int(re.findall(r"event=listening addr=127\.0\.0\.1:(\d+)", s.log())[1])
    ctx = client_ctx(pki)
    old = TLSPOP3(s.host, tls_port, ctx)
    conns.append(old)
    assert peer_org(old) == "first"
    old.login("alice", PW["alice"])

    install(second_cert, second_key, nobody)
    mark = len(s.log())
    os.kill(s.pid, signal.SIGHUP)
    s.wait_log(r"event=reload tls=reloaded", start=mark)
    new = TLSPOP3(s.host, tls_port, ctx)
    conns.append(new)
    assert peer_org(new) == "second"
    # STLS on the plain port uses the new one too.
    plain = start_tls(RawPOP3(s.host, s.port), ctx)
    conns.append(plain)
    assert peer_org(plain) == "second"
    # The session opened before the reload goes on undisturbed.
    assert old.cmd("STAT").startswith(b"+OK 3 ")
    assert old.cmd("QUIT").startswith(b"+OK")

    # The master reads the files as root: a root-only key reloads too.
    install(first_cert, first_key, 0)
    mark = len(s.log())
    os.kill(s.pid, signal.SIGHUP)
    s.wait_log(r"event=reload tls=reloaded", start=mark)
    c = TLSPOP3(s.host, tls_port, ctx)
    conns.append(c)
    assert peer_org(c) == "first"
    # A broken reload (a garbage certificate) keeps the one in use and says so.
    cert.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    mark = len(s.log())
    os.kill(s.pid, signal.SIGHUP)
    s.wait_log(r"event=reload-failed", start=mark)
    after = TLSPOP3(s.host, tls_port, ctx)
    conns.append(after)
    assert peer_org(after) == "first"
    assert after.cmd("CAPA").startswith(b"+OK")
