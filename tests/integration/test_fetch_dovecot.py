"""popbox-fetch against Dovecot as a real peer (a private instance on free
loopback ports, tests/integration/dovecot_fixture.py): plain POP3 (said
explicitly), STLS and implicit TLS verified against the test CA; delete
after download and keep, byte for byte, with authentication chosen
automatically (Dovecot offers SCRAM-SHA-256 and PLAIN here).

Dovecot's LIST size of a message without a final newline leaves out the
CRLF it adds when sending it (RETR gives 2 octets more than LIST said):
the corpus holds such messages, so a client too strict about sizes shows.
"""
import pytest

from conftest import MESSAGES
from dovecot_fixture import Dovecot
from fetch_helpers import (EXIT_OK, EXIT_PERM, assert_same_messages,
                           maildir_messages, make_maildir, mbox_messages,
                           numbered_messages, run_fetch, write_config)
from test_tls import pki  # noqa: F401  (a fixture)

USERS = {"fetcher": "dove-Fetch-1", "keeper": "dove keep 2"}
MSGS = MESSAGES + numbered_messages(10, size=1500, tag="dc")


@pytest.fixture
def dovecot(tmp_path, pki):  # noqa: F811
    d = Dovecot(USERS, pki.cert, pki.key)
    yield d
    d.stop()


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


def account(dc, user, dest, tls, tmp_path, pki, **keys):  # noqa: F811
    d = {"host": "localhost" if tls != "none" else "127.0.0.1",
         "port": dc.tls_port if tls == "implicit" else dc.port,
         "tls": tls, "user": user, "password": USERS[user],
         "deliver": f"maildir:{dest}", "uidl_file": tmp_path / f"{user}.uidl"}
    if tls != "none":
        d["ca_file"] = pki.ca
    d.update(keys)
    return d


@pytest.mark.parametrize("tls", ["none", "stls", "implicit"])
def test_delete_after_download(dovecot, home, tmp_path, pki, tls):  # noqa: F811
    for m in MSGS:
        dovecot.deliver("fetcher", m)
    dest = make_maildir(tmp_path / "inbox")
    conf = write_config(tmp_path / "fetch.conf",
                        {"dc": account(dovecot, "fetcher", dest, tls, tmp_path, pki)})
    r = run_fetch(["-c", conf, "-v"], home)
    assert r.rc == EXIT_OK, f"{r!r}\n{dovecot.diagnostics()}"
    assert_same_messages(maildir_messages(dest), MSGS)
    assert dovecot.messages("fetcher") == [], "not deleted on Dovecot"
    sm = r.summary()
    assert (sm["fetched"], sm["deleted"]) == (len(MSGS), len(MSGS)), r
    r = run_fetch(["-c", conf, "-v"], home, expect=EXIT_OK)
    assert r.summary()["fetched"] == 0, r


@pytest.mark.parametrize("tls", ["none", "implicit"])
def test_keep(dovecot, home, tmp_path, pki, tls):  # noqa: F811
    for m in MSGS:
        dovecot.deliver("keeper", m)
    before = dovecot.messages("keeper")
    dest = make_maildir(tmp_path / "inbox")
    conf = write_config(tmp_path / "fetch.conf",
                        {"dc": account(dovecot, "keeper", dest, tls, tmp_path, pki,
                                       keep="yes")})
    r = run_fetch(["-c", conf], home)
    assert r.rc == EXIT_OK, f"{r!r}\n{dovecot.diagnostics()}"
    assert_same_messages(maildir_messages(dest), MSGS)
    assert dovecot.messages("keeper") == before
    # Second run: Dovecot's UIDLs are stable, nothing comes twice.
    r = run_fetch(["-c", conf, "-v"], home, expect=EXIT_OK)
    assert r.summary()["fetched"] == 0, r
    new = numbered_messages(2, tag="dc-late", seed=5)
    for m in new:
        dovecot.deliver("keeper", m)
    r = run_fetch(["-c", conf, "-v"], home, expect=EXIT_OK)
    assert r.summary()["fetched"] == 2, r
    assert_same_messages(maildir_messages(dest), MSGS + new)


def test_keep_days_then_delete(dovecot, home, tmp_path, pki):  # noqa: F811
    import time
    for m in MSGS[:5]:
        dovecot.deliver("keeper", m)
    mbox = tmp_path / "inbox.mbox"
    conf = write_config(tmp_path / "fetch.conf",
                        {"dc": account(dovecot, "keeper", None, "stls", tmp_path, pki,
                                       keep="1", deliver=f"mbox:{mbox}")})
    t0 = int(time.time())
    run_fetch(["-c", conf], home, now=t0, expect=EXIT_OK)
    assert len(dovecot.messages("keeper")) == 5
    run_fetch(["-c", conf], home, now=t0 + 86400 + 600, expect=EXIT_OK)
    assert dovecot.messages("keeper") == []
    assert_same_messages(mbox_messages(mbox), MSGS[:5], "mbox")


def test_wrong_password(dovecot, home, tmp_path, pki):  # noqa: F811
    dovecot.deliver("fetcher", MSGS[0])
    dest = make_maildir(tmp_path / "inbox")
    acct = account(dovecot, "fetcher", dest, "implicit", tmp_path, pki)
    acct["password"] = "wrong"
    conf = write_config(tmp_path / "fetch.conf", {"dc": acct})
    r = run_fetch(["-c", conf], home, timeout=60)
    assert r.rc == EXIT_PERM, r
    assert maildir_messages(dest) == []
    assert len(dovecot.messages("fetcher")) == 1
