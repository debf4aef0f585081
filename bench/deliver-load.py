#!/usr/bin/python3
"""deliver-load.py — the load generator of bench/deliver.sh (issue 7,
workload 6: delivery): hands messages to a delivery agent, one process per
message, or to an LMTP server, and checks that every one arrived.

    deliver-load.py lda  --messages DIR [common] -- COMMAND ARG... ({user})
    deliver-load.py lmtp --messages DIR [common] --host H --port P

lda: W workers (--workers), each with its own user, deliver their share of
the messages one after another, one process per message: COMMAND with
"{user}" in its arguments replaced by the worker's user, the message
written into a pipe on its standard input (as an MTA's pipe transport does),
its standard error appended to --log.  A delivery counts when the process
exits 0.  The processes' CPU is their own rusage (wait4: user + system,
what they waited for included).

lmtp: W connections at once, each with its own user: LHLO once, then for
every message MAIL FROM, RCPT TO and DATA sent together (PIPELINING), the
three replies read, the message sent dot-stuffed with CRLF line ends, the
final reply read; QUIT at the end.  A delivery counts on a 250 after the
final dot.  The connections are set up (connect, greeting, LHLO) before the
clock starts.

Common options: --count N messages in all (split evenly over the workers),
--seconds S (no message is started after S seconds), --users FMT (user
names, a printf pattern with the worker's number: u%05d), --domain D
(LMTP recipients are USER@D), --as-user NAME (after reading the messages,
become that user: the mail user that owns the Maildirs), --verify ROOT
(after the run: every user's ROOT/USER/Maildir/{new,cur} must hold exactly
the messages reported delivered, each ending with the message as sent,
line ends as LF, a final newline aside; matched by Message-ID).

Prints one line: "deliver-load: mode=M workers=W delivered=N errors=E
elapsed_s=T rate=R p50_ms=A p99_ms=B agent_cpu_us_per_msg=X
driver_cpu_us_per_msg=Y bytes_in=I verified=V bad=K agent_cpu_s=S
driver_cpu_s_all=D", and a line "deliver-load: failure ..." for each of the
first failures.  agent CPU is the delivering processes' (lda; per message
delivered, and in all) and 0 for lmtp; driver CPU per message is this
program's own during the run, its LMTP worker processes included;
driver_cpu_s_all the same over its whole life (start-up and checks too).
"""
import argparse
import os
import pwd
import re
import resource
import select
import socket
import sys
import time

MSGID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]*>)", re.I | re.M)
FAILURES_SHOWN = 10


def parse_args():
    ap = argparse.ArgumentParser(description="delivery load for bench/deliver.sh")
    ap.add_argument("mode", choices=("lda", "lmtp"))
    ap.add_argument("--messages", required=True, help="directory of message files")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--users", default="u%05d")
    ap.add_argument("--domain", default="example.org")
    ap.add_argument("--sender", default="sender@lists.example.net")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--log", default=os.devnull)
    ap.add_argument("--as-user")
    ap.add_argument("--verify")
    argv = sys.argv[1:]
    command = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    a = ap.parse_args(argv)
    a.command = command
    if a.workers < 1 or a.count < a.workers:
        ap.error("--workers must be 1..--count")
    if a.mode == "lda" and not a.command:
        ap.error("lda needs a COMMAND after --")
    if a.mode == "lmtp" and not a.port:
        ap.error("lmtp needs --port")
    return a


def load_messages(directory):
    """The message files of DIR, sorted by name, as bytes."""
    names = sorted(os.listdir(directory))
    msgs = []
    for n in names:
        with open(os.path.join(directory, n), "rb") as f:
            msgs.append(f.read())
    if not msgs:
        sys.exit("deliver-load: no messages in %s" % directory)
    return msgs


def drop_to(name):
    pw = pwd.getpwnam(name)
    os.initgroups(name, pw.pw_gid)
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if os.getuid() != pw.pw_uid or os.geteuid() != pw.pw_uid:
        sys.exit("deliver-load: could not become %s" % name)


def shares(count, workers):
    """Message numbers of each worker: worker w gets w, w + W, ..."""
    return [list(range(w, count, workers)) for w in range(workers)]


def percentile(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]


# ------------------------------------------------------------------ lda


class Child:
    __slots__ = ("pid", "pidfd", "wfd", "data", "off", "start", "msg")


def spawn(argv, data, errfd, nullfd, msg):
    r, w = os.pipe()
    c = Child()
    c.pid = os.posix_spawn(argv[0], argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                           file_actions=[(os.POSIX_SPAWN_DUP2, r, 0),
                                         (os.POSIX_SPAWN_DUP2, nullfd, 1),
                                         (os.POSIX_SPAWN_DUP2, errfd, 2)])
    c.start = time.monotonic()
    os.close(r)
    os.set_blocking(w, False)
    c.pidfd = os.pidfd_open(c.pid)
    c.wfd = w
    c.data = data
    c.off = 0
    c.msg = msg
    return c


def feed(c):
    """Writes what the pipe takes; closes it at the end (EOF for the
    agent) or when the agent has gone away."""
    try:
        while c.off < len(c.data):
            n = os.write(c.wfd, memoryview(c.data)[c.off:c.off + 65536])
            c.off += n
    except BlockingIOError:
        return False
    except BrokenPipeError:
        c.off = len(c.data)
    os.close(c.wfd)
    c.wfd = -1
    return True


def run_lda(a, msgs, users, errfd):
    nullfd = os.open(os.devnull, os.O_WRONLY)
    todo = shares(a.count, a.workers)
    nxt = [0] * a.workers
    delivered = [[] for _ in range(a.workers)]
    lat, failures = [], []
    agent_cpu = 0.0
    running = {}                   # fd -> (kind, worker)
    kids = [None] * a.workers
    poller = select.poll()
    t0 = time.monotonic()
    deadline = t0 + a.seconds

    def start(w):
        if nxt[w] >= len(todo[w]) or time.monotonic() >= deadline:
            kids[w] = None
            return
        m = todo[w][nxt[w]]
        nxt[w] += 1
        argv = [x.replace("{user}", users[w]) for x in a.command]
        c = spawn(argv, msgs[m % len(msgs)], errfd, nullfd, m)
        kids[w] = c
        running[c.pidfd] = w
        poller.register(c.pidfd, select.POLLIN)
        if not feed(c):
            running[c.wfd] = w
            poller.register(c.wfd, select.POLLOUT)

    for w in range(a.workers):
        start(w)
    while running:
        events = poller.poll(1000)
        fresh = set()             # fds opened while handling these events
        for fd, _ in events:
            w = running.get(fd)
            if w is None or fd in fresh:
                continue
            c = kids[w]
            if fd == c.wfd:
                if feed(c) or c.wfd < 0:
                    poller.unregister(fd)
                    del running[fd]
                continue
            # The agent has exited.
            if c.wfd >= 0:
                poller.unregister(c.wfd)
                del running[c.wfd]
                os.close(c.wfd)
            poller.unregister(fd)
            del running[fd]
            os.close(fd)
            _, status, ru = os.wait4(c.pid, 0)
            agent_cpu += ru.ru_utime + ru.ru_stime
            lat.append(time.monotonic() - c.start)
            code = os.waitstatus_to_exitcode(status)
            if code == 0:
                delivered[w].append(c.msg)
            else:
                failures.append("user=%s message=%d exit=%d" % (users[w], c.msg, code))
            start(w)
            if kids[w] is not None:
                fresh.update((kids[w].pidfd, kids[w].wfd))
    elapsed = time.monotonic() - t0
    os.close(errfd)
    os.close(nullfd)
    return delivered, failures, lat, elapsed, agent_cpu


# ------------------------------------------------------------------ lmtp


def wire(msg):
    """The message as DATA sends it: CRLF line ends, dot-stuffed, a final
    CRLF added where it has none, then the end marker."""
    lines = msg.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = [b"." + ln if ln.startswith(b".") else ln for ln in lines]
    return b"\r\n".join(out) + b"\r\n.\r\n"


class Lmtp:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rf = self.sock.makefile("rb")

    def reply(self):
        """One whole reply: (code, last line)."""
        while True:
            line = self.rf.readline(4096)
            if not line:
                raise OSError("connection closed")
            if len(line) < 4 or not line[:3].isdigit():
                raise OSError("bad reply %r" % line[:80])
            if line[3:4] != b"-":
                return int(line[:3]), line.rstrip(b"\r\n").decode("latin-1")

    def send(self, data):
        self.sock.sendall(data)


def lmtp_worker(a, w, user, msgs, todo, go_r, out_w):
    """One connection; reports 'ok M LATENCY...' per message and failures
    through out_w; exits."""
    res = []
    try:
        c = Lmtp(a.host, a.port, a.timeout)
        code, line = c.reply()
        if code != 220:
            raise OSError("greeting: " + line)
        c.send(b"LHLO bench.example.net\r\n")
        code, line = c.reply()
        if code != 250:
            raise OSError("LHLO: " + line)
        os.write(out_w, b"ready\n")
        os.read(go_r, 1)
        deadline = time.monotonic() + a.seconds
        env = ("MAIL FROM:<%s>\r\nRCPT TO:<%s@%s>\r\nDATA\r\n"
               % (a.sender, user, a.domain)).encode()
        for m in todo:
            if time.monotonic() >= deadline:
                break
            t = time.monotonic()
            c.send(env)
            codes = [c.reply() for _ in range(3)]
            if [x[0] for x in codes] != [250, 250, 354]:
                if codes[2][0] == 354:   # should not happen: end the data
                    c.send(b".\r\n")
                    c.reply()
                res.append("fail user=%s message=%d %s" % (user, m, " / ".join(x[1] for x in codes)))
                c.send(b"RSET\r\n")
                c.reply()
                continue
            c.send(msgs[m % len(msgs)])
            code, line = c.reply()
            if code == 250:
                res.append("ok %d %.6f" % (m, time.monotonic() - t))
            else:
                res.append("fail user=%s message=%d after DATA: %s" % (user, m, line))
        c.send(b"QUIT\r\n")
        c.reply()
    except (OSError, ValueError) as e:
        res.append("fail user=%s connection: %s" % (user, e))
    os.write(out_w, ("\n".join(res) + "\nend\n").encode())


def run_lmtp(a, msgs, users):
    wires = [wire(m) for m in msgs]
    todo = shares(a.count, a.workers)
    go_r, go_w = os.pipe()
    pipes, pids = [], []
    for w in range(a.workers):
        r, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.close(go_w)
            try:
                lmtp_worker(a, w, users[w], wires, todo[w], go_r, wfd)
            finally:
                os._exit(0)
        os.close(wfd)
        pipes.append(os.fdopen(r, "rb"))
        pids.append(pid)
    os.close(go_r)
    # A worker that could not set up reports its failure instead of ready.
    firsts = [p.readline().decode("latin-1") for p in pipes]
    t0 = time.monotonic()
    os.write(go_w, b"x" * a.workers)
    delivered = [[] for _ in range(a.workers)]
    lat, failures = [], []
    texts = [("" if f == "ready\n" else f) + p.read().decode("latin-1")
             for f, p in zip(firsts, pipes)]
    elapsed = time.monotonic() - t0
    for pid in pids:
        os.waitpid(pid, 0)
    os.close(go_w)
    for w, text in enumerate(texts):
        for ln in text.splitlines():
            if ln.startswith("ok "):
                _, m, t = ln.split()
                delivered[w].append(int(m))
                lat.append(float(t))
            elif ln.startswith("fail "):
                failures.append(ln[5:])
    return delivered, failures, lat, elapsed, 0.0


# ------------------------------------------------------------------ checks


def normal(b):
    b = b.replace(b"\r\n", b"\n")
    return b[:-1] if b.endswith(b"\n") else b


def verify(root, users, delivered, msgs):
    """Every user's Maildir holds exactly the messages delivered to it,
    each ending with the message sent.  Returns (good, problems)."""
    by_id = {}
    for i, m in enumerate(msgs):
        g = MSGID.search(m)
        if not g or g.group(1) in by_id:
            return 0, ["message %d has no Message-ID of its own: cannot verify" % i]
        by_id[g.group(1)] = i
    good, problems = 0, []
    for w, user in enumerate(users):
        want = {}
        for m in delivered[w]:
            want[m % len(msgs)] = want.get(m % len(msgs), 0) + 1
        seen = {}
        md = os.path.join(root, user, "Maildir")
        for sub in ("new", "cur"):
            d = os.path.join(md, sub)
            if not os.path.isdir(d):
                continue
            for n in os.listdir(d):
                with open(os.path.join(d, n), "rb") as f:
                    got = f.read()
                ids = MSGID.findall(got)
                i = by_id.get(ids[-1]) if ids else None
                if i is None:
                    problems.append("%s/%s: not one of the messages sent" % (user, n))
                    continue
                if not normal(got).endswith(normal(msgs[i])):
                    problems.append("%s/%s: content differs from message %d" % (user, n, i))
                    continue
                seen[i] = seen.get(i, 0) + 1
        for i in set(want) | set(seen):
            if want.get(i, 0) != seen.get(i, 0):
                problems.append("%s: message %d delivered %d times, found %d times"
                                % (user, i, want.get(i, 0), seen.get(i, 0)))
            else:
                good += seen[i]
    return good, problems


def main():
    a = parse_args()
    msgs = load_messages(a.messages)
    users = [a.users % w for w in range(a.workers)]
    # Opened before dropping privileges: the agents' standard error.
    errfd = os.open(a.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if a.as_user:
        drop_to(a.as_user)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if a.mode == "lda":
        delivered, failures, lat, elapsed, agent = run_lda(a, msgs, users, errfd)
        c1 = c0
    else:
        delivered, failures, lat, elapsed, agent = run_lmtp(a, msgs, users)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    driver = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
              + c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime)
    n = sum(len(d) for d in delivered)
    nbytes = sum(len(msgs[m % len(msgs)]) for d in delivered for m in d)
    good, problems = (n, [])
    if a.verify:
        good, problems = verify(a.verify, users, delivered, msgs)
    # This program's whole CPU, start-up and checks included (for the
    # machine's balance in bench/deliver.sh): itself, and for lmtp its
    # workers (for lda the children are the agents, counted apart).
    r2 = resource.getrusage(resource.RUSAGE_SELF)
    whole = r2.ru_utime + r2.ru_stime
    if a.mode == "lmtp":
        whole += c1.ru_utime + c1.ru_stime
    for f in failures[:FAILURES_SHOWN]:
        print("deliver-load: failure %s" % f)
    for p in problems[:FAILURES_SHOWN]:
        print("deliver-load: failure verify: %s" % p)
    per = (lambda x: "%.1f" % (x * 1e6 / n)) if n else (lambda x: "-")
    print("deliver-load: mode=%s workers=%d delivered=%d errors=%d elapsed_s=%.3f "
          "rate=%.1f p50_ms=%.2f p99_ms=%.2f agent_cpu_us_per_msg=%s "
          "driver_cpu_us_per_msg=%s bytes_in=%d verified=%s bad=%d "
          "agent_cpu_s=%.3f driver_cpu_s_all=%.3f"
          % (a.mode, a.workers, n, len(failures), elapsed,
             n / elapsed if elapsed > 0 else 0, percentile(lat, 0.5) * 1e3,
             percentile(lat, 0.99) * 1e3, per(agent) if a.mode == "lda" else "0",
             per(driver), nbytes, good if a.verify else "-", len(problems),
             agent, whole))
    return 0 if not failures and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
