"""Integration fixtures: a temp tree with users and Maildirs, the real popboxd
on loopback, and a raw POP3 client for byte-exact checks.

Binaries come from $POPBOX_BUILD (default build/asan, made by
`make test-build`).  Every server a test starts is stopped at teardown and
its stderr is checked for AddressSanitizer/UBSan reports.
"""
import os
import pwd
import grp
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

CURL = shutil.which("curl")
MPOP = shutil.which("mpop")

needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
needs_mpop = pytest.mark.skipif(MPOP is None, reason="mpop is not installed (apt-get install mpop)")

# Sample messages for the client tests: LF and CRLF line ends, a dotted
# line, 8-bit bytes and a message without a final newline.
MESSAGES = [
    b"From: a@example.org\nSubject: one\n\nbody one\n",
    b"From: b@example.org\r\nSubject: two\r\n\r\n.dotted line\r\n..double\r\nend\r\n",
    b"Subject: three\n\n\xc3\xa4 8-bit and no final newline",
]

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("POPBOX_BUILD", "build/asan"))
if not BUILD.is_absolute():
    BUILD = REPO / BUILD
POPBOXD = BUILD / "popboxd"
POPBOX = BUILD / "popbox"

IS_ROOT = os.geteuid() == 0

# name -> (scheme, password).  bob's password has spaces: RFC 1939 allows
# them and PASS takes the rest of the line.
USERS = {
    "alice": ("SHA512-CRYPT", "alice-Secret-1"),
    "bob": ("YESCRYPT", "bob secret 2"),
    "carol": ("BLF-CRYPT", "carol-Blowfish-3"),
    "dave": ("PLAIN", "dave-apop-4"),
    "sam": ("SCRAM-SHA-256", "sam-Scram-5"),
}

SANITIZER_PATTERNS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")

SERVER_START_TIMEOUT = 15.0
SOCKET_TIMEOUT = 10.0


def _ids():
    if not IS_ROOT:
        return None
    return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid


def own(path):
    """Gives path to nobody:nogroup when we run as root (popboxd drops to it)."""
    ids = _ids()
    if ids is not None:
        os.chown(path, *ids)


def own_auth(path):
    """Gives the passwd-file to popbox-auth when we run as root: the auth
    process, and no other, reads it."""
    if IS_ROOT:
        os.chown(path, pwd.getpwnam("popbox-auth").pw_uid,
                 grp.getgrnam("popbox-auth").gr_gid)


def own_tree(path):
    ids = _ids()
    if ids is None:
        return
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, *ids)
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), *ids)


# ---------------------------------------------------------------- wire form


_BARE_LF = re.compile(rb"(?<!\r)\n")


def wire_form(data: bytes) -> bytes:
    """The RFC 1939 wire form (before dot-stuffing) of stored bytes."""
    if not data:
        return b""
    out = _BARE_LF.sub(b"\r\n", data)
    if not data.endswith(b"\n"):
        out += b"\r\n"
    return out


def top_form(data: bytes, n: int) -> bytes:
    """What TOP msg n must return (un-stuffed): the headers, the empty line,
    then n body lines."""
    w = wire_form(data)
    if not w:
        return b""
    lines = w.split(b"\r\n")[:-1]
    out = []
    in_body = False
    left = n
    for line in lines:
        if in_body:
            if left == 0:
                break
            left -= 1
        out.append(line)
        if not in_body and line == b"":
            in_body = True
    return b"".join(line + b"\r\n" for line in out)


def unstuff(body: bytes) -> bytes:
    """Un-stuffs a multi-line body (lines with CRLF, terminator removed).
    Asserts the server stuffed correctly: a line starting with '.' on the
    wire must start with '..'."""
    if not body:
        return b""
    assert body.endswith(b"\r\n"), "multi-line body does not end in CRLF"
    lines = body.split(b"\r\n")[:-1]
    out = []
    for i, line in enumerate(lines):
        if line.startswith(b"."):
            assert line.startswith(b".."), (
                f"line {i + 1} starts with a single '.' on the wire "
                f"(not byte-stuffed): {line[:60]!r}")
            line = line[1:]
        out.append(line)
    return b"".join(line + b"\r\n" for line in out)


# ---------------------------------------------------------------- the tree


class Env:
    """A temp root with a passwd-file and one Maildir per user."""

    def __init__(self, root: Path, hashes: dict):
        self.root = root
        self.hashes = dict(hashes)
        self.passwords = {u: pw for u, (_, pw) in USERS.items()}
        self.passwd = root / "passwd"
        self.mail_root = root / "mail"
        self.mail_root.mkdir()
        own(self.mail_root)
        self.extra_passwd_lines = []
        self.write_passwd()
        for user in USERS:
            self.maildir(user)
        self._seq = 0

    def write_passwd(self, extra_lines=()):
        lines = [f"{u}:{h}::::::" for u, h in self.hashes.items()]
        lines += list(self.extra_passwd_lines) + list(extra_lines)
        tmp = self.passwd.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.chmod(tmp, 0o600)
        own_auth(tmp)
        os.rename(tmp, self.passwd)

    def maildir(self, user) -> Path:
        md = self.mail_root / user / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (md / sub).mkdir(parents=True, exist_ok=True)
        own(self.mail_root / user)
        own(md)
        for sub in ("new", "cur", "tmp"):
            own(md / sub)
        return md

    def next_name(self) -> str:
        self._seq += 1
        return f"{1700000000 + self._seq}.M{self._seq}P{os.getpid()}.testhost"

    def deliver(self, user, data: bytes, name=None, subdir="new") -> Path:
        """Writes data to tmp/ and renames it into new/ or cur/."""
        md = self.maildir(user)
        name = name or self.next_name()
        tmp = md / "tmp" / (name.replace(":", "_") + ".part")
        with open(tmp, "wb") as f:
            f.write(data)
        own(tmp)
        dest = md / subdir / name
        os.rename(tmp, dest)
        return dest

    def files(self, user) -> dict:
        """{'new/name' or 'cur/name': bytes} of the user's messages on disk."""
        md = self.mail_root / user / "Maildir"
        out = {}
        for sub in ("new", "cur"):
            d = md / sub
            if not d.is_dir():
                continue
            for p in sorted(d.iterdir()):
                if p.is_file() and not p.is_symlink():
                    out[f"{sub}/{p.name}"] = p.read_bytes()
        return out

    def clear(self, user):
        md = self.mail_root / user / "Maildir"
        for sub in ("new", "cur", "tmp"):
            d = md / sub
            for p in d.iterdir():
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        for extra in ("popbox.cache", "popbox.cache.tmp"):
            try:
                (md / extra).unlink()
            except FileNotFoundError:
                pass

    def config_text(self, **overrides) -> str:
        settings = {
            "listen": "127.0.0.1:0",
            "passdb_file": str(self.passwd),
            "mail_location": str(self.mail_root) + "/%u/Maildir",
            "auth_failure_delay_ms": "300",
            # Every test client is 127.0.0.1: the per-address penalty
            # would slow unrelated tests; the tests of it turn it on.
            "auth_penalty_max_ms": "0",
            "login_timeout": "30",
            "workers": "2",
            # Each test's own, not /run/popboxd/userdb shared by every
            # popboxd on the machine.
            "userdb_socket": str(self.root / "userdb"),
        }
        if IS_ROOT:
            settings["mail_user"] = "nobody"
        for k, v in overrides.items():
            if v is None:
                settings.pop(k, None)
            else:
                settings[k] = str(v)
        return "".join(f"{k} = {v}\n" for k, v in settings.items())


def _make_hashes():
    hashes = {}
    for user, (scheme, pw) in USERS.items():
        r = subprocess.run([str(POPBOX), "passwd", "-s", scheme],
                           input=(pw + "\n").encode(), capture_output=True,
                           timeout=30)
        assert r.returncode == 0, (
            f"popbox passwd -s {scheme} failed: {r.returncode} {r.stderr!r}")
        h = r.stdout.decode().strip()
        assert h.startswith("{" + scheme + "}"), f"unexpected hash {h!r}"
        hashes[user] = h
    return hashes


@pytest.fixture(scope="session")
def binaries():
    for b in (POPBOXD, POPBOX):
        if not (b.is_file() and os.access(b, os.X_OK)):
            pytest.fail(f"{b} is not an executable file: run `make test-build` "
                        f"or set POPBOX_BUILD", pytrace=False)
    return POPBOXD, POPBOX


@pytest.fixture(scope="session")
def hashes(binaries):
    return _make_hashes()


def _new_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="popbox-it-"))
    os.chmod(root, 0o755)
    return root


@pytest.fixture
def env(hashes):
    root = _new_root()
    yield Env(root, hashes)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def module_env(hashes):
    root = _new_root()
    yield Env(root, hashes)
    shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- servers


class Server:
    """One running popboxd.  Unpacks as (host, port, proc, stderr_path)."""

    def __init__(self, env: Env, conf_text: str, name: str, extra_env=None,
                 extra_args=(), preexec=None):
        self.env = env
        self.host = "127.0.0.1"
        self.conf_path = env.root / f"{name}.conf"
        self.conf_path.write_text(conf_text)
        self.stderr_path = env.root / f"{name}.stderr"
        self._err = open(self.stderr_path, "wb")
        proc_env = dict(os.environ)
        proc_env.update(extra_env or {})
        self.proc = subprocess.Popen([str(POPBOXD), *extra_args,
                                      "-c", str(self.conf_path)],
                                     env=proc_env,
                                     preexec_fn=preexec,
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self._err)
        self.port = self._wait_port()
        self.stopped = False

    def __iter__(self):
        return iter((self.host, self.port, self.proc, self.stderr_path))

    @property
    def pid(self):
        return self.proc.pid

    def log(self) -> str:
        return self.stderr_path.read_bytes().decode("utf-8", "replace")

    def log_bytes(self) -> bytes:
        return self.stderr_path.read_bytes()

    def _wait_port(self) -> int:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        port = None
        while time.monotonic() < deadline:
            text = self.log()
            m = re.search(r"event=listening addr=127\.0\.0\.1:(\d+)", text)
            if m:
                port = int(m.group(1))
            if port and "event=started" in text:
                return port
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"popboxd exited with {self.proc.returncode} at start:\n{text}")
            time.sleep(0.02)
        self.proc.kill()
        raise AssertionError(f"popboxd did not start within "
                             f"{SERVER_START_TIMEOUT}s:\n{self.log()}")

    def wait_log(self, pattern, timeout=5.0, start=0):
        """Waits until the log (from offset start) matches regex pattern."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()[start:]
            m = re.search(pattern, text)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"log never matched {pattern!r} within {timeout}s:\n{text}")
            time.sleep(0.02)

    def stop(self, sig=signal.SIGTERM):
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._err.close()

    def kill(self):
        self.stop(signal.SIGKILL)

    def sanitizer_report(self):
        text = self.log()
        for pat in SANITIZER_PATTERNS:
            if pat in text:
                return text
        return None

    def check_sanitizers(self):
        report = self.sanitizer_report()
        assert report is None, f"sanitizer report in popboxd stderr:\n{report}"


class ServerFactory:
    """Starts popboxd with config overrides; stops and checks them all."""

    def __init__(self, env: Env):
        self.env = env
        self.servers = []

    def __call__(self, _env=None, _args=(), _preexec=None, **overrides) -> Server:
        """_env: extra environment variables for the server process;
        _args: extra command-line arguments (e.g. ["-d"]); _preexec: run in
        the child before exec (e.g. to lower a resource limit)."""
        conf = self.env.config_text(**overrides)
        s = Server(self.env, conf, f"popboxd-{len(self.servers)}", _env, _args,
                   _preexec)
        self.servers.append(s)
        return s

    def close(self):
        reports = []
        for s in self.servers:
            s.stop()
            rep = s.sanitizer_report()
            if rep is not None:
                reports.append(f"--- {s.stderr_path}\n{rep}")
        assert not reports, "sanitizer reports:\n" + "\n".join(reports)


@pytest.fixture
def server(env):
    """Factory: server(**config_overrides) -> Server (stopped at teardown)."""
    f = ServerFactory(env)
    yield f
    f.close()


@pytest.fixture(scope="module")
def module_server(module_env):
    f = ServerFactory(module_env)
    yield f
    f.close()


# ---------------------------------------------------------------- raw client


class RawPOP3:
    """POP3 over a plain socket, keeping every byte."""

    def __init__(self, host, port, timeout=SOCKET_TIMEOUT, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect(), so the window is small from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = bytearray()
        self.greeting = self.readline()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def readline(self, limit=4096) -> bytes:
        """One status line, without its CRLF (which must be there)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                assert line.endswith(b"\r\n"), f"line without CRLF: {line!r}"
                return line[:-2]
            assert len(self.buf) < limit, f"no line end within {limit} bytes"
            self._fill()

    def read_body(self) -> bytes:
        """The raw (stuffed) body of a multi-line response, up to but not
        including the terminating '.CRLF'."""
        start = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                del self.buf[:3]
                return b""
            i = self.buf.find(b"\r\n.\r\n", start)
            if i >= 0:
                body = bytes(self.buf[:i + 2])
                del self.buf[:i + 5]
                return body
            start = max(0, len(self.buf) - 4)
            self._fill()

    def cmd(self, line) -> bytes:
        """Sends one command line, returns the status line."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.readline()

    def multi(self, line):
        """Sends a multi-line command: (status, un-stuffed body or None)."""
        status = self.cmd(line)
        if not status.startswith(b"+OK"):
            return status, None
        return status, unstuff(self.read_body())

    def login(self, user, password):
        r = self.cmd(f"USER {user}")
        assert r.startswith(b"+OK"), f"USER {user}: {r!r}"
        r = self.cmd(f"PASS {password}")
        assert r.startswith(b"+OK"), f"PASS for {user}: {r!r}"
        return r

    def wait_closed(self, timeout=5.0) -> bool:
        """True if the server closes the connection within timeout (any
        bytes that arrive first are kept in buf)."""
        return recv_until_closed(self.sock, self.buf, timeout)


def recv_until_closed(sock, buf: bytearray, timeout: float) -> bool:
    """True if the peer closes sock within timeout; bytes that arrive
    first are appended to buf (the raw POP3 and LMTP clients)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        if not chunk:
            return True
        buf += chunk
    return False


def wait_for(cond, timeout=5.0, what="condition", interval=0.02):
    """Polls cond() until it returns something true, and returns that;
    fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def raw():
    """Factory: raw(server) -> RawPOP3 connected (closed at teardown)."""
    conns = []

    def connect(srv, timeout=SOCKET_TIMEOUT, rcvbuf=None):
        c = RawPOP3(srv.host, srv.port, timeout, rcvbuf)
        conns.append(c)
        return c
    yield connect
    for c in conns:
        c.close()


def server_pids(srv) -> list:
    """The master and every live child of it (auth, login, mail)."""
    pids = [srv.pid]
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == srv.pid and fields[0] != "Z":
            pids.append(int(name))
    return pids


def server_rss_kb(srv) -> int:
    """VmRSS summed over all of a server's processes: what it costs."""
    total = 0
    for pid in server_pids(srv):
        try:
            total += vm_rss_kb(pid)
        except (OSError, AssertionError):
            pass
    return total


def vm_rss_kb(pid) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")
