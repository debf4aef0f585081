"""auth_mechanisms = auto (the default): popboxd offers SCRAM-SHA-256 only
when its passwd-file has at least one entry that can serve it ({SCRAM-SHA-256},
{PLAIN}/{CLEAR}).  A site of crypt hashes only (what `popbox passwd` writes
by default) then offers PLAIN and LOGIN, so a client that prefers SCRAM no
longer fails a fake exchange once per session (the failed-login pause and
the per-address penalty every time).  The master decides, at start and on
SIGHUP; an explicit list still means exactly what it says.
"""
import os
import re
import signal
import subprocess

import pytest

from conftest import BUILD, MESSAGES, USERS, RawPOP3
from test_sasl import b64, capa, plain_msg, scram_login
from test_tls import conns, fill, pki, tls_server  # noqa: F401

PW = {u: pw for u, (_, pw) in USERS.items()}
# USERS whose entry can serve SCRAM: sam ({SCRAM-SHA-256}), dave ({PLAIN}).
SCRAM_CAPABLE = ("sam", "dave")
FETCH = BUILD / "popbox-fetch"
WITH_SCRAM = "SASL PLAIN LOGIN SCRAM-SHA-256"
WITHOUT_SCRAM = "SASL PLAIN LOGIN"
UNSUPPORTED = b"-ERR unsupported authentication mechanism"


def crypt_only(env):
    """Rewrites the passwd-file with the crypt users alone."""
    env.hashes = {u: h for u, h in env.hashes.items() if u not in SCRAM_CAPABLE}
    env.write_passwd()


def sasl_line(c):
    lines = [l for l in capa(c) if l.startswith("SASL")]
    assert len(lines) == 1, lines
    return lines[0]


def auth_list(c):
    status, body = c.multi("AUTH")
    assert status.startswith(b"+OK"), status
    return body.decode().split("\r\n")[:-1]


def connect(s, conns):  # noqa: F811
    c = RawPOP3(s.host, s.port)
    conns.append(c)
    return c


def test_crypt_only_site_offers_no_scram(env, server, conns):  # noqa: F811
    crypt_only(env)
    s = server()
    assert re.search(r'event=sasl-offer mechanisms="PLAIN LOGIN" from=auto '
                     r'note="no passdb_file entry can use SCRAM-SHA-256"', s.log())
    c = connect(s, conns)
    assert sasl_line(c) == WITHOUT_SCRAM
    assert auth_list(c) == ["PLAIN", "LOGIN"]
    # Not offered is not accepted: an unknown mechanism, no exchange, no
    # failed login (nothing for the penalty to count).
    assert c.cmd(b"AUTH SCRAM-SHA-256 " + b64(b"n,,n=alice,r=abcdef")) == UNSUPPORTED
    assert c.cmd("AUTH SCRAM-SHA-256") == UNSUPPORTED
    assert "event=auth-failed" not in s.log()
    # PLAIN still logs a crypt user in.
    assert c.cmd(b"AUTH PLAIN " + b64(plain_msg("alice", PW["alice"]))).startswith(b"+OK")


@pytest.mark.parametrize("user", SCRAM_CAPABLE)
def test_one_scram_capable_entry_offers_scram_to_all(env, server, conns, user):  # noqa: F811
    """One {SCRAM-SHA-256} or {PLAIN} entry among crypt ones: SCRAM is
    offered to everyone, a crypt user gets the fake exchange as before."""
    hashes = dict(env.hashes)
    crypt_only(env)
    env.hashes[user] = hashes[user]
    env.write_passwd()
    s = server()
    assert 'event=sasl-offer mechanisms="PLAIN LOGIN SCRAM-SHA-256" from=auto' in s.log()
    c = connect(s, conns)
    assert sasl_line(c) == WITH_SCRAM
    assert auth_list(c) == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
    assert scram_login(c, user, PW[user]).startswith(b"+OK")
    c = connect(s, conns)
    assert scram_login(c, "alice", PW["alice"]) == \
        b"-ERR [AUTH] invalid user name or password"


def test_explicit_list_is_taken_as_written(env, server, conns):  # noqa: F811
    crypt_only(env)
    s = server(auth_mechanisms="PLAIN SCRAM-SHA-256")
    assert 'event=sasl-offer mechanisms="PLAIN SCRAM-SHA-256" from=auth_mechanisms' \
        in s.log()
    c = connect(s, conns)
    assert sasl_line(c) == "SASL PLAIN SCRAM-SHA-256"
    assert c.cmd("AUTH LOGIN") == UNSUPPORTED
    # Offered to all, fake for a crypt user, as listed.
    assert scram_login(c, "alice", PW["alice"]) == \
        b"-ERR [AUTH] invalid user name or password"


def wait_reload(s, mark, pattern, retiring):
    """Waits for the reload's log line and for `retiring` old login
    processes to have stopped accepting, so the next connection reaches
    a new one."""
    s.wait_log(pattern, start=mark)
    s.wait_log(r"(?s)(event=retiring role=login.*){%d}" % retiring, start=mark)


def test_sighup_rechecks_the_passwd_file(env, server, conns):  # noqa: F811
    sam_hash = env.hashes["sam"]
    crypt_only(env)
    s = server(workers="2")
    before = connect(s, conns)
    assert sasl_line(before) == WITHOUT_SCRAM

    # Nothing changed: no login process is replaced.
    mark = len(s.log())
    os.kill(s.pid, signal.SIGHUP)
    s.wait_log(r'event=reload note="nothing to change', start=mark)
    assert "event=retiring" not in s.log()[mark:]

    # The first SCRAM user: offered to new connections after SIGHUP.
    env.hashes["sam"] = sam_hash
    env.write_passwd()
    mark = len(s.log())
    os.kill(s.pid, signal.SIGHUP)
    s.wait_log(r'event=sasl-offer mechanisms="PLAIN LOGIN SCRAM-SHA-256" from=auto',
               start=mark)
    wait_reload(s, mark, r"event=reload tls=none login_processes_replaced=2", 2)
    after = connect(s, conns)
    assert sasl_line(after) == WITH_SCRAM
    assert scram_login(after, "sam", PW["sam"]).startswith(b"+OK")
    # A session from before the reload goes on in its old process.
    assert sasl_line(before) == WITHOUT_SCRAM
    assert before.cmd(b"AUTH PLAIN " + b64(plain_msg("bob", PW["bob"]))).startswith(b"+OK")
    assert before.cmd("QUIT").startswith(b"+OK")

    # And back: the last SCRAM user removed, SCRAM no longer offered.
    crypt_only(env)
    mark = len(s.log())
    os.kill(s.pid, signal.SIGHUP)
    wait_reload(s, mark, r"event=reload tls=none login_processes_replaced=2", 2)
    c = connect(s, conns)
    assert sasl_line(c) == WITHOUT_SCRAM


def fetch_all(env, s, pki, user):  # noqa: F811
    """popbox-fetch, auth auto (SCRAM-SHA-256 first whenever offered), over
    implicit TLS into a fresh Maildir: (CompletedProcess, the Maildir)."""
    home = env.root / f"fetch-home-{len(list(env.root.glob('fetch-home-*')))}"
    home.mkdir()
    pwfile = home / "pw"
    pwfile.write_text(PW[user] + "\n")
    os.chmod(pwfile, 0o600)
    dest = home / "in"
    cmd = [str(FETCH), f"pop3s://{user}@localhost:{s.tls_port}", "--to", str(dest),
           "--ca-file", str(pki.ca), "--password-command", f"cat {pwfile}",
           "--uidl-file", str(home / "uidl")]
    r = subprocess.run(cmd, capture_output=True, timeout=60,
                       env=dict(os.environ, HOME=str(home),
                                XDG_CONFIG_HOME=str(home / "config"),
                                XDG_STATE_HOME=str(home / "state")))
    return r, dest


def test_client_preferring_scram_no_longer_fails(env, server, pki):  # noqa: F811
    """The reason for auto: against a crypt user, a client that takes
    SCRAM-SHA-256 whenever it is offered (popbox-fetch's auth auto, and
    other mail clients) failed a fake exchange every session with the old
    default, paying the failed-login pause and feeding the per-address
    penalty, before falling back to PLAIN; with auto it logs in at once."""
    crypt_only(env)
    fill(env, "alice")
    old = tls_server(server, pki, auth_mechanisms="PLAIN LOGIN SCRAM-SHA-256")
    r, dest = fetch_all(env, old, pki, "alice")
    assert r.returncode == 0, r
    assert re.search(r"event=auth-failed session=\S+ user=alice", old.log()), \
        "popbox-fetch was expected to try SCRAM first and fail"

    fill(env, "alice")
    s = tls_server(server, pki)
    r, dest = fetch_all(env, s, pki, "alice")
    assert r.returncode == 0, r
    assert "event=auth-failed" not in s.log()
    assert re.search(r"event=login session=\S+ user=alice ", s.log()), s.log()
    assert env.files("alice") == {}
    got = [p for sub in ("new", "cur") for p in (dest / sub).iterdir()]
    assert len(got) == len(MESSAGES)
