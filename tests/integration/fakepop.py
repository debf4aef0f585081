"""A scriptable POP3 server for testing popbox-fetch against faults.

It serves a fixed list of messages (with UIDLs), speaks enough of RFC 1939
and RFC 2449 for a client (CAPA with PIPELINING and UIDL, USER/PASS, STAT,
LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, QUIT), and applies deletions only
in the UPDATE state, after a QUIT that it answers: exactly the rule a real
server follows, so a test can tell what the server really removed.

With ssl_context (a server-side ssl.SSLContext) every connection is
implicit TLS (POP3S).  With stls_context, CAPA offers STLS and stls says
how it is answered: "ok" (+OK, then the TLS handshake), "err" (-ERR: the
client must not go on in clear), "inject" (+OK and, in the same write, a
second line before the handshake: the response-injection attack of
RFC 2595's era; the client must treat it as an error).  With oauth_token set, CAPA also offers SASL XOAUTH2 OAUTHBEARER and AUTH
takes them (RFC 7628 for OAUTHBEARER; Google's and Microsoft's XOAUTH2),
with or without an initial response: the bearer token and the user must
match.  A wrong one gets the error JSON as a challenge, as those servers
send it; the client must answer it (with %x01 or an empty line) and then
gets -ERR.  oauth_seen lists the (mechanism, user, token) received.

Faults are given per connection as a list of Fault(step, action):
  step:   "greeting", "login", "RETR", "DELE", "QUIT", "UIDL", "LIST", ...
          (a command name), with an optional message number (RETR 2)
  action: "drop"        close the connection instead of answering
          "drop-mid"    RETR only: send half the message, then close
          "err"         answer -ERR
          "drop-after-update"  QUIT only: apply the deletions, then close
                        without the +OK (the client cannot know they happened)
Each Fault fires once, on the first matching command of that connection.

Runs in a thread on 127.0.0.1, on a port the kernel picks; one connection
at a time (a POP3 maildrop is locked per session anyway).

Observation for tests:
  log            every command line seen (PASS masked), with a line
                 "# connection N" before each connection's commands
  ahead          commands that had already arrived when the previous one
                 was read, i.e. sent before its answer: pipelined.  With
                 pipelining=False any of them is a client bug (RFC 2449:
                 no PIPELINING in CAPA, no sending ahead)
  on_command     if set, called as on_command(cmd, arg, message or None)
                 in the server thread when a command arrives, before it is
                 answered (a test checks, at DELE n, that message n is
                 already stored locally)
  errors         exceptions raised in the server thread (a bug in the
                 fake or in a hook): a test asserts this stays empty
"""
import base64
import binascii
import socket
import threading
from dataclasses import dataclass


@dataclass
class Fault:
    step: str
    action: str
    number: int = 0          # 0: any message number


@dataclass
class Message:
    uidl: str
    data: bytes              # with CRLF line ends, not stuffed


def stuffed(data: bytes) -> bytes:
    lines = data.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n"
                    for l in lines)


class FakePOP3:
    def __init__(self, messages, user="fetcher", password="fetch-pw",
                 pipelining=True, uidl=True, oauth_token=None,
                 ssl_context=None, stls_context=None, stls="ok"):
        self.messages = list(messages)
        self.user, self.password = user, password
        self.oauth_token = oauth_token
        self.oauth_seen = []
        self.ssl_context = ssl_context   # implicit TLS on every connection
        self.stls_context, self.stls = stls_context, stls
        self.pipelining, self.uidl = pipelining, uidl
        self.faults_per_conn = []    # list of lists, one per coming connection
        self.connections = 0
        self.log = []                # commands seen, as text
        self.ahead = 0               # commands received before the previous answer
        self.on_command = None       # hook: (cmd, arg, Message or None)
        self.errors = []             # exceptions in the server thread
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    # ---- test side

    def plan_faults(self, *faults_for_next_connections):
        """Each argument is the fault list of one coming connection."""
        with self.lock:
            self.faults_per_conn.extend(list(f) for f in faults_for_next_connections)

    def add_messages(self, messages):
        """New mail arrives (seen by the next connection)."""
        with self.lock:
            self.messages.extend(messages)

    def uidls(self):
        with self.lock:
            return [m.uidl for m in self.messages]

    def close(self):
        self.stopping = True
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            pass
        self.thread.join(timeout=10)
        self.sock.close()

    # ---- server side

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.stopping:
                conn.close()
                return
            with self.lock:
                self.connections += 1
                self.log.append(f"# connection {self.connections}")
                faults = self.faults_per_conn.pop(0) if self.faults_per_conn else []
            session = None
            try:
                if self.ssl_context is not None:
                    conn.settimeout(20)
                    conn = self.ssl_context.wrap_socket(conn, server_side=True)
                session = _Session(self, conn, faults)
                session.run()
            except OSError:
                pass
            except Exception as e:   # a bug here or in a hook: kept for the test
                with self.lock:
                    self.errors.append(repr(e))
            finally:
                if session is not None:
                    session.conn.close()     # the TLS socket after STLS
                conn.close()


class _Dropped(Exception):
    pass


class _Session:
    def __init__(self, server: FakePOP3, conn, faults):
        self.srv, self.conn, self.faults = server, conn, list(faults)
        self.buf = b""
        self.authed = False
        self.user_ok = False
        self.tls = server.ssl_context is not None
        with server.lock:
            self.snapshot = list(server.messages)
        self.deleted = set()
        conn.settimeout(20)

    def fault(self, step, number=0):
        for f in self.faults:
            if f.step == step and (f.number == 0 or f.number == number):
                self.faults.remove(f)
                return f.action
        return None

    def send(self, data: bytes):
        self.conn.sendall(data)

    def readline(self):
        while b"\n" not in self.buf:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise _Dropped()
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        if self.buf:
            # More was sent before this command was answered.
            with self.srv.lock:
                self.srv.ahead += 1
        return line.rstrip(b"\r").decode("latin-1")

    def run(self):
        if self.fault("greeting") == "drop":
            return
        self.send(b"+OK fakepop ready\r\n")
        try:
            while True:
                line = self.readline()
                with self.srv.lock:
                    self.srv.log.append(line if not line.upper().startswith("PASS")
                                        else "PASS ***")
                parts = line.split(" ", 1)
                cmd, arg = parts[0].upper(), (parts[1] if len(parts) > 1 else "")
                if not self.dispatch(cmd, arg):
                    return
        except _Dropped:
            return

    def auth_oauth(self, arg):
        parts = arg.split()
        mech = parts[0].upper() if parts else ""
        if mech not in ("XOAUTH2", "OAUTHBEARER"):
            self.send(b"-ERR unsupported mechanism\r\n")
            return True
        if len(parts) > 1 and parts[1] != "=":
            resp = parts[1]
        else:
            self.send(b"+ \r\n")
            resp = self.readline()
        try:
            text = base64.b64decode(resp, validate=True).decode("latin-1")
        except (ValueError, binascii.Error):
            self.send(b"-ERR [AUTH] bad base64\r\n")
            return True
        user = token = None
        if mech == "XOAUTH2":
            # user=USER ^A auth=Bearer TOKEN ^A ^A
            for kv in text.split("\x01"):
                if kv.startswith("user="):
                    user = kv[5:]
                elif kv.startswith("auth=Bearer "):
                    token = kv[12:]
        else:
            # gs2-header "n,a=USER," then ^A-separated key=value, ^A ^A
            head, _, rest = text.partition("\x01")
            for f in head.split(","):
                if f.startswith("a="):
                    user = f[2:].replace("=2C", ",").replace("=3D", "=")
            for kv in rest.split("\x01"):
                if kv.startswith("auth=Bearer "):
                    token = kv[12:]
        with self.srv.lock:
            self.srv.oauth_seen.append((mech, user, token))
        if user == self.srv.user and token == self.srv.oauth_token:
            self.authed = True
            self.send(b"+OK logged in\r\n")
            return True
        err = base64.b64encode(b'{"status":"401","schemes":"Bearer",'
                               b'"scope":"https://mail.example/"}')
        self.send(b"+ " + err + b"\r\n")
        self.readline()               # the client's %x01 / empty answer
        self.send(b"-ERR [AUTH] invalid token\r\n")
        return True

    def msg(self, arg):
        try:
            n = int(arg.split()[0])
        except (ValueError, IndexError):
            return None, 0
        if 1 <= n <= len(self.snapshot) and n not in self.deleted:
            return self.snapshot[n - 1], n
        return None, n

    def dispatch(self, cmd, arg):
        num = 0
        try:
            num = int(arg.split()[0]) if arg else 0
        except ValueError:
            pass
        hook = self.srv.on_command
        if hook is not None:
            m = self.msg(arg)[0] if cmd in ("RETR", "TOP", "DELE") else None
            hook(cmd, arg, m)
        action = self.fault(cmd, num)
        if action == "drop":
            return False
        if action == "err":
            self.send(b"-ERR injected failure\r\n")
            return True
        if cmd == "CAPA":
            caps = [b"USER", b"TOP"]
            if self.srv.pipelining:
                caps.append(b"PIPELINING")
            if self.srv.uidl:
                caps.append(b"UIDL")
            if self.srv.oauth_token:
                caps.append(b"SASL XOAUTH2 OAUTHBEARER")
            if self.srv.stls_context is not None and not self.tls:
                caps.append(b"STLS")
            self.send(b"+OK\r\n" + b"".join(c + b"\r\n" for c in caps) + b".\r\n")
        elif cmd == "AUTH" and self.srv.oauth_token and not self.authed:
            return self.auth_oauth(arg)
        elif cmd == "STLS" and self.srv.stls_context is not None and not self.tls:
            if self.srv.stls == "err":
                self.send(b"-ERR TLS not available now\r\n")
                return True
            extra = b"+OK injected before the handshake\r\n" if self.srv.stls == "inject" else b""
            self.send(b"+OK begin TLS\r\n" + extra)
            self.conn = self.srv.stls_context.wrap_socket(self.conn, server_side=True)
            self.tls = True
            self.buf = b""
        elif cmd == "USER":
            self.user_ok = arg == self.srv.user
            self.send(b"+OK\r\n")
        elif cmd == "PASS":
            if self.user_ok and arg == self.srv.password:
                if self.fault("login") == "drop":
                    return False
                self.authed = True
                self.send(b"+OK logged in\r\n")
            else:
                self.send(b"-ERR [AUTH] invalid login\r\n")
        elif cmd == "QUIT":
            if self.authed:
                with self.srv.lock:
                    gone = {id(self.snapshot[n - 1]) for n in self.deleted}
                    self.srv.messages = [m for m in self.srv.messages
                                         if id(m) not in gone]
            if action == "drop-after-update":
                return False
            self.send(b"+OK bye\r\n")
            return False
        elif not self.authed:
            self.send(b"-ERR not logged in\r\n")
        elif cmd == "STAT":
            live = [m for i, m in enumerate(self.snapshot, 1) if i not in self.deleted]
            self.send(b"+OK %d %d\r\n" % (len(live), sum(len(m.data) for m in live)))
        elif cmd in ("LIST", "UIDL"):
            if cmd == "UIDL" and not self.srv.uidl:
                self.send(b"-ERR no UIDL\r\n")
                return True
            def item(n, m):
                return (b"%d %d" % (n, len(m.data)) if cmd == "LIST"
                        else b"%d %s" % (n, m.uidl.encode()))
            if arg:
                m, n = self.msg(arg)
                self.send(b"+OK " + item(n, m) + b"\r\n" if m else
                          b"-ERR no such message\r\n")
            else:
                body = b"".join(item(n, m) + b"\r\n"
                                for n, m in enumerate(self.snapshot, 1)
                                if n not in self.deleted)
                self.send(b"+OK\r\n" + body + b".\r\n")
        elif cmd in ("RETR", "TOP"):
            m, n = self.msg(arg)
            if m is None:
                self.send(b"-ERR no such message\r\n")
                return True
            data = m.data
            if cmd == "TOP":
                try:
                    k = int(arg.split()[1])
                except (ValueError, IndexError):
                    self.send(b"-ERR syntax\r\n")
                    return True
                head, sep, body = data.partition(b"\r\n\r\n")
                data = head + sep + b"".join(
                    l + b"\r\n" for l in body.split(b"\r\n")[:k] if l or k)
            wire = b"+OK %d octets\r\n" % len(data) + stuffed(data)
            if action == "drop-mid":
                self.send(wire[: len(wire) // 2])
                return False
            self.send(wire + b".\r\n")
        elif cmd == "DELE":
            m, n = self.msg(arg)
            if m is None:
                self.send(b"-ERR no such message\r\n")
            else:
                self.deleted.add(n)
                self.send(b"+OK deleted\r\n")
        elif cmd == "RSET":
            self.deleted.clear()
            self.send(b"+OK\r\n")
        elif cmd == "NOOP":
            self.send(b"+OK\r\n")
        else:
            self.send(b"-ERR unknown command\r\n")
        return True
