"""The LMTP listener (RFC 2033) in popboxd: mail handed over by an MTA and
fetched back over POP3, byte for byte.

Python's smtplib.LMTP plays the MTA where it can (it does LHLO, stuffing
and the final dot); a raw socket does the rest (exact bytes on the wire,
pipelining, the per-recipient replies after DATA, which smtplib does not
read by itself).  What POP3 returns must be the message that was sent,
with CRLF line ends, preceded by exactly the Return-Path and Delivered-To
lines the delivery adds; LIST's size must be RETR's octet count.
"""
import os
import pwd
import re
import resource
import signal
import smtplib
import socket
import stat
import subprocess

import pytest

from conftest import (IS_ROOT, POPBOX, POPBOXD, SOCKET_TIMEOUT,
                      recv_until_closed, wait_for)

SENDER = "sender@example.org"


# ---------------------------------------------------------------- helpers


def lmtp_port(srv) -> int:
    m = re.search(r"event=listening proto=lmtp addr=127\.0\.0\.1:(\d+)", srv.log())
    assert m, f"no LMTP listener in the log:\n{srv.log()}"
    return int(m.group(1))


def lmtp_server(server, **overrides):
    overrides.setdefault("lmtp_listen", "127.0.0.1:0")
    return server(**overrides)


def smtplib_client(srv) -> smtplib.LMTP:
    c = smtplib.LMTP("127.0.0.1", lmtp_port(srv), timeout=SOCKET_TIMEOUT)
    code, _ = c.ehlo("mta.test")   # LMTP sends LHLO
    assert code == 250
    return c


class RawLMTP:
    """LMTP over a plain socket: exact bytes out, whole replies in."""

    def __init__(self, address, family=socket.AF_INET, source=None):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(SOCKET_TIMEOUT)
        if source is not None:
            self.sock.bind((source, 0))
        self.sock.connect(address)
        self.buf = bytearray()
        code, lines = self.reply()
        assert code == 220, lines

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            assert len(self.buf) < 4096, "reply line too long"
            self._fill()

    def reply(self):
        """(code, [text lines]) of one whole, possibly multi-line, reply."""
        lines = []
        while True:
            line = self.line()
            assert re.match(rb"^\d{3}[ -]", line), f"bad reply line {line!r}"
            lines.append(line[4:])
            if line[3:4] == b" ":
                return int(line[:3]), lines

    def cmd(self, line: str):
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def wait_closed(self, timeout=10.0) -> bool:
        return recv_until_closed(self.sock, self.buf, timeout)


def raw_lmtp(srv) -> RawLMTP:
    return RawLMTP(("127.0.0.1", lmtp_port(srv)))


def transaction(c: RawLMTP, rcpts, sender=SENDER):
    """LHLO, MAIL, RCPTs; returns the RCPT reply codes."""
    code, lines = c.cmd("LHLO mta.test")
    assert code == 250
    code, _ = c.cmd(f"MAIL FROM:<{sender}>")
    assert code == 250
    return [c.cmd(f"RCPT TO:<{r}>")[0] for r in rcpts]


def stuff(body: bytes) -> bytes:
    """SMTP dot-stuffing of a CRLF body, plus the final dot."""
    assert body.endswith(b"\r\n")
    lines = body.split(b"\r\n")[:-1]
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n"
                    for l in lines) + b".\r\n"


def expected(body: bytes, rcpt: str, sender=SENDER) -> bytes:
    """What RETR must return for a CRLF body delivered over LMTP."""
    return (f"Return-Path: <{sender}>\r\nDelivered-To: {rcpt}\r\n".encode()
            + body)


def fetch_all(srv, raw, env, user):
    """Every message of user over POP3 (RETR), checking LIST == RETR octets."""
    c = raw(srv)
    c.login(user, env.passwords[user])
    status, listing = c.multi("LIST")
    assert status.startswith(b"+OK"), status
    out = []
    for line in listing.decode().split("\r\n"):
        if not line:
            continue
        n, size = (int(x) for x in line.split())
        status, msg = c.multi(f"RETR {n}")
        assert status.startswith(b"+OK"), status
        octets = int(status.split()[1])
        assert octets == size == len(msg), (octets, size, len(msg))
        out.append(msg)
    c.cmd("QUIT")
    c.close()
    return out


def new_files(env, user):
    return sorted((env.mail_root / user / "Maildir" / "new").iterdir())


def tmp_files(env, user):
    return sorted((env.mail_root / user / "Maildir" / "tmp").iterdir())


def add_user(env, name, extra=""):
    """A passwd-file user with alice's password and extra fields."""
    env.passwords[name] = env.passwords["alice"]
    env.extra_passwd_lines.append(f"{name}:{env.hashes['alice']}::::::{extra}")
    env.write_passwd()
    env.maildir(name)


BODY = (b"From: Sender <sender@example.org>\r\n"
        b"Subject: lmtp\r\n"
        b"\r\n"
        b"first line\r\n"
        b".starts with a dot\r\n"
        b"..two dots\r\n"
        b".\r\n"
        b"\r\n"
        b"8-bit: \xc3\xa4\xc3\xb6\xc3\xbc\r\n"
        b"last line\r\n")


# ---------------------------------------------------------------- tests


def test_lhlo_advertises_extensions(server):
    srv = lmtp_server(server, message_size_limit="2M")
    c = raw_lmtp(srv)
    code, lines = c.cmd("LHLO mta.test")
    assert code == 250
    assert lines[1:] == [b"PIPELINING", b"8BITMIME", b"ENHANCEDSTATUSCODES",
                         b"SIZE 2097152"]
    assert c.cmd("NOOP") == (250, [b"2.0.0 OK"])
    assert c.cmd("VRFY alice")[0] == 252
    assert c.cmd("EHLO x")[0] == 500
    assert c.cmd("QUIT")[0] == 221
    assert c.wait_closed()


def test_two_recipients_in_one_transaction(server, raw, env):
    srv = lmtp_server(server)
    c = smtplib_client(srv)
    assert c.mail(SENDER)[0] == 250
    assert c.rcpt("alice@example.org")[0] == 250
    assert c.rcpt("bob@example.org")[0] == 250
    code, text = c.data(BODY)          # the first recipient's reply
    assert code == 250, text
    assert text.startswith(b"2.0.0 <alice@example.org>")
    code, text = c.getreply()          # LMTP: one more per recipient
    assert code == 250, text
    assert text.startswith(b"2.0.0 <bob@example.org>")
    c.quit()
    assert fetch_all(srv, raw, env, "alice") == [expected(BODY, "alice@example.org")]
    assert fetch_all(srv, raw, env, "bob") == [expected(BODY, "bob@example.org")]
    # Stored with LF line ends, sizes in the name, nothing left in tmp/.
    (f,) = new_files(env, "alice")
    assert re.search(r",S=\d+,W=\d+", f.name), f.name
    assert b"\r\n" not in f.read_bytes()
    assert tmp_files(env, "alice") == []
    srv.wait_log(r"event=lmtp-delivered session=\S+ user=alice "
                 r"rcpt=alice@example.org from=sender@example.org size=\d+")


def test_unknown_user_refused_at_rcpt(server, raw, env):
    srv = lmtp_server(server)
    c = raw_lmtp(srv)
    codes = transaction(c, ["ghost@example.org", "alice@example.org",
                            "../../etc@example.org"])
    assert codes == [550, 250, 550]
    assert c.cmd("DATA")[0] == 354
    c.send(stuff(BODY))
    code, lines = c.reply()            # one reply: one accepted recipient
    assert code == 250 and lines[0].startswith(b"2.0.0 <alice@example.org>")
    assert c.cmd("QUIT")[0] == 221
    assert fetch_all(srv, raw, env, "alice") == [expected(BODY, "alice@example.org")]
    srv.wait_log(r"event=lmtp-rcpt-refused session=\S+ rcpt=ghost@example.org "
                 r"user=ghost reason=unknown-user")


def test_recipient_forms(server, raw, env):
    """+detail and a bare local part reach the user; Delivered-To keeps
    the address as given."""
    srv = lmtp_server(server)
    c = raw_lmtp(srv)
    assert transaction(c, ["carol+lists@example.org", "dave"]) == [250, 250]
    assert c.cmd("DATA")[0] == 354
    c.send(stuff(BODY))
    assert c.reply()[0] == 250
    assert c.reply()[0] == 250
    assert fetch_all(srv, raw, env, "carol") == [
        expected(BODY, "carol+lists@example.org")]
    assert fetch_all(srv, raw, env, "dave") == [expected(BODY, "dave")]


def test_dot_stuffing_and_bare_lf(server, raw, env):
    """Exact bytes: stuffed dots undone, a lone "." in the body, bare LF
    line ends tolerated (and ".\\n" ends the message)."""
    srv = lmtp_server(server)
    c = raw_lmtp(srv)
    assert transaction(c, ["alice@example.org"]) == [250]
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: dots\r\n\r\n..leading\r\n...three\r\n..\r\n"
           b"bare lf\nnext\n.\n")
    assert c.reply()[0] == 250
    body = b"Subject: dots\r\n\r\n.leading\r\n..three\r\n.\r\nbare lf\r\nnext\r\n"
    assert fetch_all(srv, raw, env, "alice") == [expected(body, "alice@example.org")]


def test_8bit_and_no_final_newline(server, raw, env):
    srv = lmtp_server(server)
    c = smtplib_client(srv)
    msg = b"Subject: 8bit\r\n\r\n\xe2\x82\xac \xff\xfe binary-ish\r\nno newline at the end"
    code, _ = c.mail(SENDER, ["BODY=8BITMIME"])
    assert code == 250
    assert c.rcpt("alice@example.org")[0] == 250
    assert c.data(msg)[0] == 250
    c.quit()
    # The MTA ends the last line before the dot: it arrives with a CRLF.
    assert fetch_all(srv, raw, env, "alice") == [
        expected(msg + b"\r\n", "alice@example.org")]


def test_pipelining(server, raw, env):
    """Every command and the message in one write; every reply in order."""
    srv = lmtp_server(server)
    c = raw_lmtp(srv)
    c.send(b"LHLO mta.test\r\nMAIL FROM:<" + SENDER.encode() + b">\r\n"
           b"RCPT TO:<alice@example.org>\r\nRCPT TO:<ghost@example.org>\r\n"
           b"RCPT TO:<bob@example.org>\r\nDATA\r\n" + stuff(BODY) +
           b"RSET\r\nNOOP\r\nQUIT\r\n")
    codes = [c.reply()[0] for _ in range(11)]
    assert codes == [250, 250, 250, 550, 250, 354, 250, 250, 250, 250, 221]
    assert c.wait_closed()
    assert fetch_all(srv, raw, env, "alice") == [expected(BODY, "alice@example.org")]
    assert fetch_all(srv, raw, env, "bob") == [expected(BODY, "bob@example.org")]


def test_half_close_after_the_message(server, raw, env):
    """An MTA that sends everything and shuts its side still gets every
    reply, the delivery included, before the close."""
    srv = lmtp_server(server)
    c = raw_lmtp(srv)
    c.send(b"LHLO mta.test\r\nMAIL FROM:<" + SENDER.encode() + b">\r\n"
           b"RCPT TO:<alice@example.org>\r\nDATA\r\n" + stuff(BODY))
    c.sock.shutdown(socket.SHUT_WR)
    assert [c.reply()[0] for _ in range(5)] == [250, 250, 250, 354, 250]
    assert c.wait_closed()
    assert fetch_all(srv, raw, env, "alice") == [expected(BODY, "alice@example.org")]


def test_large_message(server, raw, env):
    """Several pieces of 64 KiB, long lines included."""
    srv = lmtp_server(server)
    line = b"y" * 5000 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + b"".join(
        b"%06d " % i + line for i in range(300))
    c = smtplib_client(srv)
    c.mail(SENDER)
    c.rcpt("alice@example.org")
    assert c.data(body)[0] == 250
    c.quit()
    assert fetch_all(srv, raw, env, "alice") == [expected(body, "alice@example.org")]


def test_oversize_refused(server, raw, env):
    srv = lmtp_server(server, message_size_limit="2000")
    c = raw_lmtp(srv)
    c.cmd("LHLO mta.test")
    # Declared too big: refused at MAIL.
    code, lines = c.cmd(f"MAIL FROM:<{SENDER}> SIZE=5000")
    assert code == 552 and lines[0].startswith(b"5.3.4"), lines
    # Not declared: read to its end, then 552 for every recipient.
    assert c.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.org>")[0] == 250
    assert c.cmd("RCPT TO:<bob@example.org>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(stuff(b"Subject: big\r\n\r\n" + (b"z" * 98 + b"\r\n") * 50))
    for rcpt in (b"alice", b"bob"):
        code, lines = c.reply()
        assert code == 552 and lines[0].startswith(b"5.3.4 <" + rcpt), lines
    # The session goes on; nothing was stored.
    assert c.cmd("NOOP")[0] == 250
    assert c.cmd("QUIT")[0] == 221
    assert new_files(env, "alice") == [] and new_files(env, "bob") == []
    wait_for(lambda: tmp_files(env, "alice") == [] and tmp_files(env, "bob") == [],
             what="the aborted copies to leave tmp/")


def test_quota_messages(server, raw, env):
    add_user(env, "quser", "quota_rule=*:messages=1")
    srv = lmtp_server(server)
    c = raw_lmtp(srv)
    assert transaction(c, ["quser@example.org"]) == [250]
    assert c.cmd("DATA")[0] == 354
    c.send(stuff(BODY))
    assert c.reply()[0] == 250
    # The box holds its one message: the next one is refused for now.
    code, _ = c.cmd(f"MAIL FROM:<{SENDER}>")
    assert code == 250
    code, lines = c.cmd("RCPT TO:<quser@example.org>")
    assert code == 452 and lines[0].startswith(b"4.2.2"), lines
    code, lines = c.cmd("RCPT TO:<alice@example.org>")
    assert code == 250
    c.cmd("RSET")
    c.cmd("QUIT")
    assert len(new_files(env, "quser")) == 1


def test_quota_storage(server, raw, env):
    """Larger than the whole quota: permanent 552 5.2.2 (at RCPT when SIZE
    says so, else after DATA); not fitting what is left: 452 4.2.2."""
    add_user(env, "small", "quota_rule=*:storage=3k")
    srv = lmtp_server(server)
    c = raw_lmtp(srv)
    c.cmd("LHLO mta.test")
    assert c.cmd(f"MAIL FROM:<{SENDER}> SIZE=5000")[0] == 250
    code, lines = c.cmd("RCPT TO:<small@example.org>")
    assert code == 552 and lines[0].startswith(b"5.2.2"), lines
    c.cmd("RSET")

    def send(lines_of_100):
        assert c.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
        assert c.cmd("RCPT TO:<small@example.org>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(stuff(b"Subject: q\r\n\r\n" + (b"q" * 98 + b"\r\n") * lines_of_100))
        return c.reply()

    code, lines = send(50)                 # 5000 bytes: never fits
    assert code == 552 and lines[0].startswith(b"5.2.2"), lines
    assert new_files(env, "small") == []
    assert send(20)[0] == 250              # 2000 bytes: fits
    code, lines = send(15)                 # 1500 more: not now
    assert code == 452 and lines[0].startswith(b"4.2.2"), lines
    c.cmd("QUIT")
    assert len(new_files(env, "small")) == 1
    wait_for(lambda: tmp_files(env, "small") == [], what="tmp/ to empty")


def test_rset_drops_open_deliveries(server, env):
    srv = lmtp_server(server)
    c = raw_lmtp(srv)
    assert transaction(c, ["alice@example.org", "bob@example.org"]) == [250, 250]
    # The copies are open (tmp/ files) until RSET.
    assert tmp_files(env, "alice") != []
    assert c.cmd("RSET")[0] == 250
    wait_for(lambda: tmp_files(env, "alice") == [] and tmp_files(env, "bob") == [],
             what="RSET to remove the tmp/ files")
    # Same for a connection that just goes away.
    assert c.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.org>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: cut\r\n\r\nhalf a mess")
    c.close()
    wait_for(lambda: tmp_files(env, "alice") == [],
             what="a dropped connection's copy to go")
    assert new_files(env, "alice") == []
    srv.wait_log(r"event=lmtp-disconnect session=\S+ rip=127.0.0.1 delivered=0 "
                 r"reason=disconnected")


def test_open_copies_are_capped(server, raw, env):
    """A client (LMTP has no login) that opens recipient after recipient
    without sending DATA cannot use up the mail process's descriptors:
    past its share (a quarter of the limit, DELIVER_OPEN_FDS per copy),
    RCPT gets 451 4.3.0; POP3 logins still work; the slots come back when
    the transactions end."""
    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    srv = lmtp_server(server, workers="1", _preexec=low_fd_limit)
    cap = int(srv.wait_log(r"event=lmtp-setup copies_max=(\d+)").group(1))
    if cap > 60:
        pytest.skip(f"the descriptor limit was raised again (cap {cap})")
    assert cap == 512 // 4 // 3
    conns = [raw_lmtp(srv) for _ in range(3)]
    codes = []
    for c in conns:
        codes += transaction(c, ["alice@example.org"] * 60)
    assert codes.count(250) == cap, codes
    assert set(codes) == {250, 451}, codes
    assert "reason=busy" in srv.log()
    pop = raw(srv)
    pop.login("bob", env.passwords["bob"])
    assert pop.cmd("QUIT").startswith(b"+OK")
    for c in conns:
        assert c.cmd("RSET")[0] == 250
    wait_for(lambda: tmp_files(env, "alice") == [], what="RSET to close the copies")
    assert transaction(conns[0], ["alice@example.org"] * 3) == [250] * 3
    for c in conns:
        c.close()


def test_bad_commands_and_long_lines(server):
    srv = lmtp_server(server)
    c = raw_lmtp(srv)
    assert c.cmd("MAIL FROM:<a@b>")[0] == 503          # before LHLO
    c.cmd("LHLO mta.test")
    assert c.cmd("RCPT TO:<alice@example.org>")[0] == 503
    assert c.cmd("DATA")[0] == 503
    assert c.cmd("MAIL FROM:a@b")[0] == 501
    assert c.cmd("MAIL FROM:<a@b> FOO=BAR")[0] == 555
    c.send(b"NOOP " + b"x" * 5000 + b"\r\n")
    code, lines = c.reply()
    assert code == 500 and lines[0].startswith(b"5.5.2")
    assert c.cmd("NOOP")[0] == 250
    for _ in range(9):
        assert c.cmd("BOGUS")[0] == 500
    # The tenth error in a row (max_bad_commands) closes.
    assert c.cmd("BOGUS")[0] == 500
    code, lines = c.reply()
    assert code == 421 and lines[0].startswith(b"4.7.0"), lines
    assert c.wait_closed()


def test_unix_socket(server, raw, env):
    path = env.root / "run" / "lmtp"
    srv = lmtp_server(server, lmtp_listen=f"unix:{path}")
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o666
    c = smtplib.LMTP(str(path), timeout=SOCKET_TIMEOUT)
    assert c.ehlo("mta.test")[0] == 250
    assert c.sendmail(SENDER, ["alice@example.org"], BODY) == {}
    c.quit()
    assert fetch_all(srv, raw, env, "alice") == [expected(BODY, "alice@example.org")]
    # A second popboxd may not take a socket that is served...
    with pytest.raises(AssertionError, match="exited"):
        lmtp_server(server, lmtp_listen=f"unix:{path}")
    srv.stop()
    # ...but replaces one that nobody serves any more.
    assert os.path.exists(path)
    srv2 = lmtp_server(server, lmtp_listen=f"unix:{path}")
    c = smtplib.LMTP(str(path), timeout=SOCKET_TIMEOUT)
    c.ehlo("mta.test")
    assert c.sendmail(SENDER, ["bob@example.org"], BODY) == {}
    c.quit()
    assert fetch_all(srv2, raw, env, "bob") == [expected(BODY, "bob@example.org")]


def test_unix_socket_path_not_a_socket(server, env):
    path = env.root / "not-a-socket"
    path.write_text("precious")
    with pytest.raises(AssertionError, match="not a socket"):
        lmtp_server(server, lmtp_listen=f"unix:{path}")
    assert path.read_text() == "precious"


def test_sigkill_mail_process_during_data(server, raw, env):
    """The MTA sees the connection drop without a 250, and new/ holds no
    part of the message; the replacement mail process serves LMTP."""
    srv = lmtp_server(server, workers="1")
    c = raw_lmtp(srv)
    assert transaction(c, ["alice@example.org"]) == [250]
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: doomed\r\n\r\n" + b"part\r\n" * 1000)
    (pid,) = {int(p) for p in re.findall(r"event=spawned role=mail pid=(\d+)",
                                         srv.log())}
    start = len(srv.log())
    os.kill(pid, signal.SIGKILL)
    assert c.wait_closed()
    assert b"250" not in bytes(c.buf)
    assert new_files(env, "alice") == []
    srv.wait_log(r"event=spawned role=mail pid=\d+", start=start)
    srv.wait_log(r"event=started role=mail", start=start)
    c2 = smtplib_client(srv)
    assert c2.sendmail(SENDER, ["alice@example.org"], BODY) == {}
    c2.quit()
    assert fetch_all(srv, raw, env, "alice") == [expected(BODY, "alice@example.org")]


def test_login_processes_do_not_hold_the_lmtp_socket(server):
    """Only mail processes may take mail from the MTA."""
    if not IS_ROOT:
        pytest.skip("roles are told apart by uid only when run as root")
    srv = lmtp_server(server)
    port = lmtp_port(srv)
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                inode = fields[9]
    assert inode is not None
    holders = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
            links = {os.readlink(f"/proc/{name}/fd/{fd}") for fd in fds}
            with open(f"/proc/{name}/status") as f:
                uid = int(re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1))
        except OSError:
            continue
        if f"socket:[{inode}]" in links:
            holders[int(name)] = uid
    nobody = pwd.getpwnam("nobody").pw_uid
    # The master (root) and the mail processes (mail_user) only.
    assert set(holders.values()) <= {0, nobody}, holders
    assert nobody in holders.values()


# ------------------------------------------------ who may connect over TCP
#
# LMTP has no authentication, so a TCP peer is served only from loopback or
# trusted_networks.  Every test server listens on loopback, and loopback is
# always served: the refusal needs a second address of this host.  When the
# machine has one (say 192.0.2.2 on eth0), the listener is bound to it and
# the test connects from it, traffic that still never leaves the host.
# Without one, those tests skip; test-lmtp-access.c (unit) covers the
# decision itself, address by address.


def local_address(family):
    """A global-scope address of this host (not loopback), or None."""
    flag = "-4" if family == socket.AF_INET else "-6"
    try:
        out = subprocess.run(["ip", "-o", flag, "addr", "show", "scope",
                              "global"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if "tentative" in line or "dadfailed" in line:
            continue
        m = re.search(r"\binet6? ([0-9a-fA-F:.]+)/\d+", line)
        if not m:
            continue
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind((m.group(1), 0))
        except OSError:
            continue
        return m.group(1)
    return None


FAMILIES = [pytest.param(socket.AF_INET, "127.0.0.1", id="ipv4"),
            pytest.param(socket.AF_INET6, "::1", id="ipv6")]


def second_address(family):
    addr = local_address(family)
    if addr is None:
        pytest.skip("this host has no second address to connect from")
    return addr


def listen_spec(family, addr) -> str:
    return f"[{addr}]:0" if family == socket.AF_INET6 else f"{addr}:0"


def lmtp_port_at(srv, family, addr) -> int:
    shown = f"[{addr}]" if family == socket.AF_INET6 else addr
    m = srv.wait_log(rf"event=listening proto=lmtp addr={re.escape(shown)}:(\d+)")
    return int(m.group(1))


def greeting_then_close(family, addr, port, source) -> bytes:
    """Everything a connection from source gets before the server closes."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(SOCKET_TIMEOUT)
        sock.bind((source, 0))
        sock.connect((addr, port))
        buf = bytearray()
        assert recv_until_closed(sock, buf, 10.0), \
            f"the server kept the connection open after {bytes(buf)!r}"
        return bytes(buf)


@pytest.mark.parametrize("family,loopback", FAMILIES)
def test_untrusted_peer_refused(server, raw, env, family, loopback):
    """A peer outside loopback and trusted_networks gets one 421 line and
    the close; loopback, on the same listener, is served."""
    addr = second_address(family)
    srv = lmtp_server(server, lmtp_listen=listen_spec(family, addr),
                      hostname="lmtp.test")
    port = lmtp_port_at(srv, family, addr)
    # Only loopback will be served: said at start.
    srv.wait_log(r"event=config-warning text=\"lmtp_listen = .* trusted_networks")
    start = len(srv.log())
    got = greeting_then_close(family, addr, port, addr)
    assert got == b"421 4.7.0 lmtp.test LMTP is not offered to this address\r\n"
    srv.wait_log(rf"event=lmtp-refused rip={re.escape(addr)} "
                 r"reason=untrusted-address", start=start)
    assert "event=lmtp-connect" not in srv.log()[start:]
    # The same listener, from loopback: served as ever.
    c = RawLMTP((addr, port), family, source=loopback)
    assert transaction(c, ["alice@example.org"]) == [250]
    assert c.cmd("DATA")[0] == 354
    c.send(stuff(BODY))
    assert c.reply()[0] == 250
    c.cmd("QUIT")
    c.close()
    assert fetch_all(srv, raw, env, "alice") == [expected(BODY, "alice@example.org")]


@pytest.mark.parametrize("family,loopback", FAMILIES)
def test_trusted_network_served(server, raw, env, family, loopback):
    """The same peer is served once trusted_networks names it (and then
    there is nothing to warn about at start)."""
    addr = second_address(family)
    srv = lmtp_server(server, lmtp_listen=listen_spec(family, addr),
                      trusted_networks=f"127.0.0.0/8 ::1/128 {addr}")
    port = lmtp_port_at(srv, family, addr)
    c = RawLMTP((addr, port), family, source=addr)
    assert transaction(c, ["bob@example.org"]) == [250]
    assert c.cmd("DATA")[0] == 354
    c.send(stuff(BODY))
    assert c.reply()[0] == 250
    c.cmd("QUIT")
    c.close()
    srv.wait_log(rf"event=lmtp-connect session=\S+ rip={re.escape(addr)}")
    assert fetch_all(srv, raw, env, "bob") == [expected(BODY, "bob@example.org")]
    srv.wait_log(r"event=started role=mail")
    assert "event=config-warning" not in srv.log()
    assert "event=lmtp-refused" not in srv.log()


def test_loopback_served_without_trusted_networks(server, env):
    """trusted_networks = none: loopback still delivers over TCP."""
    srv = lmtp_server(server, trusted_networks="none")
    c = smtplib_client(srv)
    assert c.sendmail(SENDER, ["alice@example.org"], BODY) == {}
    c.quit()
    assert len(new_files(env, "alice")) == 1
    assert "event=lmtp-refused" not in srv.log()
    assert "event=config-warning" not in srv.log()


@pytest.mark.parametrize("settings,warns", [
    ({"lmtp_listen": "192.0.2.1:24"}, True),
    ({"lmtp_listen": "*:24", "trusted_networks": "none"}, True),
    ({"lmtp_listen": "[2001:db8::1]:24"}, True),
    ({"lmtp_listen": "192.0.2.1:24", "trusted_networks": "192.0.2.0/24"}, False),
    ({"lmtp_listen": "127.0.0.1:24"}, False),
    ({"lmtp_listen": "unix:/run/popboxd/lmtp"}, False),
])
def test_check_config_warns(env, settings, warns):
    """popboxd -t and popbox check-config show the warning, as a comment
    (the output still loads); the config is not refused."""
    conf = env.root / "check.conf"
    conf.write_text(env.config_text(**settings))
    for cmd in ([str(POPBOXD), "-t", "-c", str(conf)],
                [str(POPBOX), "check-config", "-c", str(conf)]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        lines = [l for l in r.stdout.splitlines() if l.startswith("# warning:")]
        if warns:
            assert len(lines) == 1, r.stdout
            assert settings["lmtp_listen"] in lines[0]
            assert "trusted_networks" in lines[0]
        else:
            assert lines == [], r.stdout
