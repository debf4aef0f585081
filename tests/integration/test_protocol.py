"""RFC 1939 / RFC 2449 behaviour through Python's poplib (and a raw socket
where poplib would hide the bytes)."""
import hashlib
import poplib
import re
import time

import pytest

from conftest import USERS, RawPOP3, top_form, wire_form

CAPA_BASE = {"TOP", "USER", "UIDL", "RESP-CODES", "AUTH-RESP-CODE",
             "PIPELINING", "EXPIRE", "IMPLEMENTATION"}

MESSAGES = [
    b"From: a@example.org\nTo: alice@example.org\nSubject: one\n\n"
    b"First body line.\nSecond line.\nThird line.\n",
    b"From: b@example.org\r\nSubject: two (CRLF)\r\n\r\n"
    b"Line 1\r\n.starts with a dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n",
    b"Subject: three, folded\n header continuation\n\nbody only line\n",
    b"Subject: four\n\nno final newline here",
]

PW = {u: pw for u, (_, pw) in USERS.items()}


def pop(srv, timeout=10) -> poplib.POP3:
    return poplib.POP3(srv.host, srv.port, timeout=timeout)


def login(srv, user="alice") -> poplib.POP3:
    p = pop(srv)
    p.user(user)
    p.pass_(PW[user])
    return p


def body(lines) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


def err_text(excinfo) -> bytes:
    a = excinfo.value.args[0]
    return a if isinstance(a, bytes) else str(a).encode()


@pytest.fixture(scope="module")
def srv(module_env, module_server):
    for m in MESSAGES:
        module_env.deliver("alice", m)
    module_env.deliver("carol", b"Subject: carol\n\nhi\n")
    return module_server()


# ---------------------------------------------------------------- greeting, CAPA


def test_greeting(srv):
    p = pop(srv)
    try:
        g = p.getwelcome()
        assert g.startswith(b"+OK"), f"greeting {g!r}"
        assert b"<" not in g, f"apop = no but greeting carries a timestamp: {g!r}"
    finally:
        p.quit()


def check_capa(caps, expire="NEVER", login_delay=None, logged_in=False):
    want = set(CAPA_BASE)
    if login_delay is not None:
        want.add("LOGIN-DELAY")
    if not logged_in:
        # SASL before login only: after it there is nothing to authenticate.
        want.add("SASL")
        assert caps["SASL"] == ["PLAIN", "LOGIN", "SCRAM-SHA-256"], caps["SASL"]
    assert set(caps) == want, f"CAPA lists {sorted(caps)}, expected {sorted(want)}"
    for k in ("TOP", "USER", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"):
        assert caps[k] == [], f"{k} takes no argument, got {caps[k]}"
    assert caps["EXPIRE"] == [expire], f"EXPIRE {caps['EXPIRE']}"
    assert len(caps["IMPLEMENTATION"]) >= 1, "IMPLEMENTATION needs a value"
    if login_delay is not None:
        assert caps["LOGIN-DELAY"] == [str(login_delay)], caps["LOGIN-DELAY"]


def test_capa_both_states(srv):
    p = pop(srv)
    try:
        check_capa(p.capa())
        p.user("alice")
        p.pass_(PW["alice"])
        check_capa(p.capa(), logged_in=True)
    finally:
        p.quit()


def test_capa_configured_expire_and_login_delay(env, server):
    s = server(expire_days=30, login_delay=5)
    p = pop(s)
    try:
        # Before login a number carries USER: an account may have its own
        # expire_days (RFC 2449 section 6.7; tests/integration/test_retention.py).
        caps = p.capa()
        assert caps["EXPIRE"] == ["30", "USER"], caps["EXPIRE"]
        caps["EXPIRE"] = ["30"]
        check_capa(caps, expire="30", login_delay=5)
        p.user("carol")
        p.pass_(PW["carol"])
        check_capa(p.capa(), expire="30", login_delay=5, logged_in=True)
    finally:
        p.quit()
    # RFC 2449 LOGIN-DELAY: a second login within 5 s is refused.
    p = pop(s)
    try:
        p.user("carol")
        with pytest.raises(poplib.error_proto) as ei:
            p.pass_(PW["carol"])
        assert err_text(ei).startswith(b"-ERR [LOGIN-DELAY]"), err_text(ei)
    finally:
        p.close()


# ---------------------------------------------------------------- login


@pytest.mark.parametrize("user", list(USERS))
def test_login_every_scheme(srv, user):
    p = pop(srv)
    try:
        p.user(user)
        r = p.pass_(PW[user])
        assert r.startswith(b"+OK"), r
    finally:
        p.quit()


# ---------------------------------------------------------------- transaction


def test_stat_list_uidl_retr_top(srv):
    wires = [wire_form(m) for m in MESSAGES]
    p = login(srv)
    try:
        count, size = p.stat()
        assert count == len(MESSAGES), f"STAT count {count}"
        assert size == sum(len(w) for w in wires), f"STAT size {size}"

        resp, lines, _ = p.list()
        assert resp.startswith(b"+OK"), resp
        sizes = {}
        for line in lines:
            n, sz = line.split()
            sizes[int(n)] = int(sz)
        assert sorted(sizes) == list(range(1, len(MESSAGES) + 1)), lines

        resp, lines, _ = p.uidl()
        uidls = dict(line.split(b" ", 1) for line in lines)
        assert len(uidls) == len(MESSAGES), lines
        assert len(set(uidls.values())) == len(MESSAGES), f"UIDLs not unique: {lines}"

        seen = set()
        for n in range(1, len(MESSAGES) + 1):
            r = p.list(n)
            assert r == b"+OK %d %d" % (n, sizes[n]), f"LIST {n}: {r!r}"
            r = p.uidl(n)
            assert r == b"+OK %d %s" % (n, uidls[b"%d" % n]), f"UIDL {n}: {r!r}"
            resp, lines, _ = p.retr(n)
            got = body(lines)
            assert resp.startswith(b"+OK"), resp
            assert got in wires, f"RETR {n} returned unknown bytes {got[:80]!r}"
            i = wires.index(got)
            seen.add(i)
            assert sizes[n] == len(got), f"LIST {n} says {sizes[n]}, RETR gave {len(got)}"
            for k in (0, 1, 2, 100):
                resp, lines, _ = p.top(n, k)
                assert body(lines) == top_form(MESSAGES[i], k), \
                    f"TOP {n} {k}: {body(lines)!r}"
        assert seen == set(range(len(MESSAGES))), "not every message was served"
    finally:
        p.quit()


def test_retr_announces_octets(srv):
    with RawPOP3(srv.host, srv.port) as c:
        c.login("alice", PW["alice"])
        r = c.cmd("LIST 1")
        size = int(r.split()[2])
        st = c.cmd("RETR 1")
        assert re.match(rb"^\+OK %d octets$" % size, st), st
        c.read_body()
        assert c.cmd("QUIT").startswith(b"+OK")


@pytest.fixture
def fresh(env, server):
    """A private server with alice's 4 messages (for tests that delete)."""
    paths = [env.deliver("alice", m) for m in MESSAGES]
    return server(), paths


def test_dele_hides_message(fresh):
    s, _ = fresh
    p = login(s)
    try:
        total = p.stat()
        sz2 = int(p.list(2).split()[2])
        uid2 = p.uidl(2).split()[2]
        assert p.dele(2).startswith(b"+OK")
        count, size = p.stat()
        assert (count, size) == (total[0] - 1, total[1] - sz2), (count, size)
        _, lines, _ = p.list()
        assert [int(x.split()[0]) for x in lines] == [1, 3, 4], lines
        _, lines, _ = p.uidl()
        assert [int(x.split()[0]) for x in lines] == [1, 3, 4], lines
        assert uid2 not in b" ".join(lines)
        for cmd in (lambda: p.list(2), lambda: p.uidl(2), lambda: p.retr(2),
                    lambda: p.dele(2), lambda: p.top(2, 0)):
            with pytest.raises(poplib.error_proto):
                cmd()
        assert p.noop().startswith(b"+OK")
    finally:
        p.quit()


def test_rset_undeletes(fresh, env):
    s, _ = fresh
    before = env.files("alice")
    p = login(s)
    try:
        total = p.stat()
        p.dele(1)
        p.dele(3)
        r = p.rset()
        assert r.startswith(b"+OK"), r
        assert p.stat() == total, "RSET did not restore STAT"
        _, lines, _ = p.list()
        assert len(lines) == len(MESSAGES)
        p.retr(1)
    finally:
        r = p.quit()
    assert r.startswith(b"+OK")
    assert env.files("alice") == before, "RSET + QUIT deleted something"


def test_quit_removes_only_deleted(fresh, env):
    s, paths = fresh
    p = login(s)
    uid = {n: p.uidl(n).split()[2] for n in range(1, 5)}
    sizes = {n: int(p.list(n).split()[2]) for n in range(1, 5)}
    gone = {}
    for n in (1, 3):
        resp, lines, _ = p.retr(n)
        gone[n] = body(lines)
        p.dele(n)
    r = p.quit()
    assert r.startswith(b"+OK"), r
    # The reply comes after UPDATE: the files are already gone.
    left = env.files("alice")
    assert len(left) == 2, f"expected 2 files left, found {sorted(left)}"
    left_wire = {wire_form(v) for v in left.values()}
    for n in (1, 3):
        assert gone[n] not in left_wire, f"message {n} still on disk after QUIT"
    p = login(s)
    try:
        _, lines, _ = p.uidl()
        assert sorted(x.split()[1] for x in lines) == sorted([uid[2], uid[4]])
        assert p.stat() == (2, sizes[2] + sizes[4])
    finally:
        p.quit()


def test_quit_without_dele_deletes_nothing(fresh, env):
    s, _ = fresh
    before = env.files("alice")
    p = login(s)
    p.retr(1)
    r = p.quit()
    assert r.startswith(b"+OK"), r
    assert env.files("alice") == before


# ---------------------------------------------------------------- failures


def timed_login_failure(srv, user, password):
    p = pop(srv)
    try:
        r = p.user(user)
        t0 = time.monotonic()
        with pytest.raises(poplib.error_proto) as ei:
            p.pass_(password)
        return r, err_text(ei), time.monotonic() - t0
    finally:
        p.close()


def test_wrong_password_and_unknown_user_look_the_same(srv):
    r1, e1, t1 = timed_login_failure(srv, "alice", "wrong-password")
    r2, e2, t2 = timed_login_failure(srv, "nosuchuser", "wrong-password")
    assert r1 == r2, f"USER reply reveals which names exist: {r1!r} vs {r2!r}"
    assert e1.startswith(b"-ERR [AUTH] "), e1
    assert e1 == e2, f"different failure texts: {e1!r} vs {e2!r}"
    assert t1 >= 0.29 and t2 >= 0.29, \
        f"failure replies faster than auth_failure_delay_ms=300: {t1:.3f} {t2:.3f}"


def test_failures_for_every_scheme_user(srv):
    for user in USERS:
        _, e, t = timed_login_failure(srv, user, PW[user] + "x")
        assert e.startswith(b"-ERR [AUTH] "), (user, e)
        assert t >= 0.29, (user, t)


def test_three_failed_logins_close(srv):
    with RawPOP3(srv.host, srv.port) as c:
        for i in range(3):
            assert c.cmd("USER alice").startswith(b"+OK")
            r = c.cmd(f"PASS bad{i}")
            assert r.startswith(b"-ERR [AUTH]"), r
            if i < 2:
                assert c.cmd("CAPA").startswith(b"+OK")
                c.read_body()
        assert c.wait_closed(3), "connection still open after 3 failed logins"


def test_correct_password_after_two_failures(srv):
    with RawPOP3(srv.host, srv.port) as c:
        for i in range(2):
            c.cmd("USER alice")
            assert c.cmd("PASS nope").startswith(b"-ERR [AUTH]")
        c.login("alice", PW["alice"])
        assert c.cmd("STAT").startswith(b"+OK")


BAD_ARGS = [
    "RETR 0", "RETR -1", "RETR 99", "RETR 18446744073709551616",
    "RETR 99999999999999999999999999999", "RETR x", "RETR 1x", "RETR +1",
    "RETR 1 2", "RETR", "LIST 0", "LIST -1", "LIST x", "LIST 1 2", "LIST 99",
    "UIDL 0", "UIDL x", "UIDL 1 2", "DELE 0", "DELE -1", "DELE x", "DELE",
    "DELE 1 2", "TOP 1", "TOP 0 1", "TOP 1 -1", "TOP 1 x", "TOP x 1",
    "TOP 1 1 1", "TOP", "STAT x", "NOOP x", "RSET x", "QUIT now", "CAPA x",
    "RETR " + "1" * 41, "RETR 1\t", "FOO", "RETRX 1", "", "   ",
]


def test_bad_arguments(srv):
    with RawPOP3(srv.host, srv.port) as c:
        c.login("carol", PW["carol"])
        for line in BAD_ARGS:
            r = c.cmd(line)
            assert r.startswith(b"-ERR"), f"{line!r} got {r!r}"
            # NOOP resets the bad-command counter and shows we are alive.
            assert c.cmd("NOOP") == b"+OK", f"session broken after {line!r}"
        assert c.cmd("STAT").startswith(b"+OK 1 ")
        assert c.cmd("QUIT").startswith(b"+OK")


def test_bad_commands_in_a_row_close(env, server):
    s = server(max_bad_commands=4)
    with RawPOP3(s.host, s.port) as c:
        for i in range(3):
            assert c.cmd("BOGUS").startswith(b"-ERR")
        assert c.cmd("CAPA").startswith(b"+OK")   # resets the count
        c.read_body()
        for i in range(4):
            assert c.cmd("BOGUS").startswith(b"-ERR")
        assert c.wait_closed(3), "not closed after max_bad_commands"


def test_commands_in_wrong_state(srv):
    with RawPOP3(srv.host, srv.port) as c:
        for line in ("STAT", "LIST", "LIST 1", "UIDL", "RETR 1", "DELE 1",
                     "TOP 1 1", "NOOP", "RSET", "PASS x"):
            r = c.cmd(line)
            assert r.startswith(b"-ERR"), f"{line} before login: {r!r}"
            assert c.cmd("CAPA").startswith(b"+OK")
            c.read_body()
        c.login("alice", PW["alice"])
        for line in ("USER alice", "PASS " + PW["alice"],
                     "APOP alice 0123456789abcdef0123456789abcdef"):
            r = c.cmd(line)
            assert r.startswith(b"-ERR"), f"{line} after login: {r!r}"
            assert c.cmd("NOOP") == b"+OK"
        assert c.cmd("QUIT").startswith(b"+OK")


def test_pass_right_after_failed_pass_needs_user(srv):
    with RawPOP3(srv.host, srv.port) as c:
        c.cmd("USER alice")
        assert c.cmd("PASS wrong").startswith(b"-ERR [AUTH]")
        r = c.cmd("PASS " + PW["alice"])
        assert r.startswith(b"-ERR"), f"PASS without a new USER accepted: {r!r}"


def test_keywords_case_insensitive(srv):
    with RawPOP3(srv.host, srv.port) as c:
        assert c.cmd("user alice").startswith(b"+OK")
        assert c.cmd("pAsS " + PW["alice"]).startswith(b"+OK")
        assert c.cmd("stat").startswith(b"+OK 4 ")
        st, b = c.multi("LiSt")
        assert st.startswith(b"+OK") and b.count(b"\r\n") == 4
        st, b = c.multi("uidl")
        assert st.startswith(b"+OK") and b.count(b"\r\n") == 4
        st, b = c.multi("rEtR 1")
        assert st.startswith(b"+OK") and b
        st, b = c.multi("top 1 0")
        assert st.startswith(b"+OK") and b
        assert c.cmd("noop") == b"+OK"
        assert c.cmd("quit").startswith(b"+OK")


def test_quit_in_authorization_state(srv):
    with RawPOP3(srv.host, srv.port) as c:
        c.cmd("USER alice")
        assert c.cmd("QUIT").startswith(b"+OK")
        assert c.wait_closed(3)


# ---------------------------------------------------------------- APOP


def test_apop(env, server):
    env.deliver("dave", b"Subject: for dave\n\nhello dave\n")
    s = server(apop="yes")
    stamps = []
    for _ in range(2):
        p = pop(s)
        g = p.getwelcome()
        m = re.search(rb"<[^<>@\s]+@[^<>\s]+>", g)
        assert m, f"apop = yes but no <timestamp> in greeting {g!r}"
        stamps.append(m.group(0))
        p.quit()
    assert stamps[0] != stamps[1], f"timestamp repeated: {stamps}"

    p = pop(s)
    try:
        r = p.apop("dave", PW["dave"])
        assert r.startswith(b"+OK"), r
        assert p.stat()[0] == 1
    finally:
        p.quit()

    # A wrong digest, and a user whose secret is a hash: [AUTH].
    p = pop(s)
    try:
        with pytest.raises(poplib.error_proto) as ei:
            p.apop("dave", "not-the-password")
        assert err_text(ei).startswith(b"-ERR [AUTH]"), err_text(ei)
        with pytest.raises(poplib.error_proto) as ei:
            p.apop("alice", PW["alice"])
        assert err_text(ei).startswith(b"-ERR [AUTH]"), err_text(ei)
    finally:
        p.close()


def test_apop_digest_of_other_timestamp_fails(env, server):
    s = server(apop="yes")
    with RawPOP3(s.host, s.port) as first:
        stamp1 = re.search(rb"<.*>", first.greeting).group(0)
    with RawPOP3(s.host, s.port) as c:
        digest = hashlib.md5(stamp1 + PW["dave"].encode()).hexdigest()
        r = c.cmd(f"APOP dave {digest}")
        assert r.startswith(b"-ERR [AUTH]"), f"replayed APOP digest accepted: {r!r}"


def test_apop_refused_when_off(srv):
    with RawPOP3(srv.host, srv.port) as c:
        assert b"<" not in c.greeting
        digest = hashlib.md5(b"<1.2@x>" + PW["dave"].encode()).hexdigest()
        r = c.cmd(f"APOP dave {digest}")
        assert r.startswith(b"-ERR"), f"APOP with apop = no: {r!r}"
        assert c.cmd("CAPA").startswith(b"+OK")
        assert b"APOP" not in c.read_body()


def test_login_timeout_is_for_the_whole_preauth_phase(env, server):
    """login_timeout bounds the whole AUTHORIZATION phase: commands that keep
    the connection busy do not extend it."""
    s = server(login_timeout=5)
    t0 = time.monotonic()
    with RawPOP3(s.host, s.port, timeout=10) as c:
        closed = False
        while time.monotonic() - t0 < 9:
            try:
                c.send(b"CAPA\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if c.wait_closed(0.5):
                closed = True
                break
        elapsed = time.monotonic() - t0
        assert closed, "pre-auth connection still open after 9 s (login_timeout = 5)"
        assert 4.5 <= elapsed <= 7.5, f"closed after {elapsed:.1f} s, expected ~5"
        assert b"-ERR" in bytes(c.buf), "no -ERR before the close"
