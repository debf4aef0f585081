"""A private, throwaway Dovecot POP3 server for the integration tests (the
popbox-fetch tests use it as a real peer beside popboxd).

Modelled on bench/dovecot.sh: its own base_dir, state_dir and log under a
temp dir, 127.0.0.1 only, a plain POP3 port and an implicit-TLS port chosen
free at run time, users in a passwd-file with {PLAIN} passwords, mail in
Maildirs owned by nobody:nogroup (the mail processes run as nobody).  It
never touches /etc/dovecot, /run/dovecot or a system Dovecot.  Started with
`dovecot -F` and stopped by its PID (SIGTERM, then SIGKILL for the master
and any child of it left behind, by PID).

dovecot_or_skip() installs dovecot-pop3d with apt-get when it is missing
and we are root (scripts/install-deps.sh lists it), and skips the test
with the reason when that is not possible.
"""
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

DOVECOT_POP3 = Path("/usr/lib/dovecot/pop3")


def _installed() -> bool:
    return shutil.which("dovecot") is not None and DOVECOT_POP3.exists()


def dovecot_or_skip():
    """The dovecot binary, installing dovecot-pop3d if we can; else skip."""
    if os.geteuid() != 0:
        pytest.skip("a private Dovecot needs root (its mail processes run as nobody)")
    if _installed():
        return shutil.which("dovecot")
    try:
        r = subprocess.run(["apt-get", "install", "-y", "-q",
                            "--no-install-recommends", "dovecot-pop3d"],
                           capture_output=True, timeout=600,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"Dovecot cannot be installed: {e}")
    if r.returncode != 0 or not _installed():
        pytest.skip(f"Dovecot cannot be installed (apt-get exit {r.returncode}): "
                    f"{r.stderr.decode(errors='replace')[-300:]}")
    # The package may have started its system service; we do not use it.
    subprocess.run(["systemctl", "disable", "--now", "dovecot.service",
                    "dovecot.socket"], capture_output=True, timeout=60)
    return shutil.which("dovecot")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _children(pid) -> list:
    """Every descendant of pid (by /proc), deepest last."""
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for k in kids.get(p, []):
            out.append(k)
            todo.append(k)
    return out


class Dovecot:
    """One running Dovecot: .port (plain), .tls_port, .maildir(user),
    .deliver(user, data), .messages(user), .stop()."""

    def __init__(self, users: dict, cert: Path, key: Path):
        self.binary = dovecot_or_skip()
        # Its own temp dir, searchable by Dovecot's users (pytest's tmp_path
        # sits under a 0700 directory that they cannot enter); removed by
        # stop().
        self.root = Path(tempfile.mkdtemp(prefix="popbox-dovecot-"))
        os.chmod(self.root, 0o755)
        self.users = dict(users)
        self.mail_root = self.root / "mail"
        self.mail_root.mkdir(exist_ok=True)
        self.ids = (pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
        os.chown(self.mail_root, *self.ids)
        self.passwd = self.root / "passwd"
        self.passwd.write_text("".join(f"{u}:{{PLAIN}}{pw}::::::\n"
                                       for u, pw in users.items()))
        # Read by Dovecot's auth process, which runs as the user dovecot.
        os.chmod(self.passwd, 0o600)
        try:
            os.chown(self.passwd, pwd.getpwnam("dovecot").pw_uid, -1)
        except KeyError:
            os.chmod(self.passwd, 0o644)
        for u in users:
            self.maildir(u)
        self.port, self.tls_port = free_port(), free_port()
        self.conf = self.root / "dovecot.conf"
        self.log = self.root / "dovecot.log"
        self._write_conf(cert, key)
        self._seq = 0
        self.proc = None
        self._start()

    def _write_conf(self, cert, key):
        (self.root / "state").mkdir(exist_ok=True)
        self.conf.write_text(f"""# throwaway Dovecot for the popbox integration tests
instance_name = popbox-test-{os.getpid()}-{self.port}
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.log}
protocols = pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login scram-sha-256
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.passwd}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={self.mail_root}/%u
}}
mail_location = maildir:{self.mail_root}/%u/Maildir
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
}}
""")

    def _start(self):
        self._err = open(self.root / "dovecot.stderr", "ab")
        self.proc = subprocess.Popen([self.binary, "-F", "-c", str(self.conf)],
                                     stdin=subprocess.DEVNULL,
                                     stdout=self._err, stderr=self._err)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.diagnostics()
                self._err.close()
                shutil.rmtree(self.root, ignore_errors=True)
                raise AssertionError(f"dovecot exited {self.proc.returncode} at start:\n{text}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.tls_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        text = self.diagnostics()
        self.stop()
        raise AssertionError(f"dovecot did not listen within 20 s:\n{text}")

    def diagnostics(self) -> str:
        out = []
        for p in (self.root / "dovecot.stderr", self.log):
            try:
                out.append(f"--- {p.name}\n" + p.read_text(errors="replace"))
            except OSError:
                pass
        return "\n".join(out)

    def stop(self, remove=True):
        """Stops the instance; removes its directory unless remove is
        false."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        kids = _children(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for k in kids:
            try:
                with open(f"/proc/{k}/cmdline", "rb") as f:
                    if b"dovecot" not in f.read():
                        continue
                os.kill(k, signal.SIGKILL)
            except OSError:
                pass
        self._err.close()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    # ---- mail

    def maildir(self, user) -> Path:
        md = self.mail_root / user / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (md / sub).mkdir(parents=True, exist_ok=True)
        for p in (self.mail_root / user, md, md / "new", md / "cur", md / "tmp"):
            os.chown(p, *self.ids)
        return md

    def deliver(self, user, data: bytes):
        md = self.maildir(user)
        self._seq += 1
        name = f"{int(time.time())}.M{self._seq}P{os.getpid()}.testhost"
        tmp = md / "tmp" / name
        tmp.write_bytes(data)
        os.chown(tmp, *self.ids)
        os.rename(tmp, md / "new" / name)

    def messages(self, user) -> list:
        """The contents of the user's messages (new/ and cur/), sorted."""
        md = self.mail_root / user / "Maildir"
        return sorted(p.read_bytes() for sub in ("new", "cur")
                      for p in (md / sub).iterdir() if p.is_file())
