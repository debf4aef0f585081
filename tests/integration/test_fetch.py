"""popbox-fetch (issue 6) against popboxd as the server, end to end.

1. Transport: plain POP3 only when the account says tls = none; STLS and
   implicit TLS verified against a CA file; a certificate for another
   name, an unknown CA or a wrong SHA-256 pin stop the run (exit 1) before
   any credential is sent (popboxd logs no login and no failed one); a pin
   alone is enough; an account that asks for STLS never falls back to
   plain text when the server does not offer it.
2. Authentication: SCRAM-SHA-256 (sam), a crypt user for whom popboxd
   refuses SCRAM (auto falls back), APOP (dave, apop = yes), a wrong
   password (exit 1), password_command.
3. Policies: delete after download (server empty, local copies byte for
   byte the maildrop's messages with CRLF -> LF), keep = yes, keep = N
   days (POPBOX_FETCH_NOW moved past N days deletes without downloading
   again), only_new = no, size_limit with oversize = skip and headers,
   max_messages, --list changing nothing.
4. Destinations: Maildir, mbox (From_ lines, mboxrd quoting), an MDA
   (exit 0 stored and deleted, 75 temporary: nothing deleted, other
   permanent).
5. The command line: the quick form (pop3s:// and pop3:// URLs), several
   accounts at once (-j), -a, silence under cron, exit codes 2 and 75.
6. The issue's "done when": the demo of `make run` (scripts/run-demo.sh,
   self-signed certificate in run/tls/cert.pem) fetched over TLS with
   verification, kept N days, then deleted.
"""
import hashlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (BUILD, IS_ROOT, MESSAGES, REPO, USERS, top_form,
                      wait_for)
from fetch_helpers import FETCH as FETCH_BIN
from fetch_helpers import SUMMARY as SUMMARY_RE
from fetch_helpers import (EXIT_OK, EXIT_PERM, EXIT_TEMP, EXIT_USAGE,
                           assert_same_messages, check_sanitizers, fetch_env,
                           lf_form, maildir_messages, make_maildir,
                           mbox_messages, numbered_messages, run_fetch,
                           write_config)
from test_tls import _openssl, pki, tls_server  # noqa: F401  (pki: fixture)

PW = {u: pw for u, (_, pw) in USERS.items()}
DAY = 86400


# ---------------------------------------------------------------- helpers


class Local:
    """The client side of one test: a HOME, a config file, destinations."""

    def __init__(self, root: Path):
        self.dir = root / "fetch"
        self.home = self.dir / "home"
        self.home.mkdir(parents=True)
        self.conf = self.dir / "popbox-fetch.conf"

    def maildir(self, name="inbox") -> Path:
        return make_maildir(self.dir / name)

    def uidl(self, name="acct") -> Path:
        return self.dir / f"{name}.uidl"

    def account(self, srv, user, dest=None, tls="none", port=None,
                host="127.0.0.1", name="acct", **keys):
        """Config keys of one account on popboxd srv."""
        if port is None:
            port = srv.tls_port if tls == "implicit" else srv.port
        d = {"host": host, "port": port, "tls": tls, "user": user,
             "password": PW[user],
             "deliver": f"maildir:{dest or self.maildir()}",
             "uidl_file": self.uidl(name)}
        d.update(keys)
        return d

    def config(self, **accounts) -> Path:
        return write_config(self.conf, accounts)

    def run(self, *args, **kw):
        return run_fetch(["-c", self.conf, *args], self.home, **kw)


@pytest.fixture
def local(env):
    return Local(env.root)


def fill(env, user, msgs):
    for m in msgs:
        env.deliver(user, m)
    return list(msgs)


def server_messages(env, user) -> list:
    """The maildrop's messages (contents, sorted)."""
    return sorted(env.files(user).values())


def assert_no_auth(srv):
    log = srv.log()
    assert "event=login " not in log and "event=auth-failed" not in log, (
        f"a credential reached popboxd:\n{log}")


def fingerprint(cert: Path, colons=True) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    h = hashlib.sha256(der).hexdigest().upper()
    return ":".join(h[i:i + 2] for i in range(0, 64, 2)) if colons else h.lower()


MSGS = MESSAGES + numbered_messages(6, size=900, tag="pb")


# ---------------------------------------------------------------- 1. transport


def test_plain_explicit_delete_byte_exact(env, server, local):
    """tls = none said explicitly: fetched, byte for byte, then deleted."""
    s = server()
    orig = fill(env, "sam", MSGS)
    dest = local.maildir()
    local.config(acct=local.account(s, "sam", dest))
    r = local.run("-v", expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), orig)
    assert env.files("sam") == {}, "not deleted on the server"
    sm = r.summary()
    assert (sm["fetched"], sm["deleted"], sm["kept"], sm["errors"]) == \
        (len(orig), len(orig), 0, 0), r
    assert sm["bytes"] >= sum(len(lf_form(m)) for m in orig), r
    # A second run finds nothing and says so.
    r = local.run("-v", expect=EXIT_OK)
    assert r.summary()["fetched"] == 0, r


@pytest.mark.parametrize("user", ["sam", "alice"])
@pytest.mark.parametrize("mode", ["stls", "implicit"])
def test_tls_verified(env, server, local, pki, mode, user):  # noqa: F811
    """STLS and implicit TLS against the test CA, host name localhost; sam
    logs in with SCRAM-SHA-256, alice (a crypt hash: popboxd refuses SCRAM
    for her) through auto's fallback."""
    s = tls_server(server, pki)
    orig = fill(env, user, MSGS)
    dest = local.maildir()
    local.config(acct=local.account(s, user, dest, tls=mode, host="localhost",
                                    ca_file=pki.ca))
    local.run(expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), orig)
    assert env.files(user) == {}
    assert re.search(rf"event=login session=\S+ user={user} ", s.log()), s.log()


@pytest.fixture
def wrong_name_cert(pki):  # noqa: F811
    """A certificate the test CA signed for mail.example.org only."""
    d = pki.dir / "wrong-name"
    if not d.exists():
        d.mkdir()
        key, csr, cert, ext = d / "key.pem", d / "req.csr", d / "cert.pem", d / "ext"
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-subj",
                 "/CN=mail.example.org", "-keyout", key, "-out", csr)
        ext.write_text("basicConstraints=critical,CA:FALSE\n"
                       "extendedKeyUsage=serverAuth\n"
                       "subjectAltName=DNS:mail.example.org\n")
        _openssl("x509", "-req", "-in", csr, "-CA", pki.ca, "-CAkey",
                 pki.ca_key, "-CAcreateserial", "-days", "2", "-extfile",
                 ext, "-out", cert)
        if IS_ROOT:
            os.chown(key, 0, 0)
        os.chmod(key, 0o600)
        os.chmod(cert, 0o644)
    return d / "cert.pem", d / "key.pem"


@pytest.mark.parametrize("mode", ["stls", "implicit"])
def test_wrong_name_refused_before_login(env, server, local, pki,  # noqa: F811
                                         wrong_name_cert, mode):
    cert, key = wrong_name_cert
    s = tls_server(server, pki, tls_cert_file=cert, tls_key_file=key)
    orig = fill(env, "sam", MSGS[:3])
    dest = local.maildir()
    local.config(acct=local.account(s, "sam", dest, tls=mode, host="localhost",
                                    ca_file=pki.ca))
    r = local.run(expect=EXIT_PERM)
    assert r.err.strip(), f"no error text:\n{r!r}"
    assert_no_auth(s)
    assert maildir_messages(dest) == []
    assert server_messages(env, "sam") == sorted(orig)


@pytest.mark.parametrize("mode", ["stls", "implicit"])
def test_unknown_ca_refused_before_login(env, server, local, pki, mode):  # noqa: F811
    """No ca_file: the system store, which does not know the test CA."""
    s = tls_server(server, pki)
    fill(env, "sam", MSGS[:3])
    dest = local.maildir()
    local.config(acct=local.account(s, "sam", dest, tls=mode, host="localhost"))
    r = local.run(expect=EXIT_PERM)
    assert r.err.strip(), f"no error text:\n{r!r}"
    assert_no_auth(s)
    assert maildir_messages(dest) == []


@pytest.mark.parametrize("mode", ["stls", "implicit"])
def test_wrong_fingerprint_refused_before_login(env, server, local, pki, mode):  # noqa: F811
    s = tls_server(server, pki)
    fill(env, "sam", MSGS[:3])
    dest = local.maildir()
    # The CA's fingerprint is not the server certificate's.
    local.config(acct=local.account(s, "sam", dest, tls=mode, host="localhost",
                                    fingerprint=fingerprint(pki.ca)))
    local.run(expect=EXIT_PERM)
    assert_no_auth(s)
    assert maildir_messages(dest) == []


@pytest.mark.parametrize("colons", [True, False])
@pytest.mark.parametrize("mode", ["stls", "implicit"])
def test_pin_alone(env, server, local, pki, mode, colons):  # noqa: F811
    """A right pin is enough: no CA file, and the host is 127.0.0.1."""
    s = tls_server(server, pki)
    orig = fill(env, "sam", MSGS[:4])
    dest = local.maildir()
    local.config(acct=local.account(s, "sam", dest, tls=mode,
                                    fingerprint=fingerprint(pki.cert, colons)))
    local.run(expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), orig)


def test_stls_required_no_fallback(env, server, local):
    """A server without STLS (no certificate): an account that asks for
    STLS stops; nothing is sent in clear (the STARTTLS-stripping class)."""
    s = server()
    orig = fill(env, "alice", MSGS[:3])
    dest = local.maildir()
    local.config(acct=local.account(s, "alice", dest, tls="stls"))
    r = local.run(expect=EXIT_PERM)
    assert r.err.strip(), r
    assert_no_auth(s)
    assert server_messages(env, "alice") == sorted(orig)


def test_quick_pop3_url_means_stls(env, server, local):
    """pop3:// without --tls: STLS, so a server without it is refused."""
    s = server()
    fill(env, "alice", MSGS[:2])
    pwfile = local.dir / "pw"
    pwfile.write_text(PW["alice"] + "\n")
    dest = local.maildir()
    r = run_fetch([f"pop3://alice@127.0.0.1:{s.port}", "--to", dest,
                   "--password-command", f"cat {pwfile}",
                   "--uidl-file", local.uidl()], local.home)
    assert r.rc == EXIT_PERM, r
    assert_no_auth(s)
    assert maildir_messages(dest) == []


# ---------------------------------------------------------------- 2. auth


def test_apop(env, server, local):
    s = server(apop="yes")
    orig = fill(env, "dave", MSGS[:4])
    dest = local.maildir()
    local.config(acct=local.account(s, "dave", dest, auth="apop"))
    local.run(expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), orig)
    assert env.files("dave") == {}


def test_apop_not_offered_is_an_error(env, server, local):
    """auth = apop against a server that offers none: no silent fallback
    to sending the password."""
    s = server()
    fill(env, "dave", MSGS[:2])
    dest = local.maildir()
    local.config(acct=local.account(s, "dave", dest, auth="apop"))
    r = local.run()
    assert r.rc == EXIT_PERM, r
    assert "event=login " not in s.log()


@pytest.mark.parametrize("mode", ["none", "implicit"])
def test_auto_falls_back_past_apop(env, server, local, pki, mode):  # noqa: F811
    """popboxd with apop = yes announces APOP to everyone but can serve it
    only for {PLAIN} secrets (as SCRAM): for a crypt user auto must go on
    past a refused APOP as it goes past a refused SCRAM."""
    s = tls_server(server, pki, apop="yes")
    orig = fill(env, "alice", MSGS[:3])
    dest = local.maildir()
    local.config(acct=local.account(s, "alice", dest, tls=mode, host="localhost",
                                    ca_file=pki.ca))
    local.run(expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), orig)


@pytest.mark.parametrize("user", ["sam", "alice", "dave"])
def test_wrong_password(env, server, local, user):
    s = server(apop="yes")
    orig = fill(env, user, MSGS[:3])
    dest = local.maildir()
    acct = local.account(s, user, dest)
    acct["password"] = "not-the-password"
    local.config(acct=acct)
    r = local.run(expect=EXIT_PERM)
    assert "event=login " not in s.log()
    assert maildir_messages(dest) == []
    assert server_messages(env, user) == sorted(orig)
    # Something failed: the summary is printed even though stdout is no TTY.
    sm = r.summary()
    assert sm["errors"] >= 1 and sm["fetched"] == 0, r


def test_password_command(env, server, local):
    s = server()
    orig = fill(env, "bob", MSGS[:3])     # bob's password has spaces
    pwfile = local.dir / "bob.pw"
    pwfile.write_text(PW["bob"] + "\n")
    dest = local.maildir()
    acct = local.account(s, "bob", dest, password=None,
                         password_command=f"cat {pwfile}")
    local.config(acct=acct)
    local.run(expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), orig)


def test_failing_password_command(env, server, local):
    s = server()
    fill(env, "bob", MSGS[:1])
    local.config(acct=local.account(s, "bob", password=None,
                                    password_command="exit 3"))
    r = local.run()
    assert r.rc in (EXIT_PERM, EXIT_TEMP), r
    assert_no_auth(s)


# ---------------------------------------------------------------- 3. policies


def test_keep_yes(env, server, local):
    s = server()
    orig = fill(env, "sam", MSGS)
    before = server_messages(env, "sam")
    dest = local.maildir()
    local.config(acct=local.account(s, "sam", dest, keep="yes"))
    r = local.run("-v", expect=EXIT_OK)
    sm = r.summary()
    assert (sm["fetched"], sm["deleted"], sm["kept"]) == (len(orig), 0, len(orig)), r
    assert_same_messages(maildir_messages(dest), orig)
    assert server_messages(env, "sam") == before
    # Nothing new: nothing fetched again.
    r = local.run("-v", expect=EXIT_OK)
    assert r.summary()["fetched"] == 0, r
    assert_same_messages(maildir_messages(dest), orig)
    # One new message: only it.
    new = numbered_messages(1, tag="later")
    fill(env, "sam", new)
    r = local.run("-v", expect=EXIT_OK)
    assert r.summary()["fetched"] == 1, r
    assert_same_messages(maildir_messages(dest), orig + new)
    assert len(server_messages(env, "sam")) == len(orig) + 1


def uidl_records(path: Path) -> list:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    assert lines[0] == "popbox-fetch-uidl 1", lines[:1]
    return lines[1:]


def test_keep_days(env, server, local):
    """keep = 3: kept while younger than 3 days after the first download,
    then DELEted without being downloaded again."""
    s = server()
    orig = fill(env, "sam", MSGS)
    dest = local.maildir()
    local.config(acct=local.account(s, "sam", dest, keep="3"))
    t0 = int(time.time())
    r = local.run("-v", now=t0, expect=EXIT_OK)
    assert r.summary()["fetched"] == len(orig), r
    assert len(server_messages(env, "sam")) == len(orig)
    assert len(uidl_records(local.uidl())) == len(orig)

    r = local.run("-v", now=t0 + 3 * DAY - 3600, expect=EXIT_OK)
    sm = r.summary()
    assert (sm["fetched"], sm["deleted"]) == (0, 0), r
    assert len(server_messages(env, "sam")) == len(orig)

    # A message that arrives now is kept, while the old ones go.
    new = fill(env, "sam", numbered_messages(1, tag="late"))
    r = local.run("-v", now=t0 + 3 * DAY + 3600, expect=EXIT_OK)
    sm = r.summary()
    assert (sm["fetched"], sm["deleted"]) == (1, len(orig)), r
    assert server_messages(env, "sam") == sorted(new)
    assert_same_messages(maildir_messages(dest), orig + new)
    # The records of the deleted messages go once the server no longer
    # lists them; the new one stays.
    local.run("-v", now=t0 + 3 * DAY + 7200, expect=EXIT_OK)
    assert len(uidl_records(local.uidl())) == 1, uidl_records(local.uidl())


def test_only_new_no(env, server, local):
    """only_new = no with keep: every run fetches everything again."""
    s = server()
    orig = fill(env, "sam", MSGS[:4])
    dest = local.maildir()
    local.config(acct=local.account(s, "sam", dest, keep="yes", only_new="no"))
    local.run(expect=EXIT_OK)
    local.run(expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), orig + orig)
    # only_new = yes (the default) after that: nothing more.
    local.config(acct=local.account(s, "sam", dest, keep="yes", only_new="yes"))
    local.run(expect=EXIT_OK)
    assert len(maildir_messages(dest)) == 2 * len(orig)


def sized(env, user):
    small = numbered_messages(3, size=500, tag="small")
    big = numbered_messages(2, size=6000, tag="big", seed=2)
    for m in small + big:
        env.deliver(user, m)
    return small, big


def test_size_limit_skip(env, server, local):
    s = server()
    small, big = sized(env, "sam")
    dest = local.maildir()
    local.config(acct=local.account(s, "sam", dest, size_limit="3000",
                                    oversize="skip"))
    r = local.run("-v", expect=EXIT_OK)
    sm = r.summary()
    assert (sm["fetched"], sm["deleted"], sm["skipped"]) == (3, 3, 2), r
    assert_same_messages(maildir_messages(dest), small)
    assert server_messages(env, "sam") == sorted(big)
    # Again: still skipped, nothing else happens.
    r = local.run("-v", expect=EXIT_OK)
    assert r.summary()["fetched"] == 0, r
    assert server_messages(env, "sam") == sorted(big)
    # The limit raised: now they come.
    local.config(acct=local.account(s, "sam", dest, size_limit="100000",
                                    oversize="skip"))
    local.run(expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), small + big)
    assert env.files("sam") == {}


def test_size_limit_headers(env, server, local):
    """oversize = headers: the header of a big message is stored (TOP n 0)
    and the message stays on the server, once; raised limit: whole."""
    s = server()
    small, big = sized(env, "sam")
    dest = local.maildir()
    local.config(acct=local.account(s, "sam", dest, size_limit="3000",
                                    oversize="headers"))
    local.run(expect=EXIT_OK)
    heads = [top_form(m, 0) for m in big]
    assert_same_messages(maildir_messages(dest), small + heads)
    assert server_messages(env, "sam") == sorted(big)
    local.run(expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), small + heads)
    local.config(acct=local.account(s, "sam", dest, size_limit="100000",
                                    oversize="headers"))
    local.run(expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), small + heads + big)
    assert env.files("sam") == {}


def test_max_messages(env, server, local):
    s = server()
    orig = fill(env, "sam", numbered_messages(5, tag="max"))
    dest = local.maildir()
    local.config(acct=local.account(s, "sam", dest, max_messages="2"))
    for fetched, left in ((2, 3), (2, 1), (1, 0)):
        r = local.run("-v", expect=EXIT_OK)
        assert r.summary()["fetched"] == fetched, r
        assert len(server_messages(env, "sam")) == left
    assert_same_messages(maildir_messages(dest), orig)


def test_list_changes_nothing(env, server, local):
    s = server()
    orig = fill(env, "sam", MSGS[:4])
    before = env.files("sam")
    dest = local.maildir()
    local.config(acct=local.account(s, "sam", dest))
    r = local.run("--list", expect=EXIT_OK)
    # docs/fetch.md: "NAME: M messages (B bytes) on the server", then
    # "NAME: NUM SIZE UIDL ACTION REASON" per message.
    lines = r.out.splitlines()
    assert re.match(rf"acct: {len(orig)} messages \(\d+ bytes\) on the server$",
                    lines[0]), r
    items = [l.split() for l in lines[1:]]
    assert len(items) == len(orig), r
    assert all(i[0] == "acct:" and i[4:] == ["fetch+delete", "new"] for i in items), r
    assert not SUMMARY_RE.search(r.out), "--list printed a summary line"
    assert env.files("sam") == before
    assert maildir_messages(dest) == []
    assert not local.uidl().exists() or uidl_records(local.uidl()) == []
    r = local.run("-l", expect=EXIT_OK)
    assert env.files("sam") == before
    # After a keep run, --list still changes nothing (records untouched).
    local.config(acct=local.account(s, "sam", dest, keep="yes"))
    local.run(expect=EXIT_OK)
    db = local.uidl().read_bytes()
    r = local.run("--list", expect=EXIT_OK)
    # Everything is stored and kept: nothing to fetch or delete.
    actions = [l.split()[4] for l in r.out.splitlines()[1:]]
    assert len(actions) == len(orig) and set(actions) == {"skip"}, r
    assert local.uidl().read_bytes() == db
    assert_same_messages(maildir_messages(dest), orig)


# ---------------------------------------------------------------- 4. destinations


def test_concurrent_run_of_one_account_refused(env, server, local):
    """While another process holds the account's UIDL table (its lock file
    <uidl_file>.lock), a run does nothing: no RETR, no DELE, a temporary
    failure."""
    import fcntl
    s = server()
    orig = fill(env, "sam", MSGS[:3])
    before = env.files("sam")
    dest = local.maildir()
    local.config(acct=local.account(s, "sam", dest))
    lock = Path(str(local.uidl()) + ".lock")
    with open(lock, "a+") as f:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = local.run()
        assert r.rc == EXIT_TEMP, r
        assert env.files("sam") == before
        assert maildir_messages(dest) == []
    local.run(expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), orig)


def test_mbox(env, server, local):
    s = server()
    orig = fill(env, "sam", MSGS)
    mbox = local.dir / "inbox.mbox"
    local.config(acct=local.account(s, "sam", deliver=f"mbox:{mbox}"))
    local.run(expect=EXIT_OK)
    assert_same_messages(mbox_messages(mbox), orig, "mbox")
    assert env.files("sam") == {}
    # Appended, not rewritten: a second batch lands after the first.
    more = fill(env, "sam", numbered_messages(3, tag="second"))
    local.run(expect=EXIT_OK)
    assert_same_messages(mbox_messages(mbox), orig + more, "mbox")
    # The From_ line names the Return-Path address, else MAILER-DAEMON.
    senders = sorted(l.split(b" ")[1] for l in mbox.read_bytes().split(b"\n")
                     if l.startswith(b"From "))
    want = []
    for m in orig + more:
        rp = re.search(rb"^Return-Path: <([^>]*)>", m, re.M)
        want.append(rp.group(1) if rp and rp.group(1) else b"MAILER-DAEMON")
    assert senders == sorted(want)


def mda_command(outdir: Path, status=0):
    """An MDA that stores its stdin as one file in outdir (and the facts it
    was given beside it), then exits with status."""
    outdir.mkdir(exist_ok=True)
    facts = outdir.parent / (outdir.name + ".facts")
    return (f'f=$(mktemp {outdir}/m.XXXXXX) && cat > "$f" && '
            f'printf "%s %s\\n" "$POPBOX_FETCH_ACCOUNT" "$POPBOX_FETCH_SIZE" >> {facts} && '
            f'exit {status}')


def mda_messages(outdir: Path) -> list:
    return sorted(p.read_bytes() for p in outdir.iterdir()) if outdir.exists() else []


def test_mda_success(env, server, local):
    s = server()
    orig = fill(env, "sam", MSGS)
    out = local.dir / "mda-out"
    local.config(acct=local.account(s, "sam", deliver="mda:" + mda_command(out)))
    local.run(expect=EXIT_OK)
    got = mda_messages(out)
    assert_same_messages(got, orig, "MDA input")
    assert env.files("sam") == {}
    facts = (local.dir / "mda-out.facts").read_text().splitlines()
    assert sorted(int(f.split()[1]) for f in facts) == sorted(len(g) for g in got)
    assert all(f.split()[0] == "acct" for f in facts), facts


def test_mda_tempfail_deletes_nothing(env, server, local):
    s = server()
    orig = fill(env, "sam", MSGS[:4])
    before = env.files("sam")
    out = local.dir / "mda-out"
    local.config(acct=local.account(s, "sam", deliver="mda:" + mda_command(out, 75)))
    local.run(expect=EXIT_TEMP)
    assert env.files("sam") == before, "deleted what the MDA did not take"
    assert not local.uidl().exists() or uidl_records(local.uidl()) == []
    # The MDA works again: everything comes, once.
    shutil.rmtree(out)
    local.config(acct=local.account(s, "sam", deliver="mda:" + mda_command(out, 0)))
    local.run(expect=EXIT_OK)
    assert_same_messages(mda_messages(out), orig, "MDA input")
    assert env.files("sam") == {}


def test_mda_permfail(env, server, local):
    s = server()
    fill(env, "sam", MSGS[:3])
    before = env.files("sam")
    local.config(acct=local.account(s, "sam", deliver="mda:cat >/dev/null; exit 1"))
    r = local.run()
    assert r.rc == EXIT_PERM, r
    assert env.files("sam") == before


# ---------------------------------------------------------------- 5. command line


def test_quick_form_pop3s_and_stls(env, server, local, pki):  # noqa: F811
    s = tls_server(server, pki)
    pwfile = local.dir / "pw"
    pwfile.write_text(PW["sam"] + "\n")
    common = ["--ca-file", pki.ca, "--password-command", f"cat {pwfile}"]

    orig = fill(env, "sam", MSGS[:4])
    dest = local.maildir("implicit")
    run_fetch([f"pop3s://sam@localhost:{s.tls_port}", "--to", dest, *common,
               "--uidl-file", local.uidl("q1")], local.home, expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), orig)
    assert env.files("sam") == {}

    orig = fill(env, "sam", MSGS[4:])
    dest = local.maildir("stls")
    run_fetch([f"pop3://sam@localhost:{s.port}", "--to", dest, *common,
               "--keep", "yes", "--uidl-file", local.uidl("q2")], local.home,
              expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), orig)
    assert len(env.files("sam")) == len(orig)

    mbox = local.dir / "quick.mbox"
    run_fetch([f"pop3s://sam@localhost:{s.tls_port}", "--mbox", mbox, *common,
               "--uidl-file", local.uidl("q3")], local.home, expect=EXIT_OK)
    assert_same_messages(mbox_messages(mbox), orig, "mbox")
    assert env.files("sam") == {}


def test_quick_form_plain_explicit(env, server, local):
    s = server()
    orig = fill(env, "sam", MSGS[:3])
    pwfile = local.dir / "pw"
    pwfile.write_text(PW["sam"] + "\n")
    dest = local.maildir()
    run_fetch([f"pop3://sam@127.0.0.1:{s.port}", "--tls", "none", "--to", dest,
               "--password-command", f"cat {pwfile}",
               "--uidl-file", local.uidl()], local.home, expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), orig)


def test_accounts_concurrently(env, server, local):
    s = server()
    users = ["sam", "alice", "dave"]
    dests, origs = {}, {}
    for u in users:
        origs[u] = fill(env, u, numbered_messages(5, tag=u))
        dests[u] = local.maildir(u)
    local.config(**{u: local.account(s, u, dests[u], name=u) for u in users})
    r = local.run("-v", "-j", "3", expect=EXIT_OK)
    assert set(r.summaries()) == set(users), r
    for u in users:
        assert_same_messages(maildir_messages(dests[u]), origs[u], u)
        assert env.files(u) == {}
    # -a picks accounts.
    more = fill(env, "sam", numbered_messages(2, tag="sam2"))
    fill(env, "alice", numbered_messages(2, tag="alice2"))
    r = local.run("-v", "-a", "sam", expect=EXIT_OK)
    assert set(r.summaries()) == {"sam"}, r
    assert_same_messages(maildir_messages(dests["sam"]), origs["sam"] + more)
    assert len(env.files("alice")) == 2


def test_silent_unless_failed(env, server, local):
    s = server()
    fill(env, "sam", MSGS[:2])
    local.config(acct=local.account(s, "sam"))
    r = local.run(expect=EXIT_OK)
    assert r.out == "", f"output under cron although nothing failed:\n{r!r}"
    r = local.run("-q", expect=EXIT_OK)
    assert r.out == "" and r.err == "", r


def test_summary_on_a_tty(env, server, local):
    """On a terminal the summary line is printed although nothing failed;
    --progress draws on stderr without disturbing anything."""
    import pty
    s = server()
    orig = fill(env, "sam", MSGS[:3])
    dest = local.maildir()
    local.config(acct=local.account(s, "sam", dest))
    master, slave = pty.openpty()
    try:
        p = subprocess.run([str(FETCH_BIN), "-c", str(local.conf)], stdout=slave,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                           env=fetch_env(local.home), timeout=60)
        os.close(slave)
        slave = None
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    check_sanitizers(p.stderr.decode(errors="replace"))
    assert p.returncode == 0, (p.returncode, out, p.stderr)
    assert re.search(rb"acct: fetched 3 \(\d+ bytes\), deleted 3, kept 0, skipped 0",
                     out), out
    assert_same_messages(maildir_messages(dest), orig)
    more = fill(env, "sam", MSGS[3:6])
    local.run("--progress", expect=EXIT_OK)
    assert_same_messages(maildir_messages(dest), orig + more)


def test_server_down_is_temporary(env, local):
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()                           # nothing listens there now
    local.config(acct={"host": "127.0.0.1", "port": port, "tls": "none",
                       "user": "x", "password": "y",
                       "deliver": f"maildir:{local.maildir()}",
                       "uidl_file": local.uidl()})
    r = local.run()
    assert r.rc == EXIT_TEMP, r


def test_exit_code_permanent_wins(env, server, local):
    """One account failing permanently (wrong password), one temporarily
    (server down), one fine: exit 1, and the fine one is fetched."""
    import socket
    s = server()
    orig = fill(env, "sam", MSGS[:2])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    down = sock.getsockname()[1]
    sock.close()
    bad = local.account(s, "alice", local.maildir("a"), name="bad")
    bad["password"] = "wrong"
    gone = local.account(s, "bob", local.maildir("b"), port=down, name="gone")
    good = local.account(s, "sam", local.maildir("c"), name="good")
    local.config(bad=bad, gone=gone, good=good)
    r = local.run()
    assert r.rc == EXIT_PERM, r
    assert set(r.summaries()) == {"bad", "gone", "good"}, r
    assert_same_messages(maildir_messages(local.dir / "c"), orig)
    r = local.run("-a", "gone")
    assert r.rc == EXIT_TEMP, r


@pytest.mark.parametrize("bad", [
    {"tls": "sometimes"},
    {"auth": "rot13"},
    {"keep": "forever"},
    {"no_such_key": "1"},
    {"deliver": "carrier-pigeon:/x"},
    {"host": None},
    {"password": None},        # no password, no command, no TTY to ask on
])
def test_config_errors_exit_2(env, local, bad):
    acct = {"host": "127.0.0.1", "port": 1, "tls": "none", "user": "x",
            "password": "y", "deliver": f"maildir:{local.maildir()}",
            "uidl_file": local.uidl()}
    acct.update(bad)
    local.config(acct=acct)
    r = local.run()
    assert r.rc == EXIT_USAGE, r
    assert r.err.strip(), r


def test_usage_errors_exit_2(env, local):
    local.config(acct={"host": "127.0.0.1", "port": 1, "tls": "none",
                       "user": "x", "password": "y",
                       "deliver": f"maildir:{local.maildir()}"})
    assert local.run("-a", "nosuch").rc == EXIT_USAGE
    assert local.run("--no-such-option").rc == EXIT_USAGE
    assert run_fetch(["-c", local.dir / "missing.conf"], local.home).rc == EXIT_USAGE
    assert run_fetch(["ftp://x@127.0.0.1", "--to", local.maildir()],
                     local.home).rc == EXIT_USAGE


# ---------------------------------------------------------------- 6. make run demo


@pytest.fixture
def demo(hashes):
    """scripts/run-demo.sh (what `make run` runs after building) in a temp
    dir, on free ports: popboxd with the demo user, three sample messages
    and a self-signed certificate in run/tls/cert.pem."""
    top = Path(tempfile.mkdtemp(prefix="popbox-demo-"))
    os.chmod(top, 0o755)
    log = top / "demo.stderr"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "run-demo.sh"), str(BUILD)],
            cwd=top, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=err, env=dict(os.environ, POPBOX_DEMO_PORT="0"))
    try:
        def up():
            text = log.read_text(errors="replace")
            if proc.poll() is not None:
                raise AssertionError(f"run-demo.sh exited {proc.returncode}:\n{text}")
            return "event=started" in text and text
        text = wait_for(up, timeout=30, what="the demo popboxd")
        ports = [int(p) for p in re.findall(r"event=listening addr=127\.0\.0\.1:(\d+)", text)]
        assert len(ports) == 2, text
        yield top / "run", ports[0], ports[1]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        text = log.read_text(errors="replace")
        shutil.rmtree(top, ignore_errors=True)
        check_sanitizers(text, "demo popboxd")


def test_make_run_demo_over_tls(demo, tmp_path):
    """The issue's "done when": the demo mail over TLS, verified against
    run/tls/cert.pem, kept 2 days, then deleted without a second copy."""
    run, _plain, tls_port = demo
    maildrop = run / "mail" / "demo" / "Maildir"
    orig = [p.read_bytes() for sub in ("new", "cur")
            for p in (maildrop / sub).iterdir()]
    assert len(orig) == 3
    home = tmp_path / "home"
    home.mkdir()
    dest = make_maildir(tmp_path / "Mail")
    args = [f"pop3s://demo@localhost:{tls_port}", "--to", dest,
            "--ca-file", run / "tls" / "cert.pem",
            "--password-command", f"cat {run / 'demo.password'}",
            "--keep", "2", "--uidl-file", tmp_path / "demo.uidl", "-v"]
    t0 = int(time.time())
    r = run_fetch(args, home, now=t0, expect=EXIT_OK)
    assert r.summary()["fetched"] == 3, r
    assert_same_messages(maildir_messages(dest), orig)
    left = lambda: sum(1 for sub in ("new", "cur") for _ in (maildrop / sub).iterdir())  # noqa: E731
    assert left() == 3
    r = run_fetch(args, home, now=t0 + DAY, expect=EXIT_OK)
    assert (r.summary()["fetched"], r.summary()["deleted"]) == (0, 0), r
    assert left() == 3
    r = run_fetch(args, home, now=t0 + 2 * DAY + 600, expect=EXIT_OK)
    assert (r.summary()["fetched"], r.summary()["deleted"]) == (0, 3), r
    assert left() == 0
    assert_same_messages(maildir_messages(dest), orig)
    # Without the certificate (system store only) the demo is refused.
    r = run_fetch([a for a in args if a not in ("--ca-file", run / "tls" / "cert.pem")],
                  home, now=t0)
    assert r.rc == EXIT_PERM, r
