"""Mail in, end to end, with a real MTA (issue 5).

A private Postfix instance (its own config, queue and data directories under
a temp dir, SMTP on a loopback port chosen free at run time) hands mail to
popbox in the two ways a site would set up:

  A. over LMTP: relay_domains + transport_maps -> lmtp:unix:<popboxd's socket>
  B. local(8) with mailbox_command = popbox-deliver -n, for a system user that
     is popboxd's mail_user (the command runs with the recipient's uid and
     asks the auth process for the user's record over userdb_socket, since
     only the auth process may read the passwd-file).

swaks sends by SMTP; Python's poplib and mpop fetch.  What arrives must be
the bytes that were sent, preceded only by header lines that the MTA and
the delivery add (Received, Return-Path, Delivered-To).

Needs root (Postfix's master runs as root; popboxd drops privileges) and
the postfix and swaks packages (scripts/install-deps.sh).
"""
import os
import poplib
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BUILD, IS_ROOT, MPOP, USERS, wait_for

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
SWAKS = shutil.which("swaks")
DELIVER = BUILD / "popbox-deliver"
E2E_USER = "popbox-e2e"     # system user for setup B (created if missing)
E2E_PASSWORD = "e2e-Secret-9"

pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="Postfix needs root"),
    pytest.mark.skipif(not os.path.exists(POSTFIX) or SWAKS is None,
                       reason="postfix and swaks are not installed"),
]

# What is sent: dot lines (SMTP and LMTP stuff and unstuff them), 8-bit
# bytes, a long line, a blank line inside the body, a lone dot.
BODY = (b"From: Sender <sender@example.org>\r\n"
        b"To: someone@example.test\r\n"
        b"Subject: end to end\r\n"
        b"Message-ID: <e2e-1@example.org>\r\n"
        b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"first line\r\n"
        b".starts with a dot\r\n"
        b"..two dots\r\n"
        b".\r\n"
        b"\r\n"
        b"8-bit: \xc3\xa4\xc3\xb6\xc3\xbc \xe2\x82\xac\r\n"
        + b"x" * 900 + b"\r\n"
        b"last line\r\n")

ADDED_HEADERS = (b"received", b"return-path", b"delivered-to", b"x-original-to")
DELIVERY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postfix:
    """A private Postfix instance; stopped (only its own master) at close()."""

    MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n -  0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n -  - trivial-rewrite
bounce    unix - - n -  0 bounce
defer     unix - - n -  0 bounce
trace     unix - - n -  0 bounce
verify    unix - - n -  1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n -  - proxymap
smtp      unix - - n -  - smtp
relay     unix - - n -  - smtp
showq     unix n - n -  - showq
error     unix - - n -  - error
retry     unix - - n -  - error
discard   unix - - n -  - discard
local     unix - n n -  - local
lmtp      unix - - n -  - lmtp
anvil     unix - - n -  1 anvil
scache    unix - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

    def __init__(self, settings: dict):
        self.root = Path(tempfile.mkdtemp(prefix="popbox-postfix-"))
        os.chmod(self.root, 0o755)
        self.conf = self.root / "conf"
        self.queue = self.root / "queue"
        data = self.root / "data"
        for d in (self.conf, self.queue, data):
            d.mkdir()
        pf = pwd.getpwnam("postfix")
        os.chown(data, pf.pw_uid, pf.pw_gid)
        self.maillog = self.root / "maillog"
        self.port = free_port()
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "mx.example.test",
            "mydomain": "example.test",
            "myorigin": "example.test",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "smtputf8_enable": "no",
            "biff": "no",
            "alias_maps": "",
            "alias_database": "",
            "disable_dns_lookups": "yes",
            # Bounces to the example senders go nowhere, fast.
            "default_transport": "error:outbound mail is off in this test",
            "delay_warning_time": "0",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
        }
        main.update(settings)
        (self.conf / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in main.items()))
        (self.conf / "master.cf").write_text(self.MASTER_CF.format(port=self.port))
        self.master_pid = None
        r = subprocess.run([POSTFIX, "-c", str(self.conf), "start"],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, (
            f"postfix start failed: {r.returncode} {r.stderr!r}\n{self.log()}")
        self.master_pid = int((self.queue / "pid" / "master.pid")
                              .read_text().split()[0])
        wait_for(self._smtp_up, 20, "Postfix's smtpd")

    def _smtp_up(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                return True
        except OSError:
            return False

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send(self, to, body=BODY, sender="sender@example.org"):
        # --no-data-fixup: swaks sends DATA as given (it would otherwise
        # add a line of its own), so the dot-stuffing and the final dot
        # are ours (RFC 5321 section 4.5.2).
        data = re.sub(rb"(?m)^\.", b"..", body) + b".\r\n"
        r = subprocess.run([SWAKS, "--server", f"127.0.0.1:{self.port}",
                            "--from", sender, "--to", to, "--data", "-",
                            "--no-data-fixup", "--timeout", "20"],
                           input=data, capture_output=True, timeout=60)
        assert r.returncode == 0, f"swaks failed: {r.stdout!r} {r.stderr!r}"
        m = re.search(rb"250 2\.0\.0 Ok: queued as ([0-9A-F]+)", r.stdout)
        assert m, f"no queue id in swaks output: {r.stdout!r}"
        return m.group(1).decode()

    def wait_status(self, queue_id, timeout=DELIVERY_TIMEOUT):
        pat = re.compile(rf"{queue_id}: to=<[^>]*>.*status=(\w+) \((.*)\)")
        m = wait_for(lambda: pat.search(self.log()), timeout,
                     f"a delivery status for {queue_id}")
        return m.group(1), m.group(2)

    def close(self):
        subprocess.run([POSTFIX, "-c", str(self.conf), "stop"],
                       capture_output=True, timeout=60)
        if self.master_pid is not None:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    os.kill(self.master_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(self.master_pid, 9)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postfix_factory():
    made = []

    def make(settings):
        p = Postfix(settings)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def fetch_all(port, user, password):
    """Every message of the maildrop over POP3 (poplib), as bytes with CRLF."""
    pop = poplib.POP3("127.0.0.1", port, timeout=20)
    try:
        pop.user(user)
        pop.pass_(password)
        count, _ = pop.stat()
        out = []
        for i in range(1, count + 1):
            size = int(pop.list(i).split()[2])
            _, lines, octets = pop.retr(i)
            data = b"".join(line + b"\r\n" for line in lines)
            assert len(data) == size, (
                f"message {i}: {len(data)} bytes, LIST said {size}")
            out.append(data)
        return out
    finally:
        pop.quit()


def split_added(message: bytes):
    """(added header names, rest): strips the leading header lines that
    the MTA and the delivery add, with their continuation lines."""
    names, rest = [], message
    while True:
        m = re.match(rb"([A-Za-z-]+):[^\r\n]*\r\n((?:[ \t][^\r\n]*\r\n)*)", rest)
        if not m or m.group(1).lower() not in ADDED_HEADERS:
            return names, rest
        names.append(m.group(1).lower())
        rest = rest[m.end():]


def assert_arrived_intact(message: bytes, rcpt: bytes):
    names, rest = split_added(message)
    assert rest == BODY, (
        f"the message is not the bytes sent plus added headers:\n{message!r}")
    assert b"return-path" in names and b"delivered-to" in names, names
    assert b"received" in names, names
    assert re.search(rb"(?im)^Delivered-To: " + re.escape(rcpt) + rb"\r$",
                     message), message[:400]
    assert re.search(rb"(?im)^Return-Path: <sender@example\.org>\r$", message)


# ---------------------------------------------------------------- A: LMTP

def popboxd_behind_postfix_lmtp(env, server, postfix_factory):
    """popboxd with an LMTP socket, and a Postfix that relays example.test
    to it.  Returns (popboxd, Postfix)."""
    sock = env.root / "lmtp.sock"
    s = server(lmtp_listen=f"unix:{sock}")
    wait_for(sock.exists, 10, "popboxd's LMTP socket")
    pf = postfix_factory({
        "mydestination": "",
        "relay_domains": "example.test",
        "relay_recipient_maps": "",
        "transport_maps": f"inline:{{ example.test=lmtp:unix:{sock} }}",
    })
    return s, pf


def test_smtp_to_postfix_to_lmtp_to_pop3(env, server, postfix_factory):
    s, pf = popboxd_behind_postfix_lmtp(env, server, postfix_factory)

    qid = pf.send("alice@example.test, bob@example.test")
    status, text = pf.wait_status(qid)
    assert status == "sent", f"{status}: {text}\n{pf.log()}"
    # Both recipients in one LMTP transaction: a status line each.
    wait_for(lambda: pf.log().count(f"{qid}: to=<") >= 2, DELIVERY_TIMEOUT,
             "both recipients' status")
    assert pf.log().count("status=sent") >= 2, pf.log()

    for user in ("alice", "bob"):
        msgs = fetch_all(s.port, user, USERS[user][1])
        assert len(msgs) == 1, f"{user} has {len(msgs)} messages"
        assert_arrived_intact(msgs[0], f"{user}@example.test".encode())

    # An unknown user is refused at RCPT: Postfix bounces, nothing stored.
    qid = pf.send("nosuchuser@example.test")
    status, text = pf.wait_status(qid)
    assert status == "bounced" and "5.1.1" in text, f"{status}: {text}"


@pytest.mark.skipif(MPOP is None, reason="mpop is not installed")
def test_lmtp_delivery_fetched_by_mpop(env, server, postfix_factory):
    s, pf = popboxd_behind_postfix_lmtp(env, server, postfix_factory)
    status, text = pf.wait_status(pf.send("carol@example.test"))
    assert status == "sent", f"{status}: {text}"

    home = env.root / "mpop-home"
    dest = home / "fetched"
    for sub in ("new", "cur", "tmp"):
        (dest / sub).mkdir(parents=True)
    pwfile = home / "pw"
    pwfile.write_text(USERS["carol"][1] + "\n")
    os.chmod(pwfile, 0o600)
    r = subprocess.run([MPOP, "--host=127.0.0.1", f"--port={s.port}",
                        "--tls=off", "--auth=user", "--user=carol",
                        f"--passwordeval=cat {pwfile}",
                        f"--uidls-file={home / 'uidls'}",
                        f"--delivery=maildir,{dest}"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, f"mpop: {r.stdout!r} {r.stderr!r}"
    files = [p.read_bytes() for sub in ("new", "cur") for p in (dest / sub).iterdir()]
    assert len(files) == 1, f"mpop stored {len(files)} messages"
    # mpop stores LF line ends and adds its own Received line on top.
    got = files[0].replace(b"\n", b"\r\n")
    _, rest = split_added(got)
    assert rest == BODY, got
    # mpop deleted it on the server (the default): the maildrop is empty.
    assert fetch_all(s.port, "carol", USERS["carol"][1]) == []


# ------------------------------------------------ B: mailbox_command

def ensure_system_user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell",
                        "/usr/sbin/nologin", name], check=True, timeout=30)
        return pwd.getpwnam(name)


def chown_tree(path: Path, uid, gid):
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            os.chown(os.path.join(dirpath, n), uid, gid, follow_symlinks=False)


@pytest.mark.skipif(not DELIVER.exists(), reason="popbox-deliver is not built")
def test_smtp_to_postfix_to_mailbox_command_to_pop3(env, server, postfix_factory):
    pw = ensure_system_user(E2E_USER)
    r = subprocess.run([str(BUILD / "popbox"), "passwd", "-s", "PLAIN"],
                       input=(E2E_PASSWORD + "\n").encode(), capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    env.write_passwd([f"{E2E_USER}:{r.stdout.decode().strip()}::::::"])
    md = env.maildir(E2E_USER)
    chown_tree(env.mail_root / E2E_USER, pw.pw_uid, pw.pw_gid)
    userdb = env.root / "run" / "userdb"
    s = server(mail_user=E2E_USER, userdb_socket=str(userdb))
    wait_for(userdb.exists, 10, "popboxd's userdb socket")

    conf = s.conf_path
    os.chmod(conf, 0o644)
    pf = postfix_factory({
        "mydestination": "example.test",
        "local_recipient_maps": "",
        # local(8) itself adds Return-Path, X-Original-To and Delivered-To
        # (and a From_ line, which popbox-deliver drops): -n adds none.
        "mailbox_command": (f'{DELIVER} -c {conf} -n -f "$SENDER" '
                            f'-a "$RECIPIENT" "$USER"'),
    })
    qid = pf.send(f"{E2E_USER}@example.test")
    status, text = pf.wait_status(qid)
    assert status == "sent", f"{status}: {text}\n{pf.log()}"

    msgs = fetch_all(s.port, E2E_USER, E2E_PASSWORD)
    assert len(msgs) == 1, f"{len(msgs)} messages"
    assert_arrived_intact(msgs[0], f"{E2E_USER}@example.test".encode())
    # The file in new/ or cur/ carries ,S= and ,W= (cheap listing).
    names = [p.name for sub in ("new", "cur") for p in (md / sub).iterdir()]
    assert len(names) == 1 and ",S=" in names[0] and ",W=" in names[0], names
