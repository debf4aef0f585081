"""popbox-deliver, the local delivery agent (docs/delivery.md), end to end.

Run as root the way an MTA runs it: started as root it becomes mail_user
(nobody in these tests), which may not read the passwd-file (it belongs to
popbox-auth), so the user's record comes from popboxd's auth process over
userdb_socket.  What is delivered is fetched back over POP3 with the raw
client: the bytes sent (in their wire form) under the two added headers,
with LIST saying exactly their length.

Faults: unknown user, quota, size limit, no popboxd to ask, a full
filesystem (a 1 MB tmpfs as the Maildir), and SIGKILL at random points
while a large message is still coming in through a pipe.
"""
import grp
import os
import pwd
import random
import re
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import BUILD, IS_ROOT, USERS, wire_form

DELIVER = BUILD / "popbox-deliver"

EX_DATAERR, EX_NOUSER, EX_CANTCREAT, EX_TEMPFAIL = 65, 67, 73, 75

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")

MSG = (b"From: Sender <sender@example.org>\r\n"
       b"Subject: delivered\r\n"
       b"\r\n"
       b"first line\r\n"
       b".starts with a dot\r\n"
       b"bare\rCR and \xc3\xa4 8-bit\r\n"
       b"last line\r\n")
HEADERS = (b"Return-Path: <sender@example.org>\r\n"
           b"Delivered-To: alice@example.test\r\n")


@pytest.fixture(autouse=True)
def _built():
    if not DELIVER.is_file():
        pytest.fail(f"{DELIVER} is not built (make test-build)", pytrace=False)


def as_user(name):
    """preexec_fn: become name (and its group) before exec."""
    pw = pwd.getpwnam(name)

    def drop():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return drop


def deliver(conf, user, data, *args, preexec=None, timeout=60):
    r = subprocess.run([str(DELIVER), "-c", str(conf), *args, user],
                       input=data, capture_output=True, timeout=timeout,
                       preexec_fn=preexec)
    for pat in (b"AddressSanitizer", b"LeakSanitizer", b"runtime error:"):
        assert pat not in r.stderr, r.stderr.decode(errors="replace")
    return r


def std_args():
    return ("-f", "sender@example.org", "-a", "alice@example.test")


def messages_in(md, sub):
    d = md / sub
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def fetch_all(raw, srv, user):
    """[(LIST size, RETR bytes)] of every message, oldest first."""
    c = raw(srv)
    c.login(user, USERS[user][1])
    st, body = c.multi("LIST")
    assert st.startswith(b"+OK"), st
    out = []
    for line in body.split(b"\r\n"):
        if not line:
            continue
        num, size = line.split()
        st, msg = c.multi(b"RETR " + num)
        assert st.startswith(b"+OK"), st
        out.append((int(size), msg))
    c.cmd("QUIT")
    return out


def deliver_conf(env, name="deliver.conf", **overrides):
    """A config for popbox-deliver alone (popboxd need not run)."""
    path = env.root / name
    path.write_text(env.config_text(**overrides))
    return path


# ------------------------------------------------------------ delivering


def test_delivered_message_is_fetched_byte_for_byte(env, server, raw):
    s = server()
    r = deliver(s.conf_path, "alice", MSG, *std_args())
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"" and r.stderr == b"", r
    md = env.mail_root / "alice" / "Maildir"
    names = messages_in(md, "new")
    assert len(names) == 1 and messages_in(md, "tmp") == [], names
    # ,S= is the file's size, ,W= what LIST will say.
    path = md / "new" / names[0]
    m = re.search(r",S=(\d+),W=(\d+)$", names[0])
    assert m, names[0]
    want = HEADERS + MSG
    assert int(m.group(1)) == path.stat().st_size
    assert int(m.group(2)) == len(want)
    if IS_ROOT:
        st = path.stat()
        assert st.st_uid == pwd.getpwnam("nobody").pw_uid
        assert st.st_mode & 0o777 == 0o600
    [(size, got)] = fetch_all(raw, s, "alice")
    assert got == want
    assert size == len(got)


@pytest.mark.parametrize("data", [
    b"Subject: lf only\n\nline\n.dot\nno final newline",
    b"Subject: mixed\r\n\nline\r\n\r\n",
    b"",
], ids=["lf-no-final-newline", "mixed", "empty"])
def test_line_ends_and_list_size(env, server, raw, data):
    s = server()
    r = deliver(s.conf_path, "bob", data, "-f", "", "-a", "bob")
    assert r.returncode == 0, r.stderr
    [(size, got)] = fetch_all(raw, s, "bob")
    stored = b"Return-Path: <>\nDelivered-To: bob\n" + data.replace(b"\r\n", b"\n")
    assert got == wire_form(stored)
    assert size == len(got)


def test_mbox_from_line_dropped_and_no_headers(env, server, raw):
    """A first "From " line (local(8), pipe(8) flag F) is not stored; -n
    adds no headers; "<>" is the null sender."""
    s = server()
    r = deliver(s.conf_path, "carol",
                b"From sender@example.org  Sat Nov 28 12:00:00 2026\n" + MSG,
                "-n")
    assert r.returncode == 0, r.stderr
    r = deliver(s.conf_path, "carol", MSG, "-f", "<>")
    assert r.returncode == 0, r.stderr
    got = [m for _, m in fetch_all(raw, s, "carol")]
    assert sorted(got) == sorted([MSG, b"Return-Path: <>\r\nDelivered-To: carol\r\n" + MSG])


def test_overlong_from_line_refused_whole(env, server):
    """A first line starting "From " but longer than an envelope line
    (1000 bytes) is refused, also when it arrives in one read, never
    silently dropped from the stored message."""
    s = server()
    for length in (3000, 60000):
        data = b"From " + b"x" * length + b"\n" + MSG
        r = deliver(s.conf_path, "carol", data, *std_args())
        assert r.returncode == EX_DATAERR, r
        assert r.stderr.startswith(b"5.6.0 "), r.stderr
        assert_nothing_stored(env, "carol")


# ------------------------------------------------------------ failures


def assert_nothing_stored(env, user):
    md = env.mail_root / user / "Maildir"
    assert messages_in(md, "new") == [], messages_in(md, "new")
    assert messages_in(md, "tmp") == [], messages_in(md, "tmp")


def test_unknown_user(env, server):
    s = server()
    for user in ("nosuchuser", "../etc", "x" * 200):
        r = deliver(s.conf_path, user, MSG, *std_args())
        assert r.returncode == EX_NOUSER, r
        assert r.stderr.startswith(b"5.1.1 "), r.stderr


def test_over_quota_is_tempfail(env, server):
    hashes = dict(env.hashes)
    # alice's own quota: 2 KB.
    env.hashes = {u: h for u, h in hashes.items() if u != "alice"}
    env.write_passwd([f"alice:{hashes['alice']}::::::quota_rule=*:storage=2k"])
    s = server()
    body = b"x" * 700 + b"\r\n"
    for _ in range(2):
        r = deliver(s.conf_path, "alice", body, *std_args())
        assert r.returncode == 0, r.stderr
    r = deliver(s.conf_path, "alice", body, *std_args())
    assert r.returncode == EX_TEMPFAIL, r
    assert r.stderr.startswith(b"4.2.2 "), r.stderr
    md = env.mail_root / "alice" / "Maildir"
    assert len(messages_in(md, "new")) == 2 and messages_in(md, "tmp") == []
    # The message quota from the config, for everyone else.
    s2_conf = deliver_conf(env, "quota.conf", quota_messages=1)
    r = deliver(s2_conf, "bob", body, *std_args())
    assert r.returncode == 0, r.stderr
    r = deliver(s2_conf, "bob", body, *std_args())
    assert r.returncode == EX_TEMPFAIL and r.stderr.startswith(b"4.2.2 "), r


def test_too_big_is_dataerr(env, server):
    s = server()
    conf = deliver_conf(env, "small.conf", message_size_limit="1k")
    r = deliver(conf, "dave", b"y" * 1025, *std_args())
    assert r.returncode == EX_DATAERR, r
    assert r.stderr.startswith(b"5.3.4 "), r.stderr
    assert_nothing_stored(env, "dave")
    r = deliver(conf, "dave", b"y" * 1024, *std_args())
    assert r.returncode == 0, r.stderr


def test_bad_arguments_and_config(env):
    # A config that does not load is the admin's to fix: the MTA keeps the
    # mail (EX_TEMPFAIL, which every MTA retries, not EX_CONFIG).
    r = deliver(env.root / "none.conf", "alice", MSG)
    assert r.returncode == EX_TEMPFAIL and r.stderr.startswith(b"4.3.5 "), r
    r = subprocess.run([str(DELIVER)], capture_output=True, timeout=30)
    assert r.returncode == 64, r
    conf = deliver_conf(env)
    r = deliver(conf, "alice", MSG, "-f", "a@b\r\nX-Injected: 1")
    assert r.returncode == 64, r
    assert_nothing_stored(env, "alice")


@needs_root
def test_no_popboxd_and_unreadable_passwd_is_tempfail(env):
    """Nobody to ask: the passwd-file is popbox-auth's and no auth process
    listens on userdb_socket.  The MTA must retry, not bounce."""
    conf = deliver_conf(env)
    r = deliver(conf, "alice", MSG, *std_args())
    assert r.returncode == EX_TEMPFAIL, r
    assert r.stderr.startswith(b"4.3.0 "), r.stderr
    assert b"userdb_socket" in r.stderr, r.stderr
    assert_nothing_stored(env, "alice")


@needs_root
def test_lookup_over_userdb_socket_as_mail_user(env, server, raw):
    """Run as the mail user itself (Postfix pipe(8) user=...): it cannot
    read the passwd-file and asks the auth process."""
    s = server()
    sock = env.root / "userdb"
    st = sock.lstat()
    assert st.st_uid == pwd.getpwnam("nobody").pw_uid
    assert st.st_mode & 0o777 == 0o600
    nobody = as_user("nobody")
    r = subprocess.run(["cat", str(env.passwd)], capture_output=True,
                       preexec_fn=nobody, timeout=30)
    assert r.returncode != 0, "the test needs a passwd-file nobody cannot read"
    r = deliver(s.conf_path, "alice", MSG, *std_args(), preexec=nobody)
    assert r.returncode == 0, r.stderr
    [(size, got)] = fetch_all(raw, s, "alice")
    assert got == HEADERS + MSG and size == len(got)
    # Another user cannot even connect (the socket is nobody's, 0600).
    r = deliver(s.conf_path, "alice", MSG, *std_args(),
                preexec=as_user("daemon"))
    assert r.returncode == EX_TEMPFAIL, r


@needs_root
def test_lookup_in_a_readable_passwd_file(env, server, raw):
    """A passwd-file the delivering user can read is looked up directly
    (passwd_file_find: no auth process asked, no dummy hash): the same
    record, the same result.  popboxd runs only to fetch the message."""
    s = server()
    os.chmod(env.passwd, 0o644)
    try:
        conf = deliver_conf(env, userdb_socket=str(env.root / "no-such-socket"))
        nobody = as_user("nobody")
        r = deliver(conf, "alice", MSG, *std_args(), preexec=nobody)
        assert r.returncode == 0, r.stderr
        r = deliver(conf, "nosuchuser", MSG, *std_args(), preexec=nobody)
        assert r.returncode == EX_NOUSER, r
    finally:
        os.chmod(env.passwd, 0o600)
    [(size, got)] = fetch_all(raw, s, "alice")
    assert got == HEADERS + MSG and size == len(got)


def userdb_packet(user: bytes, msg_id=1) -> bytes:
    """An AUTH_MSG_USERDB_LOOKUP (9) with USER (tag 0), ipc.h's format."""
    return struct.pack(">HIBH", 9, msg_id, 0, len(user)) + user


@needs_root
def test_userdb_socket_refuses_other_uids(env, server):
    """Root can connect to the file, but the auth process answers only
    mail_user: the connection is closed unanswered, and logged."""
    s = server()
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as c:
        c.settimeout(10)
        c.connect(str(env.root / "userdb"))
        # The auth process closes at accept, so the send may already
        # find the connection gone.
        try:
            c.send(userdb_packet(b"alice"))
            assert c.recv(65536) == b"", "answered a peer that is not mail_user"
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed with the request unread: refused all the same
    s.wait_log(r"event=userdb-peer-refused uid=0 ")


@needs_root
def test_userdb_socket_answers_mail_user(env, server):
    """The reply itself, as the mail user sees it: a record for a user,
    FAIL for an unknown one; only USERDB_LOOKUP is allowed there."""
    s = server()
    path = str(env.root / "userdb")
    script = (
        "import socket, struct, sys\n"
        "c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
        "c.settimeout(10); c.connect(sys.argv[1])\n"
        "for user in (b'alice', b'nosuchuser', b'x' * 300):\n"
        "    c.send(struct.pack('>HIBH', 9, 5, 0, len(user)) + user)\n"
        "    sys.stdout.write(c.recv(65536).hex() + '\\n')\n"
        "c.send(struct.pack('>HIBH', 1, 6, 0, 5) + b'alice')\n"
        "sys.stdout.write(c.recv(65536).hex() + '\\n')\n")
    r = subprocess.run(["/usr/bin/python3", "-c", script, path],
                       capture_output=True, timeout=30,
                       preexec_fn=as_user("nobody"))
    assert r.returncode == 0, r.stderr
    ok, unknown, toolong, refused = (bytes.fromhex(x)
                                     for x in r.stdout.decode().split())
    # type 10 = USERDB_REPLY, id 5, first field STATUS (tag 9) = 0 (OK)
    assert ok[:6] == struct.pack(">HI", 10, 5), ok
    assert ok[6:13] == struct.pack(">BHI", 9, 4, 0), ok
    assert b"alice" in ok
    assert unknown[6:13] == struct.pack(">BHI", 9, 4, 2), unknown  # FAIL
    assert toolong[6:13] == struct.pack(">BHI", 9, 4, 2), toolong
    # PASS from a userdb peer: AUTH_MSG_REPLY (5) MALFORMED (3).
    assert refused[:6] == struct.pack(">HI", 5, 6), refused
    assert refused[6:13] == struct.pack(">BHI", 9, 4, 3), refused
    s.check_sanitizers()


@needs_root
def test_userdb_lookup_from_mail_process_socket(env, server):
    """The mail processes (LMTP) ask over their own auth connection, the
    abstract socket, with the same USERDB_LOOKUP: as mail_user it is
    answered; login_user may not ask."""
    s = server()
    names = set(re.findall(rf"@(popboxd-{s.pid}-[0-9a-f]+-auth)\b",
                           open("/proc/net/unix").read()))
    assert len(names) == 1, names
    name = names.pop()
    script = (
        "import socket, struct, sys\n"
        "c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
        "c.settimeout(10); c.connect('\\0' + sys.argv[1])\n"
        "c.send(struct.pack('>HIBH', 9, 7, 0, 3) + b'bob')\n"
        "sys.stdout.write(c.recv(65536).hex())\n")
    for user, status in (("nobody", 0), ("popbox-login", None)):
        r = subprocess.run(["/usr/bin/python3", "-c", script, name],
                           capture_output=True, timeout=30,
                           preexec_fn=as_user(user))
        assert r.returncode == 0, r.stderr
        reply = bytes.fromhex(r.stdout.decode())
        if status is None:
            # login_user: refused as MALFORMED in a plain REPLY (type 5).
            assert reply[:6] == struct.pack(">HI", 5, 7), reply
            assert reply[6:13] == struct.pack(">BHI", 9, 4, 3), reply
        else:
            assert reply[:6] == struct.pack(">HI", 10, 7), reply
            assert reply[6:13] == struct.pack(">BHI", 9, 4, status), reply
            assert b"bob" in reply


# ------------------------------------------------------------ full disk


@pytest.fixture
def tiny_fs(env):
    """A 1 MB tmpfs mounted as alice's Maildir (empty: popbox-deliver makes
    tmp/ new/ cur/ itself)."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    md = env.mail_root / "alice" / "Maildir"
    pw = pwd.getpwnam("nobody")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o",
                        f"size=1m,mode=0700,uid={pw.pw_uid},gid={pw.pw_gid}",
                        "popbox-test", str(md)], capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr!r}")
    try:
        yield md
    finally:
        if subprocess.run(["umount", str(md)], timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(md)], timeout=30)


def test_full_filesystem_is_tempfail_and_leaves_nothing(env, server, raw, tiny_fs):
    s = server()
    big = (b"Subject: big\r\n\r\n" +
           b"".join(b"%07d " % i + b"z" * 90 + b"\r\n" for i in range(20000)))
    assert len(big) > 2_000_000
    r = deliver(s.conf_path, "alice", big, *std_args())
    assert r.returncode == EX_TEMPFAIL, r
    assert r.stderr.startswith(b"4.3.0 "), r.stderr
    assert b"No space left" in r.stderr, r.stderr
    assert messages_in(tiny_fs, "new") == []
    assert messages_in(tiny_fs, "tmp") == []
    # The space came back: a small one fits, and is all there is.
    r = deliver(s.conf_path, "alice", MSG, *std_args())
    assert r.returncode == 0, r.stderr
    [(size, got)] = fetch_all(raw, s, "alice")
    assert got == HEADERS + MSG and size == len(got)


# ------------------------------------------------------------ SIGKILL


KILL_ROUNDS = 20
KILL_CHUNK = 64 * 1024


def test_sigkill_at_random_points_leaves_whole_or_nothing(env, server):
    """SIGKILL while the message comes in slowly through a pipe, at random
    points (reading, writing, fsync, rename): new/ gains the whole message
    or nothing.  tmp/ may keep the partial file of a killed run (Maildir
    readers ignore tmp/; a later delivery removes it after 36 hours)."""
    s = server()
    md = env.mail_root / "alice" / "Maildir"
    big = (b"Subject: slow\r\n\r\n" +
           b"".join(b"%07d " % i + b"k" * 60 + b"\r\n" for i in range(40000)))
    stored = (b"Return-Path: <sender@example.org>\nDelivered-To: alice@example.test\n"
              + big.replace(b"\r\n", b"\n"))
    rng = random.Random(5)
    outcomes = {"killed-nothing": 0, "killed-whole": 0, "completed": 0}
    for _ in range(KILL_ROUNDS):
        before = set(messages_in(md, "new"))
        p = subprocess.Popen([str(DELIVER), "-c", str(s.conf_path),
                              *std_args(), "alice"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)

        def feed():
            try:
                for i in range(0, len(big), KILL_CHUNK):
                    p.stdin.write(big[i:i + KILL_CHUNK])
                    p.stdin.flush()
                    time.sleep(0.004)
                p.stdin.close()
            except (BrokenPipeError, ValueError, OSError):
                pass
        t = threading.Thread(target=feed)
        t.start()
        time.sleep(rng.uniform(0.0, 0.4))
        p.kill()
        rc = p.wait(timeout=60)
        t.join(timeout=60)
        err = p.stderr.read()
        p.stderr.close()
        assert b"Sanitizer" not in err, err
        added = set(messages_in(md, "new")) - before
        assert len(added) <= 1, added
        for name in added:
            assert (md / "new" / name).read_bytes() == stored, \
                f"partial or wrong message in new/: {name}"
        if rc == 0:
            assert len(added) == 1, "exit 0 without a message in new/"
            outcomes["completed"] += 1
        else:
            assert rc == -9, (rc, err)
            outcomes["killed-whole" if added else "killed-nothing"] += 1
    leftovers = messages_in(md, "tmp")
    print(f"outcomes {outcomes}; tmp/ leftovers of killed runs: {leftovers}")
    assert outcomes["killed-nothing"] > 0, outcomes
    # Leftovers are ours (partial files of killed runs), never in new/.
    for name in leftovers:
        assert re.fullmatch(r"\d+\.M\d{6}P\d+R[0-9a-f]{8}\.[A-Za-z0-9._-]+", name), name
    assert len(leftovers) <= outcomes["killed-nothing"] + outcomes["killed-whole"]
