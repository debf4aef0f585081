"""Abuse limits, each attacked while a canary client logs in and fetches
within a second: the pre-auth deadline against a slowloris, the pre-auth
pool (oldest goes first), the per-address and global connection caps, a
client that stops reading during a large RETR (bounded memory, dropped at
output_timeout), a client that pipelines without reading (paused), and
EMFILE on accept (no spinning, service back when descriptors free up)."""
import os
import re
import resource
import socket
import subprocess
import threading
import time

import pytest

from conftest import (MESSAGES, USERS, RawPOP3, server_pids, server_rss_kb,
                      wire_form)

PW = {u: pw for u, (_, pw) in USERS.items()}
ASAN_SMALL = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") + ":" if
                               os.environ.get("ASAN_OPTIONS") else "") +
              "quarantine_size_mb=1"}


def canary(s, user="dave"):
    """Logs in, fetches a message, quits: all within one second."""
    t = time.monotonic()
    with RawPOP3(s.host, s.port, timeout=2) as c:
        c.login(user, PW[user])
        st, body = c.multi("RETR 1")
        assert st.startswith(b"+OK") and body == wire_form(MESSAGES[0])
        assert c.cmd("QUIT").startswith(b"+OK")
    took = time.monotonic() - t
    assert took < 1.0, f"canary took {took:.2f} s"


def closed(sock, timeout):
    """True if the server closes sock within timeout (data is ignored)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sock.recv(4096) == b"":
                return True
    except (socket.timeout, ConnectionResetError):
        return isinstance(sock, socket.socket) and False
    return False


def process_cpu(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def test_slowloris_closed_at_preauth_deadline(env, server):
    """A byte every 300 ms never resets the deadline: the whole pre-auth
    phase has login_timeout seconds."""
    env.deliver("dave", MESSAGES[0])
    s = server(login_timeout="5")
    socks = []
    for _ in range(30):
        so = socket.create_connection((s.host, s.port))
        so.recv(100)
        socks.append(so)
    start = time.monotonic()
    stop = threading.Event()

    def trickle():
        text = b"USER " + b"x" * 100
        i = 0
        while not stop.is_set() and i < len(text):
            for so in socks:
                try:
                    so.send(text[i:i + 1])
                except OSError:
                    pass
            i += 1
            stop.wait(0.3)
    t = threading.Thread(target=trickle)
    t.start()
    try:
        canary(s)
        time.sleep(1)
        canary(s)
        ends = []
        for so in socks:
            so.settimeout(max(0.1, start + 9 - time.monotonic()))
            data = b""
            try:
                while True:
                    d = so.recv(4096)
                    if not d:
                        break
                    data += d
            except (socket.timeout, ConnectionResetError):
                pass
            ends.append(time.monotonic() - start)
            assert b"-ERR login took too long" in data, data
        assert max(ends) < 8.0, f"slow clients closed after {max(ends):.1f} s"
        canary(s)
    finally:
        stop.set()
        t.join()
        for so in socks:
            so.close()


def test_preauth_pool_full_oldest_goes_first(env, server):
    env.deliver("dave", MESSAGES[0])
    s = server(workers="1", max_preauth_connections="20")
    socks = []
    for _ in range(30):
        so = socket.create_connection((s.host, s.port), timeout=5)
        assert so.recv(100).startswith(b"+OK")
        socks.append(so)
    # The first ten were pushed out, oldest first, with a reason.
    for so in socks[:10]:
        data = so.recv(4096)
        assert data == b"-ERR [SYS/TEMP] too many clients, try again later\r\n", data
        assert so.recv(10) == b""
    # The canary gets in (it pushes out the oldest waiting one).
    canary(s)
    for so in socks[10:11]:
        assert so.recv(4096).startswith(b"-ERR [SYS/TEMP]")
    for so in socks[11:]:
        so.settimeout(0.2)
        with pytest.raises(socket.timeout):
            so.recv(10)
        so.close()
    assert s.log().count("event=preauth-evicted") == 11


def test_reader_that_stops_is_bounded_and_dropped(env, server):
    """RETR of a 20 MB message, never read: output waits in bounded
    buffers, and the client is dropped at output_timeout."""
    env.deliver("dave", MESSAGES[0])
    env.deliver("bob", b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 20000)
    s = server(_env=ASAN_SMALL, output_timeout="10", workers="1")
    c = RawPOP3(s.host, s.port, rcvbuf=65536)
    try:
        c.login("bob", PW["bob"])
        before = server_rss_kb(s)
        c.send(b"RETR 1\r\n" * 5)
        t0 = time.monotonic()
        time.sleep(2)
        peak = server_rss_kb(s)
        assert peak - before < 16 * 1024, f"RSS {before} -> {peak} kB"
        canary(s)
        # Not reading anything (reading would be progress): the server
        # gives up on its own.
        s.wait_log(r"reason=write-timeout", timeout=15)
        took = time.monotonic() - t0
        assert 9 < took < 14, f"dropped after {took:.1f} s"
        assert c.wait_closed(5)
        canary(s)
    finally:
        c.close()


def test_pipelining_without_reading_is_paused(env, server):
    env.deliver("dave", MESSAGES[0])
    s = server(_env=ASAN_SMALL, workers="1")
    c = RawPOP3(s.host, s.port, rcvbuf=16384)
    try:
        c.login("carol", PW["carol"])
        before = server_rss_kb(s)
        c.sock.setblocking(False)
        # Loopback socket buffers alone can hold a few MB: offer far more.
        sent = 0
        burst = b"NOOP\r\n" * 10000
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sent < 400 * len(burst):
            try:
                sent += c.sock.send(burst)
            except BlockingIOError:
                time.sleep(0.05)
        c.sock.setblocking(True)
        # The server stopped reading long before all of it was sent.
        assert sent < 400 * len(burst), f"the server took all {sent} bytes unread"
        peak = server_rss_kb(s)
        assert peak - before < 16 * 1024, f"RSS {before} -> {peak} kB"
        canary(s)
    finally:
        c.close()


def low_fd_limit():
    """In the server's process before exec: at most 64 descriptors, hard
    limit too, so popboxd cannot raise it back."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def test_emfile_does_not_spin(env, server):
    env.deliver("dave", MESSAGES[0])
    s = server(workers="1", max_connections_per_address="0",
               _preexec=low_fd_limit)
    login = [int(m.group(1)) for m in
             re.finditer(r"event=spawned role=login pid=(\d+)", s.log())]
    assert len(login) == 1
    flood = []
    try:
        for _ in range(80):
            flood.append(socket.create_connection((s.host, s.port), timeout=2))
        time.sleep(0.5)
        cpu0 = process_cpu(login)
        time.sleep(2)
        spent = process_cpu(login) - cpu0
        assert spent < 0.5, f"login process used {spent:.2f} s of CPU in 2 s at EMFILE"
        assert "event=accept-paused" in s.log()
    finally:
        for so in flood:
            so.close()
    # Descriptors are free again: service is back.
    deadline = time.monotonic() + 3
    while True:
        try:
            canary(s)
            break
        except (AssertionError, OSError, EOFError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def connect_from(s, source):
    so = socket.socket()
    so.settimeout(5)
    so.bind((source, 0))
    so.connect((s.host, s.port))
    return so


def from_source(s, source):
    c = RawPOP3.__new__(RawPOP3)
    c.sock = connect_from(s, source)
    c.buf = bytearray()
    c.greeting = c.readline()
    return c


def test_per_address_cap(env, server):
    env.deliver("dave", MESSAGES[0])
    s = server(max_connections_per_address="5")
    held = [connect_from(s, "127.0.0.1") for _ in range(3)]
    for so in held:
        assert so.recv(100).startswith(b"+OK")
    # Logged-in sessions count too (in the mail process, after hand-over).
    users = ["alice", "bob"]
    sessions = []
    for u in users:
        c = from_source(s, "127.0.0.1")
        c.login(u, PW[u])
        sessions.append(c)
    extra = connect_from(s, "127.0.0.1")
    assert extra.recv(200) == \
        b"-ERR [SYS/TEMP] too many connections from your address, try later\r\n"
    assert extra.recv(10) == b""
    s.wait_log(r"reason=per-address-cap")
    # Another address is not affected: the canary from 127.0.0.2.
    t = time.monotonic()
    c = from_source(s, "127.0.0.2")
    c.login("dave", PW["dave"])
    assert c.multi("RETR 1")[1] == wire_form(MESSAGES[0])
    assert c.cmd("QUIT").startswith(b"+OK")
    assert time.monotonic() - t < 1.0
    # One of the five leaves: room for one more from 127.0.0.1.
    assert sessions[0].cmd("QUIT").startswith(b"+OK")
    sessions[0].wait_closed(2)
    deadline = time.monotonic() + 2
    while True:
        again = connect_from(s, "127.0.0.1")
        first = again.recv(200)
        if first.startswith(b"+OK") or time.monotonic() > deadline:
            break
        again.close()
        time.sleep(0.05)
    assert first.startswith(b"+OK"), first
    for so in held + [again, extra]:
        so.close()
    for c in sessions[1:]:
        c.close()


def test_total_cap(env, server):
    env.deliver("dave", MESSAGES[0])
    s = server(max_connections="6", max_connections_per_address="0")
    held = [connect_from(s, f"127.0.0.{i}") for i in range(1, 7)]
    for so in held:
        assert so.recv(100).startswith(b"+OK")
    extra = connect_from(s, "127.0.0.9")
    assert extra.recv(200) == b"-ERR [SYS/TEMP] too many connections, try later\r\n"
    s.wait_log(r"reason=total-cap")
    # When the flood ebbs, service is back at once.
    held.pop().close()
    time.sleep(0.2)
    canary(s)
    for so in held + [extra]:
        so.close()


def test_counts_survive_a_crashed_login_process(env, server):
    """A login process that dies holding counted connections does not
    leak them: the master drops its share."""
    import signal as sig
    env.deliver("dave", MESSAGES[0])
    s = server(workers="1", max_connections_per_address="3")
    held = [connect_from(s, "127.0.0.1") for _ in range(3)]
    for so in held:
        assert so.recv(100).startswith(b"+OK")
    login = [int(m.group(1)) for m in
             re.finditer(r"event=spawned role=login pid=(\d+)", s.log())]
    os.kill(login[0], sig.SIGKILL)
    s.wait_log(rf"event=child-died role=login pid={login[0]}")
    for so in held:
        so.close()
    s.wait_log(r"event=started role=login", start=s.log().index(f"pid={login[0]} status"))
    canary(s)
