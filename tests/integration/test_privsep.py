"""Privilege separation: which uid, groups, root directory and
capabilities each popboxd process has (read from /proc, and printed), the
restart of a crashed child while the others keep serving, no orphans when
the master is killed, and a compromised login process that cannot forge a
login (its hand-over with a made-up token is refused)."""
import os
import pwd
import re
import signal
import socket
import struct
import time

import pytest

from conftest import IS_ROOT, MESSAGES, USERS, RawPOP3

PW = {u: pw for u, (_, pw) in USERS.items()}
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


def children(s):
    """{pid: role} of the live children the master's log announced."""
    out = {}
    for m in re.finditer(r"event=spawned role=(\w+) pid=(\d+)", s.log()):
        pid = int(m.group(2))
        if os.path.exists(f"/proc/{pid}") and ppid(pid) == s.pid:
            out[pid] = m.group(1)
    return out


def ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)


def wait_children(s, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children(s)
        counts = {r: list(kids.values()).count(r) for r in want}
        if counts == want:
            return kids
        time.sleep(0.05)
    raise AssertionError(f"children {children(s)} never matched {want}")


def canary(s, user="dave"):
    """A login and a fetch, within a second."""
    t = time.monotonic()
    with RawPOP3(s.host, s.port, timeout=2) as c:
        c.login(user, PW[user])
        assert c.cmd("STAT").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"+OK")
    assert time.monotonic() - t < 1.0


@needs_root
def test_process_privileges_from_proc(env, server, capsys):
    s = server(workers="2")
    kids = wait_children(s, {"auth": 1, "login": 2, "mail": 2})
    want_user = {"auth": "popbox-auth", "login": "popbox-login", "mail": "nobody"}
    rows = [("master", s.pid, status(s.pid), os.readlink(f"/proc/{s.pid}/root"))]
    for pid, role in sorted(kids.items(), key=lambda kv: kv[1]):
        rows.append((role, pid, status(pid), os.readlink(f"/proc/{pid}/root")))
    with capsys.disabled():
        print("\n  process   pid      uid    gid    groups  root                          CapEff            NoNewPrivs")
        for role, pid, st, root in rows:
            print(f"  {role:8}  {pid:<7}  {st['Uid'].split()[0]:<5}  {st['Gid'].split()[0]:<5}  "
                  f"{st['Groups'].strip() or '-':<6}  {root:<28}  {st['CapEff']}  {st['NoNewPrivs']}")
    for role, pid, st, root in rows[1:]:
        pw = pwd.getpwnam(want_user[role])
        assert st["Uid"].split() == [str(pw.pw_uid)] * 4, (role, st["Uid"])
        assert st["Gid"].split() == [str(pw.pw_gid)] * 4, (role, st["Gid"])
        assert st["Groups"].split() in ([], [str(pw.pw_gid)]), (role, st["Groups"])
        assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, (role, st)
        assert st["NoNewPrivs"] == "1", (role, st["NoNewPrivs"])
        # Not dumpable: its /proc files are then root's, not the user's.
        assert os.stat(f"/proc/{pid}/status").st_uid == 0, role
        assert os.stat(f"/proc/{pid}/fd").st_uid == 0, role
        if role == "login":
            assert root == "/run/popboxd-empty", root
            assert os.listdir(f"/proc/{pid}/root") == [], "the login chroot is not empty"
        else:
            assert root == "/", (role, root)
        # Threads too (the auth and mail pools).
        for tid in os.listdir(f"/proc/{pid}/task"):
            tst = status(f"{pid}/task/{tid}")
            assert tst["Uid"].split() == [str(pw.pw_uid)] * 4, (role, tid)
    # Only the auth process can read the passwd-file.
    assert os.stat(env.passwd).st_uid == pwd.getpwnam("popbox-auth").pw_uid
    assert os.stat(env.passwd).st_mode & 0o077 == 0
    canary(s)


@needs_root
def test_user_roles_must_differ(env):
    import subprocess
    from conftest import POPBOXD
    conf = env.root / "same.conf"
    conf.write_text(env.config_text(login_user="nobody"))
    r = subprocess.run([str(POPBOXD), "-c", str(conf)], capture_output=True, timeout=10)
    assert r.returncode != 0
    assert b"login_user and mail_user must be different users" in r.stderr or \
           b"mail_user and login_user" in r.stderr or b"must be different" in r.stderr, r.stderr


@pytest.mark.parametrize("role", ["login", "mail", "auth"])
def test_crashed_child_is_replaced(env, server, role):
    env.deliver("dave", MESSAGES[0])
    s = server(workers="2")
    kids = wait_children(s, {"auth": 1, "login": 2, "mail": 2})
    # A session that is logged in before the crash.
    bystander = RawPOP3(s.host, s.port)
    bystander.login("alice", PW["alice"])
    victim = next(pid for pid, r in kids.items() if r == role)
    os.kill(victim, signal.SIGKILL)
    s.wait_log(rf"event=child-died role={role} pid={victim} status=signal:9")
    wait_children(s, {"auth": 1, "login": 2, "mail": 2})
    # Service goes on: a new login and fetch within a second (the auth
    # process may need a moment to come back: retry briefly).
    deadline = time.monotonic() + 3
    while True:
        try:
            canary(s)
            break
        except (AssertionError, EOFError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    # The bystander survives unless it was served by the killed process.
    try:
        r = bystander.cmd("STAT")
    except (EOFError, OSError):
        r = None
    if role == "auth":
        assert r is not None and r.startswith(b"+OK"), r
    bystander.close()


def test_master_killed_leaves_no_orphans(env, server):
    s = server(workers="2")
    kids = wait_children(s, {"auth": 1, "login": 2, "mail": 2})
    os.kill(s.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
            os.path.exists(f"/proc/{p}") and not is_zombie(p) for p in kids):
        time.sleep(0.05)
    left = [p for p in kids if os.path.exists(f"/proc/{p}") and not is_zombie(p)]
    assert left == [], f"children outlived the master: {left}"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((s.host, s.port), timeout=2)


def is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def abstract_socket(master_pid, what):
    with open("/proc/net/unix") as f:
        for line in f:
            m = re.search(rf"@(popboxd-{master_pid}-[0-9a-f]+-{what}\d*)$", line.strip())
            if m:
                return m.group(1)
    raise AssertionError(f"no {what} socket of {master_pid}")


def as_user(name, fn):
    """Runs fn() in a child process with name's uid and gid; returns the
    bytes fn returned (or the exception's text)."""
    pw = pwd.getpwnam(name)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgroups([pw.pw_gid])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            out = fn()
        except BaseException as e:
            out = f"exception: {e!r}".encode()
        os.write(w, out)
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        d = os.read(r, 65536)
        if not d:
            break
        data += d
    os.close(r)
    os.waitpid(pid, 0)
    return data


def tlv(tag, data):
    return struct.pack(">BH", tag, len(data)) + data


@needs_root
def test_compromised_login_process_cannot_forge_a_login(env, server):
    """Code running as popbox-login (what an attacker holding a login
    process has) hands a client to a mail process with a made-up token:
    the mail process asks auth, auth refuses, the client gets [SYS/TEMP]
    and no maildrop is opened.  Asking auth to redeem a token itself is
    refused too: that is a mail process's request."""
    env.deliver("alice", MESSAGES[0])
    s = server(workers="1")
    wait_children(s, {"auth": 1, "login": 1, "mail": 1})
    mail_name = abstract_socket(s.pid, "mail")
    auth_name = abstract_socket(s.pid, "auth")

    def forge():
        client, victim_end = socket.socketpair()
        msg = struct.pack(">HI", 8, 0)  # AUTH_MSG_HANDOVER
        msg += tlv(11, os.urandom(16))           # token
        msg += tlv(4, b"192.0.2.66")             # rip
        msg += tlv(16, b"f0e-1")                 # session
        msg += tlv(17, b"")                      # input
        m = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        m.connect("\0" + mail_name)
        socket.send_fds(m, [struct.pack(">I", len(msg)) + msg], [victim_end.fileno()])
        m.close()
        victim_end.close()
        client.settimeout(5)
        data = b""
        while True:
            d = client.recv(4096)
            if not d:
                break
            data += d
        # And straight to auth: redeem a token (a mail process's request).
        a = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        a.connect("\0" + auth_name)
        a.send(struct.pack(">HI", 6, 7) + tlv(11, os.urandom(16)))
        a.settimeout(5)
        reply = a.recv(1000)
        return data + b"\n--\n" + reply

    def forge_log_line():
        """A hand-over whose address would forge a log record."""
        client, victim_end = socket.socketpair()
        msg = struct.pack(">HI", 8, 0)
        msg += tlv(11, os.urandom(16))
        msg += tlv(4, b"192.0.2.1 event=login user=alice\nx")
        msg += tlv(16, b"abc-2")
        msg += tlv(17, b"")
        m = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        m.connect("\0" + mail_name)
        socket.send_fds(m, [struct.pack(">I", len(msg)) + msg], [victim_end.fileno()])
        m.close()
        victim_end.close()
        client.settimeout(5)
        return b"closed" if client.recv(100) == b"" else b"answered"

    assert as_user("popbox-login", forge_log_line) == b"closed"
    s.wait_log(r"event=handover-refused error=\"malformed\"")
    data, reply = as_user("popbox-login", forge).split(b"\n--\n")
    assert data == b"-ERR [SYS/TEMP] maildrop temporarily unavailable, try later\r\n", data
    assert "login token refused" in s.log()
    assert "user=alice" not in s.log()
    # auth answered the token request from a login uid with MALFORMED (3).
    assert reply[:2] == struct.pack(">H", 5) and tlv(9, struct.pack(">I", 3)) in reply, reply
    assert "event=auth-bad-message" in s.log()
    canary(s, "alice")


def test_hand_overs_spread_over_mail_processes(env, server):
    """Each mail process gets its share of logins (one shared hand-over
    socket once let the first mail process to wake take nearly all)."""
    s = server(workers="2")
    kids = wait_children(s, {"auth": 1, "login": 2, "mail": 2})
    mail = [pid for pid, role in kids.items() if role == "mail"]
    for i in range(24):
        user = ["alice", "dave", "carol", "bob"][i % 4]
        with RawPOP3(s.host, s.port) as c:
            c.login(user, PW[user])
            assert c.cmd("QUIT").startswith(b"+OK")
    time.sleep(0.3)
    counts = {pid: len(re.findall(rf"popboxd\[{pid}\]: info: event=login ", s.log()))
              for pid in mail}
    assert sum(counts.values()) == 24, counts
    assert min(counts.values()) >= 6, f"uneven hand-overs: {counts}"
