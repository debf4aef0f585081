"""The Maildir behind POP3: file names, sizes, UIDL stability, locking, and
never deleting without QUIT."""
import os
import re
import signal
import socket
import time

import pytest

from conftest import USERS, RawPOP3, own, wire_form

PW = {u: pw for u, (_, pw) in USERS.items()}
UIDL_RE = re.compile(rb"^[\x21-\x7e]{1,70}$")


def snapshot(srv, user="alice"):
    """One session: {uidl: (wire bytes, LIST size)}; checks UIDL syntax,
    uniqueness and that LIST sizes equal the RETR'd sizes."""
    with RawPOP3(srv.host, srv.port) as c:
        c.login(user, PW[user])
        _, listing = c.multi("LIST")
        _, uidls = c.multi("UIDL")
        sizes = {int(a): int(b) for a, b in
                 (l.split() for l in listing.split(b"\r\n")[:-1])}
        ids = {}
        for l in uidls.split(b"\r\n")[:-1]:
            n, u = l.split(b" ")
            assert UIDL_RE.match(u), f"UIDL {u!r} is not 1-70 chars of 0x21-0x7E"
            assert u not in ids.values(), f"UIDL {u!r} listed twice"
            ids[int(n)] = u
        assert sorted(ids) == sorted(sizes), (listing, uidls)
        out = {}
        for n, u in ids.items():
            st, body = c.multi(f"RETR {n}")
            assert st.startswith(b"+OK"), st
            assert len(body) == sizes[n], \
                f"LIST {n} says {sizes[n]} octets, RETR gave {len(body)}"
            out[u] = (body, sizes[n])
        assert c.cmd("QUIT").startswith(b"+OK")
    return out


def by_content(snap):
    return {body: uidl for uidl, (body, _) in snap.items()}


NAMED = [
    # (subdir, name template, data); {S} and {W} are filled in.
    ("new", "1700000000.V801I1a2bM345678.mail.example.org",
     b"Subject: postfix style\n\npostfix body\n"),
    ("cur", "1700000001.M2P3.host,S={S},W={W}:2,S",
     b"Subject: dovecot style\n\ndovecot body\nsecond\n"),
    ("cur", "1700000002.M123456P789V0000000000000801I0000000000012345.mx.example.com,S={S}:2,",
     b"Subject: courier style\r\n\r\ncourier body\r\n"),
    ("new", "1700000003.M4P5.my\\057host\\072x,S={S},W={W}",
     b"Subject: escaped host name\n\nescaped\n"),
    ("new", "1700000004." + "L" * 120 + ".host",
     b"Subject: very long name\n\nlong\n"),
    ("cur", "1700000005.M6P7.host:2,FRS",
     b"Subject: flags\n\n.dot line\nflags\n"),
    ("new", "1700000006.M8P9.host\xe4",
     b"Subject: 8-bit name\n\neight\n"),
]


def fill(name, data):
    return (name.replace("{S}", str(len(data)))
                .replace("{W}", str(len(wire_form(data)))))


@pytest.fixture
def named(env, server):
    for sub, name, data in NAMED:
        env.deliver("alice", data, name=fill(name, data), subdir=sub)
    return server()


def test_maildir_name_styles_sizes_and_uidls(named):
    snap = snapshot(named)
    got = sorted(body for body, _ in snap.values())
    want = sorted(wire_form(d) for _, _, d in NAMED)
    assert got == want, "served messages differ from the Maildir's"
    for uidl, (body, size) in snap.items():
        assert size == len(body)


def test_uidl_stable_across_sessions_restart_cache_loss_and_rename(env, server):
    s = server()
    for _, name, data in NAMED:
        env.deliver("alice", data, name=fill(name, data).split(":")[0],
                    subdir="new")
    first = by_content(snapshot(s))
    assert len(first) == len(NAMED)
    assert by_content(snapshot(s)) == first, "UIDLs changed between sessions"

    s.stop()
    s = server()
    assert by_content(snapshot(s)) == first, "UIDLs changed across a restart"

    md = env.maildir("alice")
    assert (md / "popbox.cache").exists(), "no popbox.cache was written"
    (md / "popbox.cache").unlink()
    assert by_content(snapshot(s)) == first, "UIDLs changed after losing the cache"

    # What a MUA does: new/NAME -> cur/NAME:2,S.
    for p in list((md / "new").iterdir()):
        os.rename(p, md / "cur" / (p.name + ":2,S"))
    assert not list((md / "new").iterdir())
    assert by_content(snapshot(s)) == first, "UIDLs changed on new/ -> cur/"

    # A damaged cache is ignored and rebuilt.
    (md / "popbox.cache").write_bytes(b"popbox-cache 1\ngarbage\x00\n")
    own(md / "popbox.cache")
    assert by_content(snapshot(s)) == first, "UIDLs changed with a damaged cache"

    # Flags changed again, in cur/.
    for p in list((md / "cur").iterdir()):
        os.rename(p, md / "cur" / (p.name.split(":")[0] + ":2,RS"))
    assert by_content(snapshot(s)) == first, "UIDLs changed when flags changed"


def test_truncated_cache_is_rebuilt(env, server):
    s = server()
    for i in range(5):
        env.deliver("alice", b"Subject: %d\n\nbody %d\n" % (i, i))
    first = by_content(snapshot(s))
    md = env.maildir("alice")
    cache = (md / "popbox.cache").read_bytes()
    for cut in (len(cache) // 2, len(cache) - 1, 10, 0):
        (md / "popbox.cache").write_bytes(cache[:cut])
        own(md / "popbox.cache")
        assert by_content(snapshot(s)) == first, f"cache cut at {cut}"


def test_second_session_in_use(env, server):
    env.deliver("alice", b"Subject: one\n\nbody\n")
    env.deliver("alice", b"Subject: two\n\nbody\n")
    s = server()
    with RawPOP3(s.host, s.port) as a, RawPOP3(s.host, s.port) as b:
        a.login("alice", PW["alice"])
        assert b.cmd("USER alice").startswith(b"+OK")
        r = b.cmd("PASS " + PW["alice"])
        assert r.startswith(b"-ERR [IN-USE]"), f"second session got {r!r}"
        # The refused session is closed (its mail process cannot take a
        # second login); the client reconnects later.
        assert b.wait_closed(3)
        # The first session works on.
        assert a.cmd("STAT").startswith(b"+OK 2 ")
        st, body = a.multi("RETR 1")
        assert st.startswith(b"+OK") and body
        assert a.cmd("DELE 1").startswith(b"+OK")
        assert a.cmd("QUIT").startswith(b"+OK")
        a.wait_closed(3)
    # Once the first is gone, the lock is free again.
    with RawPOP3(s.host, s.port) as b:
        assert b.cmd("USER alice").startswith(b"+OK")
        r = b.cmd("PASS " + PW["alice"])
        assert r.startswith(b"+OK"), f"login after the first session quit: {r!r}"
        assert b.cmd("STAT").startswith(b"+OK 1 ")


def dele_all(c, n):
    for i in range(1, n + 1):
        assert c.cmd(f"DELE {i}").startswith(b"+OK")
    assert c.cmd("STAT").startswith(b"+OK 0 0")


def deliver_three(env):
    for i in range(3):
        env.deliver("alice", b"Subject: keep %d\n\nmust survive\n" % i)
    return env.files("alice")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_server_killed_after_dele_loses_nothing(env, server, how):
    before = deliver_three(env)
    s = server()
    c = RawPOP3(s.host, s.port)
    c.login("alice", PW["alice"])
    dele_all(c, 3)
    s.stop(getattr(signal, how))
    c.close()
    assert env.files("alice") == before, f"messages lost after {how} mid-session"
    s2 = server()
    snap = snapshot(s2)
    assert sorted(b for b, _ in snap.values()) == \
        sorted(wire_form(d) for d in before.values()), "new server misses mail"


def test_dropped_connection_deletes_nothing(env, server):
    before = deliver_three(env)
    s = server()
    c = RawPOP3(s.host, s.port)
    c.login("alice", PW["alice"])
    dele_all(c, 3)
    c.close()
    s.wait_log(r"event=logout .*reason=disconnected")
    assert env.files("alice") == before, "DELE without QUIT removed mail"
    assert len(snapshot(s)) == 3


def test_reset_connection_deletes_nothing(env, server):
    before = deliver_three(env)
    s = server()
    c = RawPOP3(s.host, s.port)
    c.login("alice", PW["alice"])
    dele_all(c, 3)
    # RST instead of FIN.
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    s.wait_log(r"event=logout ")
    assert env.files("alice") == before
    assert len(snapshot(s)) == 3


def test_delivery_during_session(env, server):
    env.deliver("alice", b"Subject: old\n\nold\n")
    s = server()
    with RawPOP3(s.host, s.port) as c:
        c.login("alice", PW["alice"])
        assert c.cmd("STAT").startswith(b"+OK 1 ")
        late = env.deliver("alice", b"Subject: late\n\narrived during the session\n")
        assert c.cmd("STAT").startswith(b"+OK 1 "), "late message joined the session"
        st, listing = c.multi("LIST")
        assert listing.count(b"\r\n") == 1, listing
        assert c.cmd("RETR 2").startswith(b"-ERR")
        assert c.cmd("DELE 2").startswith(b"-ERR")
        assert c.cmd("DELE 1").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"+OK")
    assert late.exists(), "QUIT removed a message delivered during the session"
    snap = snapshot(s)
    assert [b for b, _ in snap.values()] == \
        [b"Subject: late\r\n\r\narrived during the session\r\n"], snap


def test_non_files_in_maildir_are_not_served(env, server):
    md = env.maildir("alice")
    env.deliver("alice", b"Subject: real\n\nreal message\n")
    secret = env.root / "outside-secret"
    secret.write_bytes(b"Subject: secret\n\nnot for POP\n")
    own(secret)
    os.symlink(secret, md / "new" / "1700000100.M1P1.symlink")
    os.symlink(secret, md / "cur" / "1700000101.M1P1.symlink:2,S")
    os.symlink("/nonexistent", md / "new" / "1700000102.M1P1.dangling")
    (md / "new" / "1700000103.M1P1.directory").mkdir()
    (md / "new" / "1700000103.M1P1.directory" / "x").write_bytes(b"x\n")
    os.mkfifo(md / "new" / "1700000104.M1P1.fifo")
    (md / "tmp" / "1700000105.M1P1.in-tmp").write_bytes(b"Subject: tmp\n\nx\n")
    (md / "new" / ".hidden").write_bytes(b"Subject: hidden\n\nx\n")
    own_tree_paths = [md / "new", md / "cur", md / "tmp"]
    for p in own_tree_paths:
        for q in p.iterdir():
            os.lchown(q, *(os.lstat(md).st_uid, os.lstat(md).st_gid))
    s = server()
    snap = snapshot(s)
    assert [b for b, _ in snap.values()] == [b"Subject: real\r\n\r\nreal message\r\n"], \
        f"served something that is not a regular message file: {snap}"
    assert secret.exists()


def test_message_moved_by_another_agent_during_session(env, server):
    p = env.deliver("alice", b"Subject: moving\n\nmoves to cur\n")
    s = server()
    with RawPOP3(s.host, s.port) as c:
        c.login("alice", PW["alice"])
        moved = p.parent.parent / "cur" / (p.name + ":2,S")
        os.rename(p, moved)
        st, body = c.multi("RETR 1")
        assert st.startswith(b"+OK"), f"RETR after new/ -> cur/: {st!r}"
        assert body == b"Subject: moving\r\n\r\nmoves to cur\r\n"
        assert c.cmd("DELE 1").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"+OK")
    assert not moved.exists(), "DELE + QUIT did not remove the moved message"
    assert env.files("alice") == {}


def test_message_removed_by_another_program(env, server):
    p1 = env.deliver("alice", b"Subject: gone\n\nwill vanish\n")
    env.deliver("alice", b"Subject: stays\n\nstays\n")
    s = server()
    with RawPOP3(s.host, s.port) as c:
        c.login("alice", PW["alice"])
        _, uidls = c.multi("UIDL")
        n_gone = None
        for n in (1, 2):
            st, body = c.multi(f"TOP {n} 0")
            if b"Subject: gone" in body:
                n_gone = n
        p1.unlink()
        r = c.cmd(f"RETR {n_gone}")
        assert r.startswith(b"-ERR"), f"RETR of a vanished message: {r!r}"
        assert c.cmd("NOOP") == b"+OK", "session must go on"
        other = 3 - n_gone
        st, body = c.multi(f"RETR {other}")
        assert body == b"Subject: stays\r\n\r\nstays\r\n"
        assert c.cmd(f"DELE {n_gone}").startswith(b"+OK")
        r = c.cmd("QUIT")
        assert r.startswith(b"+OK"), f"QUIT with an already-gone DELE'd message: {r!r}"
    assert len(env.files("alice")) == 1


def test_maildir_without_subdirs_and_missing_maildir(env, server):
    md = env.maildir("carol")
    for sub in ("new", "cur", "tmp"):
        os.rmdir(md / sub)
    s = server()
    with RawPOP3(s.host, s.port) as c:
        c.login("carol", PW["carol"])
        assert c.cmd("STAT") == b"+OK 0 0"
        st, body = c.multi("LIST")
        assert st.startswith(b"+OK") and body == b""
        assert c.cmd("QUIT").startswith(b"+OK")
    env.clear("bob")
    import shutil
    shutil.rmtree(env.mail_root / "bob")
    with RawPOP3(s.host, s.port) as c:
        c.cmd("USER bob")
        r = c.cmd("PASS " + PW["bob"])
        assert r.startswith(b"-ERR [SYS/"), f"login with no Maildir: {r!r}"
        assert b"[AUTH]" not in r


def test_many_messages_and_delete_half(env, server):
    n = 300
    for i in range(n):
        env.deliver("alice", b"Subject: m%d\n\n%s\n" % (i, b"x" * i))
    s = server()
    with RawPOP3(s.host, s.port) as c:
        c.login("alice", PW["alice"])
        st = c.cmd("STAT").split()
        assert int(st[1]) == n
        _, uidls = c.multi("UIDL")
        lines = uidls.split(b"\r\n")[:-1]
        assert len(lines) == n and len({l.split()[1] for l in lines}) == n
        for i in range(1, n + 1, 2):
            assert c.cmd(f"DELE {i}").startswith(b"+OK")
        r = c.cmd("QUIT")
        assert r == b"+OK popbox signing off (%d messages deleted)" % (n // 2), r
    assert len(env.files("alice")) == n // 2
    snap = snapshot(s)
    keep = {l.split()[1] for l in lines[1::2]}
    assert set(snap) == keep, "the wrong messages were deleted"


def age_dirs(md, seconds=100):
    t = time.time() - seconds
    for sub in ("new", "cur"):
        os.utime(md / sub, (t, t))


def test_cache_fast_path_stays_correct(env, server):
    """With new/ and cur/ older than the cache's scan, popboxd may list from
    popbox.cache alone; every change to the Maildir must still show up."""
    md = env.maildir("alice")
    for i in range(3):
        env.deliver("alice", b"Subject: f%d\n\nfast %d\n" % (i, i))
    age_dirs(md)
    s = server()
    first = by_content(snapshot(s))           # scans, writes the cache
    assert by_content(snapshot(s)) == first   # may use the fast path
    # A delivery changes new/'s mtime: it must be seen.
    env.deliver("alice", b"Subject: f3\n\nfast 3\n")
    snap = by_content(snapshot(s))
    assert len(snap) == 4 and all(snap[k] == v for k, v in first.items())
    age_dirs(md)
    snapshot(s)
    # A MUA moves everything to cur/ and the directory times end up where
    # they were (backup restore, rsync -t): the cache's names are stale,
    # yet RETR must find each message and UIDLs must not change.
    stamp = (md / "new").stat().st_mtime, (md / "cur").stat().st_mtime
    for p in list((md / "new").iterdir()):
        os.rename(p, md / "cur" / (p.name + ":2,S"))
    os.utime(md / "new", (stamp[0], stamp[0]))
    os.utime(md / "cur", (stamp[1], stamp[1]))
    assert by_content(snapshot(s)) == snap
    # DELE + QUIT in that state removes exactly the chosen message.
    with RawPOP3(s.host, s.port) as c:
        c.login("alice", PW["alice"])
        st, body = c.multi("RETR 1")
        assert c.cmd("DELE 1").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"+OK")
    left = {wire_form(v) for v in env.files("alice").values()}
    assert body not in left and len(left) == 3
    assert set(by_content(snapshot(s))) == left


def test_lock_released_before_quit_reply(env, server):
    """A client that logs in again the moment it reads QUIT's +OK (with and
    without deletions) never finds its own maildrop [IN-USE]."""
    rounds = 100
    for i in range(rounds // 10 + 2):
        env.deliver("alice", b"Subject: %d\n\nbody\n" % i)
    s = server()
    for round_ in range(rounds):
        with RawPOP3(s.host, s.port) as c:
            c.login("alice", PW["alice"])
            if round_ % 10 == 0:
                assert c.cmd("DELE 1").startswith(b"+OK")
            assert c.cmd("QUIT").startswith(b"+OK")
