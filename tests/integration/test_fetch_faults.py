"""popbox-fetch against a faulty POP3 server (tests/integration/fakepop.py):
a dropped connection or an -ERR at every step of a session, then new runs
without faults until one exits 0 (at most 3): every message ends exactly
once in the local Maildir or mbox, byte for byte, and the server never
lost a message that was not stored (checked after every run, and at the
moment of every DELE: the message must already be in the destination).

The faults, for message k of N (fakepop.Fault):
  greeting drop, drop after PASS, -ERR to LIST, -ERR to UIDL,
  RETR k: drop, drop in the middle of the message, -ERR,
  DELE k: drop, -ERR,
  QUIT: drop before applying the deletions, drop after applying them
        (the client cannot know they happened).
Each with delete after download into a Maildir and into an mbox, and with
keep = yes into a Maildir.  Then: a server without PIPELINING (the client
must not send ahead) and one without UIDL (delete after download only;
keep is refused); and SIGKILL of popbox-fetch at random moments during
runs over 300 messages into a Maildir and into an mbox, then runs until
clean: every message exactly once (the pending records of
fetch/uidl-db.h leave no window for a second copy; an mbox append torn by
a kill stays as a torn piece, told apart from whole messages, sink.h), and
the states a crash leaves made by hand for both; SIGTERM and SIGINT (exit
75, no QUIT, nothing half stored).  Also: two faults in a row (a dropped QUIT, then an -ERR to
UIDL), a UIDL reused for a new message, two messages under one UIDL, odd
UIDLs and big messages; STLS refused or with a line injected before the
handshake; OAuth (XOAUTH2, OAUTHBEARER) with a token command, over
implicit TLS.
"""
import os
import random
import signal
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from conftest import wire_form
from fakepop import Fault, FakePOP3, Message
from fetch_helpers import (EXIT_OK, EXIT_TEMP, FETCH, assert_same_messages,
                           fetch_env, lf_form, maildir_messages, make_maildir,
                           mbox_append_name, mbox_appends, mbox_messages,
                           mbox_quoted, mbox_separator, need_fetch,
                           numbered_messages, run_fetch, write_config)
from test_tls import pki  # noqa: F401  (a fixture)

N = 6
K = 3
MAX_CLEAN_RUNS = 3


def make_messages(n, size=700, tag="f", seed=1):
    return [Message(f"uid-{tag}-{i:04d}", wire_form(m))
            for i, m in enumerate(numbered_messages(n, size=size, tag=tag,
                                                    seed=seed), 1)]


class Rig:
    """A fakepop server, a config pointing at it, the destination."""

    def __init__(self, tmp: Path, dest_kind="maildir", keep="no", n=N,
                 pipelining=True, uidl=True, size=700):
        self.tmp = tmp
        self.home = tmp / "home"
        self.home.mkdir(exist_ok=True)
        self.messages = make_messages(n, size)
        self.srv = FakePOP3(self.messages, pipelining=pipelining, uidl=uidl)
        self.dest_kind = dest_kind
        if dest_kind == "maildir":
            self.dest = make_maildir(tmp / "inbox")
            deliver = f"maildir:{self.dest}"
        else:
            self.dest = tmp / "inbox.mbox"
            deliver = f"mbox:{self.dest}"
        self.uidl = tmp / "acct.uidl"
        self.conf = write_config(tmp / "fetch.conf", {"acct": {
            "host": "127.0.0.1", "port": self.srv.port, "tls": "none",
            "auth": "user", "user": self.srv.user, "password": self.srv.password,
            "deliver": deliver, "keep": keep, "uidl_file": self.uidl,
            "timeout": 10}})
        self.keep = keep
        self.killed = False          # SIGKILLs may leave files in tmp/
        self.torn_ends = []          # mbox sizes when a kill tore an append
        self.dele_violations = []
        self.srv.on_command = self._check_dele

    def stored(self, check=True) -> list:
        """What is in the destination; check: no leftovers in tmp/ and a
        well-formed mbox (not while a run is going on).  After kills, an
        mbox is read append by append: torn appends are left out (only
        where a kill left the end of the file, torn_ends)."""
        if self.dest_kind == "maildir":
            return maildir_messages(self.dest, check_tmp=check and not self.killed)
        if self.killed or self.torn_ends:
            return sorted(self.mbox_appends(torn_at_end=not check)[0])
        if not check:
            for _ in range(200):
                try:
                    return mbox_messages(self.dest)
                except AssertionError:   # an append in progress: wait for it
                    time.sleep(0.01)
        return mbox_messages(self.dest)

    def mbox_appends(self, torn_at_end=False):
        """(whole messages, torn appends) of the mbox (mbox_appends)."""
        data = self.dest.read_bytes() if self.dest.exists() else b""
        return mbox_appends(data, [lf_form(m.data) for m in self.messages],
                            self.torn_ends, torn_at_end)

    def note_torn_tail(self) -> bool:
        """Just after a kill: does the mbox end in a torn append?  Its end
        is noted (torn_ends), so that later reads leave it out even once
        the next append's separator makes it look whole."""
        if self.dest_kind != "mbox" or not self.dest.exists():
            return False
        size = self.dest.stat().st_size
        _, torn = self.mbox_appends(torn_at_end=True)
        if torn and torn[-1][1] == size:
            self.torn_ends.append(size)
            return True
        return False

    def _check_dele(self, cmd, arg, msg):
        """At each DELE: the message is stored already (a DELE goes out only
        after the local copy is durable)."""
        if cmd != "DELE" or msg is None:
            return
        if self.dest_kind == "mbox":
            # The whole append, after its From_ line (a search, not a
            # parse: this runs at every DELE).
            data = self.dest.read_bytes() if self.dest.exists() else b""
            ok = b"\n" + mbox_quoted(lf_form(msg.data)) in data
        else:
            ok = lf_form(msg.data) in self.stored(check=False)
        if not ok:
            self.dele_violations.append(f"DELE {arg} ({msg.uidl}) before it was stored")

    def run(self, *args, **kw):
        return run_fetch(["-c", self.conf, *args], self.home, timeout=60, **kw)

    def check_invariants(self, when):
        """Nothing lost: every message is stored or still on the server;
        none stored twice; no DELE before storing; the fake is healthy."""
        stored = self.stored()
        assert len(stored) == len(set(stored)), f"{when}: a message stored twice"
        on_server = set(self.srv.uidls())
        for m in self.messages:
            assert lf_form(m.data) in stored or m.uidl in on_server, (
                f"{when}: {m.uidl} LOST: deleted on the server, not stored")
        assert not self.dele_violations, f"{when}: {self.dele_violations}"
        assert not self.srv.errors, f"{when}: fakepop: {self.srv.errors}"

    def check_final(self):
        assert_same_messages(self.stored(), [m.data for m in self.messages])
        left = self.srv.uidls()
        if self.keep == "no":
            assert left == [], f"left on the server: {left}"
        else:
            assert left == [m.uidl for m in self.messages]

    def until_clean(self, first):
        """Runs without faults until one exits 0; returns the runs."""
        runs = [first]
        self.check_invariants(f"after the faulty run {first!r}")
        for i in range(MAX_CLEAN_RUNS):
            r = self.run()
            runs.append(r)
            self.check_invariants(f"after clean run {i + 1} {r!r}")
            if r.rc == EXIT_OK:
                return runs
        raise AssertionError("no clean exit within %d runs:\n%s" % (
            MAX_CLEAN_RUNS, "\n".join(map(repr, runs))))

    def close(self):
        self.srv.close()


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**kw):
        r = Rig(tmp_path, **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


# (name, fault list of the first connection, may the faulty run exit 0?)
FAULTS = [
    ("greeting-drop", [Fault("greeting", "drop")], False),
    ("login-drop", [Fault("login", "drop")], False),
    ("list-err", [Fault("LIST", "err")], False),
    ("uidl-err", [Fault("UIDL", "err")], True),
    ("retr-drop", [Fault("RETR", "drop", K)], False),
    ("retr-drop-mid", [Fault("RETR", "drop-mid", K)], False),
    ("retr-err", [Fault("RETR", "err", K)], False),
    ("dele-drop", [Fault("DELE", "drop", K)], False),
    ("dele-err", [Fault("DELE", "err", K)], False),
    ("quit-drop", [Fault("QUIT", "drop")], False),
    ("quit-drop-after-update", [Fault("QUIT", "drop-after-update")], False),
]
POLICIES = [("maildir", "no"), ("mbox", "no"), ("maildir", "yes")]
# Every fault with every policy, except DELE faults under keep = yes (no
# DELE is sent there).
CASES = [pytest.param(name, faults, may_finish, dest, keep,
                      id=f"{name}-{dest}-keep={keep}")
         for name, faults, may_finish in FAULTS
         for dest, keep in POLICIES
         if not (keep == "yes" and name.startswith("dele"))]


@pytest.mark.parametrize("name,faults,may_finish,dest,keep", CASES)
def test_fault_then_clean_run(rig, name, faults, may_finish, dest, keep):
    g = rig(dest_kind=dest, keep=keep)
    g.srv.plan_faults(faults)
    first = g.run()
    if keep == "yes" and name.startswith("quit"):
        may_finish = True            # nothing was to be deleted
    if not may_finish:
        assert first.rc != EXIT_OK, f"the faulty run claimed success:\n{first!r}"
        assert first.err.strip(), f"a failure without an error message:\n{first!r}"
    g.until_clean(first)
    g.check_final()


@pytest.mark.parametrize("second", [Fault("UIDL", "err"), Fault("UIDL", "drop"),
                                    Fault("RETR", "drop-mid", 2)],
                         ids=["uidl-err", "uidl-drop", "retr-drop-mid"])
def test_faults_in_a_row(rig, second):
    """A run whose QUIT is dropped (everything stored and recorded, nothing
    deleted), then a run with another fault, then clean runs: still each
    message once.  In particular an -ERR to UIDL from a server that lists
    UIDL in CAPA must not make the client forget what it recorded (as if
    the server had no UIDL) and download everything again."""
    g = rig()
    g.srv.plan_faults([Fault("QUIT", "drop")], [second])
    first = g.run()
    assert first.rc != EXIT_OK, first
    assert len(g.stored()) == N
    r = g.run()
    g.check_invariants(f"after the second faulty run {r!r}")
    g.until_clean(r)
    g.check_final()


def test_reused_uidl_is_a_new_message(rig):
    """A server that gives a new message the UIDL of one stored before
    (with another size): the new one is fetched, never DELEted unseen."""
    g = rig()
    g.srv.plan_faults([Fault("QUIT", "drop")])
    first = g.run()
    assert first.rc != EXIT_OK, first
    old = g.messages[0]
    new = Message(old.uidl, wire_form(numbered_messages(1, size=2000, tag="reuse")[0]))
    assert len(new.data) != len(old.data)
    with g.srv.lock:
        g.srv.messages[0] = new
    g.messages.append(new)
    g.until_clean(first)
    g.check_final()


def test_duplicate_uidls_never_deleted(rig):
    """Two messages under one UIDL: which one was stored cannot be known
    later, so neither is deleted (fetch/plan.h); the others go normally."""
    g = rig(n=4)
    twin = Message(g.messages[1].uidl, wire_form(numbered_messages(1, tag="twin")[0]))
    g.srv.add_messages([twin])
    for _ in range(2):
        r = g.run()
        assert r.rc in (EXIT_OK, EXIT_TEMP, 1), r
        g.check_invariants(f"run {r!r}")
    left = sorted(g.srv.uidls())
    assert left == sorted([g.messages[1].uidl] * 2), left


def test_odd_uidls_and_big_messages(rig):
    """UIDLs that look like paths, a 70-character one, a 5 MB message, a
    200 KB line, a message of only a header: stored byte for byte."""
    g = rig(n=0)
    bodies = [
        b"Subject: big\r\n\r\n" + b"".join(b"line %07d of a big message, dot .\r\n" % i
                                             for i in range(140000)),
        b"Subject: long line\r\n\r\n" + b"x" * 200000 + b"\r\n",
        b"Subject: header only\r\nFrom: a@example.org\r\n",
        b"Subject: dots\r\n\r\n.\r\n..\r\n...\r\n.x\r\n",
    ]
    uidls = ["../../etc/passwd", "a/b", "-n", "~" * 70]
    extra = [Message(u, d) for u, d in zip(uidls, bodies)]
    g.messages += extra
    g.srv.add_messages(extra)
    r = g.run()
    assert r.rc == EXIT_OK, r
    g.check_invariants("odd messages")
    g.check_final()
    assert not list(g.tmp.rglob("passwd")), "a UIDL became a path"


def test_no_fault_uses_pipelining(rig):
    """Sanity of the rig, and PIPELINING is used when offered."""
    g = rig(n=20)
    r = g.run("-v")
    assert r.rc == EXIT_OK, r
    g.check_invariants("clean run")
    g.check_final()
    assert g.srv.ahead > 0, "popbox-fetch never sent ahead although PIPELINING was offered"
    sm = r.summary()
    assert (sm["fetched"], sm["deleted"]) == (20, 20), r


@pytest.mark.parametrize("fault", [None, Fault("RETR", "drop-mid", K),
                                   Fault("DELE", "drop", K),
                                   Fault("QUIT", "drop-after-update")],
                         ids=["clean", "retr-drop-mid", "dele-drop", "quit-after-update"])
def test_without_pipelining(rig, fault):
    g = rig(pipelining=False)
    if fault:
        g.srv.plan_faults([fault])
    first = g.run()
    if fault:
        assert first.rc != EXIT_OK, first
    else:
        assert first.rc == EXIT_OK, first
    g.until_clean(first)
    g.check_final()
    assert g.srv.ahead == 0, (
        f"{g.srv.ahead} command(s) sent ahead without PIPELINING in CAPA")


def test_without_uidl_delete_only(rig):
    g = rig(uidl=False)
    r = g.run()
    assert r.rc == EXIT_OK, r
    g.check_invariants("run without UIDL")
    g.check_final()
    assert not any(l.upper().startswith("TOP") for l in g.srv.log)


@pytest.mark.parametrize("keys", [{"keep": "yes"}, {"keep": "2"}])
def test_without_uidl_keep_refused(rig, keys):
    """Keeping needs UIDL (nothing else tells what was downloaded): the run
    fails and touches nothing."""
    g = rig(uidl=False, keep=keys["keep"])
    r = g.run()
    assert r.rc != EXIT_OK, r
    assert r.err.strip(), r
    assert g.srv.uidls() == [m.uidl for m in g.messages]
    assert g.stored() == []
    assert not any(l.upper().startswith("DELE") for l in g.srv.log), g.srv.log


@pytest.mark.parametrize("fault", [Fault("RETR", "drop-mid", K),
                                   Fault("QUIT", "drop")],
                         ids=["retr-drop-mid", "quit-drop"])
def test_without_uidl_fault_loses_nothing(rig, fault):
    """Without UIDL a fault after some messages were stored but before QUIT
    completed gives second copies of those (nothing can tell them apart:
    fetch/plan.h), never a loss."""
    g = rig(uidl=False)
    g.srv.plan_faults([fault])
    first = g.run()
    assert first.rc != EXIT_OK, first
    stored_first = g.stored()
    g.check_invariants("faulty run without UIDL")
    for i in range(MAX_CLEAN_RUNS):
        r = g.run()
        if r.rc == EXIT_OK:
            break
    else:
        raise AssertionError(f"no clean run: {r!r}")
    assert g.srv.uidls() == []
    got = g.stored()
    want = sorted(lf_form(m.data) for m in g.messages)
    assert set(got) == set(want), "a message is missing"
    extra = len(got) - len(want)
    assert extra <= len(stored_first), (
        f"{extra} second copies, but only {len(stored_first)} were stored "
        f"before the fault")


# ---------------------------------------------------------------- SIGKILL


def uidl_file_records(path: Path) -> set:
    """UIDLs recorded in the table (a torn last line ignored, as popbox-fetch
    does)."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    out = set()
    for line in data.decode("ascii", "replace").splitlines()[1:]:
        parts = line.split(" ", 3)
        if len(parts) == 4:
            out.add(parts[3])
    return out


def stored_so_far(g) -> int:
    """A cheap progress measure while a run goes on: files in new/, or
    the mbox's size."""
    if g.dest_kind == "maildir":
        return len(list((g.dest / "new").iterdir()))
    return g.dest.stat().st_size if g.dest.exists() else 0


@pytest.mark.parametrize("kind,n,size", [("maildir", 300, 3000),
                                         ("mbox", 300, 3000),
                                         ("mbox", 30, 100000)],
                         ids=["maildir", "mbox", "mbox-100k"])
def test_sigkill_at_random_moments(rig, kind, n, size):
    """15 runs over 300 messages (or 30 of 100 KB) into a Maildir or an
    mbox, each killed (SIGKILL) at a random moment (a random time, or just
    after a random number of messages were stored), then runs without
    kills until clean: each message exactly once, with no exception: a
    message is renamed into new/, or appended to the mbox, only after its
    pending record is durable, and the next run looks pending names up
    (fetch/uidl-db.h).  When a run got through everything, as many new
    messages arrive for the next one.  The kills that caught a message stored but not yet recorded
    as plainly stored are counted (the window that gave second copies
    before pending records).

    An mbox append has no atomic step: a kill in the middle of its write
    leaves a torn message at the end of the file (fetch/sink.h), which the
    next run does not count as stored, and appends the message whole after
    it.  Right after each kill the end of the mbox is checked: a torn
    append there is noted, and left out of what counts as stored from then
    on (mbox_appends: it must be a prefix of a known message's append, at
    the very place the file ended at the kill).  Torn appends are counted
    and printed; anything else that is not a whole append fails the test.
    A message of 3 KB is appended with one write(), so they are rare but
    happen (a kill can cut a write() between two pages: seen in about one
    run of the test in seven); one of 100 KB takes three write()s, and
    mbox-100k sees a torn append in about every other run (0 to 3)."""
    need_fetch()
    g = rig(dest_kind=kind, n=n, size=size)
    g.killed = True
    rnd = random.Random(int(os.environ.get("POPBOX_TEST_SEED", "6")))
    by_data = {lf_form(m.data): m.uidl for m in g.messages}
    window = {}                 # uidl -> kills that caught it stored, unrecorded
    kills = finished = batches = torn = 0
    for i in range(15):
        if not g.srv.uidls():
            batches += 1
            new = make_messages(n, size, tag=f"b{batches}", seed=batches + 1)
            g.messages += new
            by_data.update({lf_form(m.data): m.uidl for m in new})
            g.srv.add_messages(new)
        before = stored_so_far(g)
        p = subprocess.Popen([str(FETCH), "-c", str(g.conf)],
                             env=fetch_env(g.home), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if rnd.random() < 0.5:
                time.sleep(rnd.uniform(0.0, 0.8))
            else:
                # A moment when some messages of this run are being stored
                # (an mbox: some appends further).
                target = before + rnd.randint(1, min(30, n)) * (
                    1 if kind == "maildir" else size)
                deadline = time.monotonic() + 20
                while (stored_so_far(g) < target
                       and p.poll() is None and time.monotonic() < deadline):
                    time.sleep(0.002)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
            else:
                finished += 1
            p.wait(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stderr.close()
        torn += g.note_torn_tail()
        # fakepop serves one connection at a time: the next run waits in
        # its backlog until the killed session has seen its EOF.
        stored = g.stored()
        recorded = uidl_file_records(g.uidl)
        on_server = set(g.srv.uidls())
        for d in set(stored):
            u = by_data.get(d)
            assert u is not None, f"stored bytes that no message has: {d[:80]!r}"
            if u not in recorded and u in on_server:
                window[u] = window.get(u, 0) + 1
        g.check_invariants(f"after kill {i + 1}")
    runs = g.until_clean(g.run())
    left = g.srv.uidls()
    assert left == [], f"{len(left)} left on the server after clean runs"
    got = g.stored()
    counts = {}
    for d in got:
        counts[by_data[d]] = counts.get(by_data[d], 0) + 1
    missing = [m.uidl for m in g.messages if m.uidl not in counts]
    assert not missing, f"LOST: {missing[:10]}"
    dups = {u: c for u, c in counts.items() if c > 1}
    assert not dups, (f"{len(dups)} second copies after {kills} kills: "
                      f"{sorted(dups.items())[:10]} (caught stored but not "
                      f"plainly recorded: {len(window)})")
    print(f"sigkill {kind} ({size} bytes): {len(g.messages)} messages, {kills} kills, "
          f"{finished} runs finished first, {len(window)} messages caught "
          f"stored and only pending, {torn} torn appends, 0 duplicates, "
          f"{len(runs)} clean runs")


def test_pending_records_after_a_crash(rig):
    """The state a crash leaves between the steps of a Maildir commit,
    made by hand: a UIDL file with pending lines (fetch/uidl-db.h) for
    message 1 (its file renamed into new/), message 2 (moved by a mail
    reader into cur/ with flags), message 3 (its file still whole in
    tmp/: never renamed) and message 4 (no file anywhere: the crash came
    before its file was written, or the reader deleted it).  The next run
    must store 4, 5 and 6 only, move 3 into new/, and delete all six."""
    need_fetch()
    g = rig(n=6, size=900)
    m = g.messages
    t = 1764300000
    (g.dest / "new" / f"{t}.M1P9R1.host,S=1,W=1").write_bytes(lf_form(m[0].data))
    (g.dest / "cur" / f"{t}.M2P9R2.host,S=1,W=1:2,S").write_bytes(lf_form(m[1].data))
    (g.dest / "tmp" / f"{t}.M3P9R3.host").write_bytes(lf_form(m[2].data))
    # A longer name that only starts like message 4's must not count.
    (g.dest / "new" / f"{t}.M4P9R44.host,S=1").write_bytes(b"Subject: other\n\nx\n")
    lines = [f"{t} {len(x.data)} PF {t}.M{i}P9R{i}.host {x.uidl}"
             for i, x in enumerate(m[:4], 1)]
    g.uidl.write_text("popbox-fetch-uidl 1\n" + "\n".join(lines) + "\n")
    r = g.run("-v")
    assert r.rc == EXIT_OK, r
    assert "left 4 messages pending: 3 stored, 1 to fetch again" in r.out, r.out
    assert not list((g.dest / "tmp").iterdir())
    got = [d for d in g.stored() if d != b"Subject: other\n\nx\n"]
    assert_same_messages(got, [x.data for x in m])
    assert g.srv.uidls() == []
    fetched = [c for c in g.srv.log if c.startswith("RETR")]
    assert sorted(fetched) == ["RETR 4", "RETR 5", "RETR 6"], fetched
    # The UIDL file holds no pending line any more.
    assert " P" not in g.uidl.read_text()


def test_pending_mbox_records_after_a_crash(rig):
    """The state a crash leaves in an mbox, made by hand: messages 1 and 2
    appended whole (their pending lines still in the UIDL file: a run
    writes the plain records only at its end), message 3 torn (the kill
    came in the middle of its append, which never ends in an empty line),
    message 4 pending under a Maildir's file name (the destination was a
    Maildir then), message 5 pending at the end of the file (prepared,
    never appended).  The next run must find 1 and 2 stored, fetch 3, 4,
    5 and 6, append 3 whole after the torn piece (which stays), and
    delete all six; and pending names whose bytes are not exactly there
    never count: 2 with one byte of its append changed is fetched again
    (a second copy, never a loss)."""
    need_fetch()
    g = rig(dest_kind="mbox", n=6, size=900)
    m = g.messages
    t = 1764300000
    frm = b"From sender%d@example.org Thu Nov 27 10:00:00 2025\n"
    appends = [frm % i + mbox_quoted(lf_form(x.data)) for i, x in enumerate(m, 1)]
    keys = [bytes([i]) * 16 for i in range(1, 7)]
    a1, a2 = appends[0], appends[1]
    torn3 = appends[2][: len(appends[2]) // 2]
    data = a1 + a2 + torn3
    g.dest.write_bytes(data)
    names = [mbox_append_name(0, a1, keys[0]),
             mbox_append_name(len(a1), a2, keys[1]),
             mbox_append_name(len(a1) + len(a2), appends[2], keys[2]),
             f"{t}.M4P9R4.host",
             mbox_append_name(len(data), mbox_separator(data) + appends[4],
                              keys[4])]
    lines = [f"{t} {len(x.data)} PF {n} {x.uidl}" for n, x in zip(names, m)]
    g.uidl.write_text("popbox-fetch-uidl 1\n" + "\n".join(lines) + "\n")
    g.torn_ends = [len(data)]
    r = g.run("-v")
    assert r.rc == EXIT_OK, r
    assert "left 5 messages pending: 2 stored, 3 to fetch again" in r.out, r.out
    after = g.dest.read_bytes()
    assert after.startswith(data), "the mbox was rewritten"
    whole, torn = g.mbox_appends()
    assert torn == [(len(a1) + len(a2), len(data))], torn
    assert_same_messages(whole, [x.data for x in m])
    assert g.srv.uidls() == []
    fetched = [c for c in g.srv.log if c.startswith("RETR")]
    assert sorted(fetched) == ["RETR 3", "RETR 4", "RETR 5", "RETR 6"], fetched
    assert " P" not in g.uidl.read_text()


def test_pending_mbox_record_not_matching(rig):
    """A pending mbox name whose bytes are not exactly at their place
    (here: one byte of the append changed, as a mail reader rewriting
    the file would) counts as not stored: the message is fetched again,
    a second copy, never deleted unstored."""
    need_fetch()
    g = rig(dest_kind="mbox", n=2, size=900)
    m = g.messages
    t = 1764300000
    a1 = (b"From sender1@example.org Thu Nov 27 10:00:00 2025\n"
          + mbox_quoted(lf_form(m[0].data)))
    name = mbox_append_name(0, a1, b"k" * 16)
    g.dest.write_bytes(a1.replace(b"Subject:", b"subject:", 1))
    g.uidl.write_text(f"popbox-fetch-uidl 1\n{t} {len(m[0].data)} PF {name} "
                      f"{m[0].uidl}\n")
    r = g.run("-v")
    assert r.rc == EXIT_OK, r
    assert "left 1 message pending: 0 stored, 1 to fetch again" in r.out, r.out
    assert sorted(c for c in g.srv.log if c.startswith("RETR")) == [
        "RETR 1", "RETR 2"]
    got = mbox_messages(g.dest)
    assert lf_form(m[0].data) in got and lf_form(m[1].data) in got
    assert len(got) == 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_stops_cleanly(rig, sig):
    """docs/fetch.md: SIGINT/SIGTERM stop at once, without QUIT (the server
    deletes nothing of the session), exit 75; nothing half-stored; the next
    run gets the rest and deletes everything."""
    need_fetch()
    g = rig(n=300, size=3000)
    p = subprocess.Popen([str(FETCH), "-c", str(g.conf)], env=fetch_env(g.home),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while (len(list((g.dest / "new").iterdir())) < 20 and p.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.002)
        assert p.poll() is None, "the run ended before the signal"
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 75, (p.returncode, out, err)
    assert b"AddressSanitizer" not in err and b"runtime error:" not in err, err
    assert g.srv.uidls() == [m.uidl for m in g.messages], "deleted without QUIT?"
    assert "QUIT" not in g.srv.log, g.srv.log[-5:]
    stored = g.stored()              # tmp/ must be clean: nothing half-stored
    assert 20 <= len(stored) < 300
    g.until_clean(g.run())
    g.check_final()


# ---------------------------------------------------------------- OAuth


@pytest.fixture
def oauth_srv(pki):  # noqa: F811
    """fakepop over implicit TLS (the test certificate) taking XOAUTH2 and
    OAUTHBEARER with the token "ya29.test-token" (a Gmail-like shape)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    srv = FakePOP3(make_messages(4, tag="oauth"), user="me@example.com",
                   oauth_token="ya29.test-token", ssl_context=ctx)
    yield srv
    srv.close()


def oauth_conf(tmp_path, srv, pki, mech, token_cmd):  # noqa: F811
    dest = make_maildir(tmp_path / "inbox")
    conf = write_config(tmp_path / "fetch.conf", {"gmail": {
        "host": "localhost", "port": srv.port, "tls": "implicit",
        "ca_file": pki.ca, "user": srv.user, "auth": mech,
        "oauth_token_command": token_cmd, "deliver": f"maildir:{dest}",
        "uidl_file": tmp_path / "gmail.uidl", "timeout": 10}})
    return conf, dest


@pytest.mark.parametrize("mech", ["xoauth2", "oauthbearer"])
def test_oauth(tmp_path, oauth_srv, pki, mech):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    conf, dest = oauth_conf(tmp_path, oauth_srv, pki, mech, "echo ya29.test-token")
    orig = [m.data for m in oauth_srv.messages]
    r = run_fetch(["-c", conf], home, timeout=60)
    assert r.rc == EXIT_OK, r
    assert_same_messages(maildir_messages(dest), orig)
    assert oauth_srv.uidls() == []
    assert oauth_srv.oauth_seen == [(mech.upper(), "me@example.com", "ya29.test-token")]
    assert not oauth_srv.errors, oauth_srv.errors


@pytest.mark.parametrize("mech", ["xoauth2", "oauthbearer"])
def test_oauth_refused(tmp_path, oauth_srv, pki, mech):  # noqa: F811
    """An expired token: the server's error challenge is answered, the run
    fails (exit 1), nothing is fetched, and it does not hang."""
    home = tmp_path / "home"
    home.mkdir()
    conf, dest = oauth_conf(tmp_path, oauth_srv, pki, mech, "echo expired-token")
    r = run_fetch(["-c", conf], home, timeout=60)
    assert r.rc == 1, r
    assert r.err.strip(), r
    assert maildir_messages(dest) == []
    assert len(oauth_srv.uidls()) == 4
    assert not oauth_srv.errors, oauth_srv.errors


def test_oauth_token_command_fails(tmp_path, oauth_srv, pki):  # noqa: F811
    """docs/fetch.md: status 75 of the command is temporary (exit 75),
    another failure permanent (exit 1); no AUTH is sent either way."""
    home = tmp_path / "home"
    home.mkdir()
    for cmd, want in (("exit 75", 75), ("exit 1", 1), ("true", 1)):
        conf, _ = oauth_conf(tmp_path, oauth_srv, pki, "xoauth2", cmd)
        r = run_fetch(["-c", conf], home, timeout=60)
        assert r.rc == want, f"{cmd}: {r!r}"
    assert oauth_srv.oauth_seen == []


# ---------------------------------------------------------------- STLS


@pytest.mark.parametrize("mode", ["ok", "err", "inject"])
def test_stls_answers(tmp_path, pki, mode):  # noqa: F811
    """tls = stls: a refused STLS is an error, never a fallback to clear
    text; a line injected after STLS's +OK (before the handshake) is a
    protocol error; a normal STLS works.  No credential in clear ever."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    msgs = make_messages(3, tag="stls")
    srv = FakePOP3(msgs, stls_context=ctx, stls=mode)
    try:
        home = tmp_path / "home"
        home.mkdir()
        dest = make_maildir(tmp_path / "inbox")
        conf = write_config(tmp_path / "fetch.conf", {"acct": {
            "host": "localhost", "port": srv.port, "tls": "stls",
            "ca_file": pki.ca, "user": srv.user, "password": srv.password,
            "deliver": f"maildir:{dest}", "uidl_file": tmp_path / "a.uidl",
            "timeout": 10}})
        r = run_fetch(["-c", conf], home, timeout=60)
        log = list(srv.log)
        if mode == "ok":
            assert r.rc == EXIT_OK, r
            assert_same_messages(maildir_messages(dest), [m.data for m in msgs])
            # CAPA before STLS, and again after it (before logging in).
            i, u = log.index("STLS"), log.index("USER fetcher")
            assert log.index("CAPA") < i < u and "CAPA" in log[i:u], log
        else:
            assert r.rc == 1, r
            assert r.err.strip(), r
            assert not any(l.startswith(("USER", "PASS", "AUTH", "APOP"))
                           for l in log), f"a credential after a bad STLS: {log}"
            assert maildir_messages(dest) == []
        assert not srv.errors, srv.errors
    finally:
        srv.close()
