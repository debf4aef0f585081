"""Fault injection against the real daemon (issue 3, "Proof, continuously").

1. SIGKILL at every step of UPDATE.  popboxd runs under tests/faults/killshim.c
   (LD_PRELOAD, compiled here with cc; no test hook in popboxd): it numbers
   the file-system calls made after the test arms it (unlink, rename, fsync,
   creating opens, writes and closes of files) and kills the process at the
   Nth.  For N = 1, 2, ... until a QUIT completes unkilled, a clean server
   then checks: every message not marked is there byte for byte, each marked
   one is there whole or gone, LIST/UIDL/RETR agree with the disk, the cache
   is rebuilt and true, nothing is left behind, and the marked survivors can
   still be deleted.
2. A corrupt or hostile popbox.cache (every truncation, huge lengths,
   garbage, symlinks, hard links, a FIFO, directories, a device, another
   owner, oversize) is refused, logged and rebuilt: the login lists the
   truth.  Each hostile cache is a "trap": well formed except for the fault
   and stamped with the Maildir's real mtimes, so trusting it would show.
3. Messages and popbox.lock that are not regular files (symlinks, FIFOs,
   directories, sockets, devices) are never listed, opened through or
   waited on.
"""
import hashlib
import os
import random
import re
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (IS_ROOT, POPBOXD, REPO, USERS, RawPOP3, own, own_tree,
                      wire_form)

PW = {u: pw for u, (_, pw) in USERS.items()}
CACHE = "popbox.cache"
CACHE_TMP = "popbox.cache.tmp"
MAGIC = b"popbox-cache 1\n"
CACHE_FILE_MAX = 512 * 1024 * 1024   # MAILDROP_CACHE_FILE_MAX
# Far more steps than an UPDATE of a few messages takes: a bound, so a
# shim that never fires cannot loop the test for ever.
MAX_STEPS = 60
# A login must not wait on a FIFO: generous for ASan, far below a hang.
NO_HANG = 5.0

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod, chown)")


# ---------------------------------------------------------------- helpers


def parse_cache(data: bytes):
    """((new_ns, cur_ns, scan_ns), [(dir, name, wire_size)]) of a cache file
    in the format of popboxd/maildrop-cache.h; asserts it is well formed."""
    assert data.startswith(MAGIC), data[:40]
    p = len(MAGIC)
    nl = data.index(b"\n", p)
    new_ns, cur_ns, scan_ns, count = map(int, data[p:nl].split(b" "))
    p = nl + 1
    entries = []
    for _ in range(count):
        d, sep = data[p:p + 1], data[p + 1:p + 2]
        assert d in (b"N", b"C") and sep == b" ", data[p:p + 20]
        p += 2
        sp = data.index(b" ", p)
        size = int(data[p:sp])
        p = sp + 1
        sp = data.index(b" ", p)
        nlen = int(data[p:sp])
        p = sp + 1
        name = data[p:p + nlen]
        assert data[p + nlen:p + nlen + 1] == b"\n"
        p += nlen + 1
        entries.append(("new" if d == b"N" else "cur",
                        name.decode("utf-8", "surrogateescape"), size))
    assert data[p:] == b"end %d\n" % count, data[p:]
    return (new_ns, cur_ns, scan_ns), entries


def format_cache(new_ns, cur_ns, scan_ns, entries) -> bytes:
    out = [MAGIC, b"%d %d %d %d\n" % (new_ns, cur_ns, scan_ns, len(entries))]
    for d, name, size in entries:
        n = name.encode("utf-8", "surrogateescape")
        out.append(b"%s %d %d %s\n" % (b"N" if d == "new" else b"C", size,
                                       len(n), n))
    out.append(b"end %d\n" % len(entries))
    return b"".join(out)


def dir_mtimes(md: Path):
    return (os.stat(md / "new").st_mtime_ns, os.stat(md / "cur").st_mtime_ns)


def trap_header(md: Path):
    """Header numbers that make a cache eligible for the fast path: the
    directories' real mtimes, scanned well after them."""
    n, c = dir_mtimes(md)
    return n, c, max(n, c) + 5_000_000_000


def age_dirs(md: Path, seconds=100):
    t = time.time() - seconds
    for sub in ("new", "cur"):
        os.utime(md / sub, (t, t))


def base_name(name: str) -> str:
    return name.split(":", 1)[0]


def disk_messages(md: Path) -> dict:
    """{'new/name': bytes} of the regular files in new/ and cur/."""
    out = {}
    for sub in ("new", "cur"):
        for p in sorted((md / sub).iterdir()):
            if stat.S_ISREG(os.lstat(p).st_mode):
                out[f"{sub}/{p.name}"] = p.read_bytes()
    return out


def session_view(srv, user="alice", retr=True):
    """One session: {uidl: (LIST size, RETR body or None)}."""
    with RawPOP3(srv.host, srv.port) as c:
        c.login(user, PW[user])
        _, listing = c.multi("LIST")
        _, uidls = c.multi("UIDL")
        sizes = dict(l.split() for l in listing.split(b"\r\n")[:-1])
        ids = dict(l.split() for l in uidls.split(b"\r\n")[:-1])
        assert set(sizes) == set(ids), (listing, uidls)
        assert len(set(ids.values())) == len(ids), f"UIDL listed twice: {uidls}"
        out = {}
        for n, u in ids.items():
            body = None
            if retr:
                st, body = c.multi(b"RETR " + n)
                assert st.startswith(b"+OK"), (n, st)
                assert len(body) == int(sizes[n]), (
                    f"LIST {n} says {sizes[n]} octets, RETR gave {len(body)}")
            out[u.decode()] = (int(sizes[n]), body)
        assert c.cmd("QUIT").startswith(b"+OK")
    return out


def assert_view_is_disk(srv, md: Path, user="alice"):
    """What a client sees is exactly what is on disk: one entry per base
    name, UIDL = base name, LIST size and RETR bytes from the file."""
    disk = disk_messages(md)
    want = {base_name(k.split("/", 1)[1]): wire_form(v) for k, v in disk.items()}
    view = session_view(srv, user)
    assert set(view) == set(want), f"listed {sorted(view)}, disk {sorted(want)}"
    for u, (size, body) in view.items():
        assert body == want[u], f"message {u} served wrong"
        assert size == len(want[u])
    return view


def assert_cache_true(md: Path):
    """popbox.cache is a plain file of the mail user listing exactly the
    messages on disk with their wire sizes; no temp file is left."""
    st = os.lstat(md / CACHE)
    assert stat.S_ISREG(st.st_mode), f"{CACHE} is not a regular file"
    assert st.st_nlink == 1
    assert st.st_uid == os.lstat(md).st_uid, f"{CACHE} has another owner"
    _, entries = parse_cache((md / CACHE).read_bytes())
    disk = disk_messages(md)
    got = {f"{d}/{name}": size for d, name, size in entries}
    assert got == {k: len(wire_form(v)) for k, v in disk.items()}, (
        f"cache {got} does not match the disk {sorted(disk)}")
    assert not (md / CACHE_TMP).exists(), f"{CACHE_TMP} left behind"


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- the shim


@pytest.fixture(scope="session")
def killshim(tmp_path_factory):
    """tests/faults/killshim.c compiled to a shared object, and the
    LD_PRELOAD value for it (after the sanitizer runtime, which must come
    first when popboxd is an ASan build)."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build the kill shim")
    out = tmp_path_factory.mktemp("killshim") / "killshim.so"
    src = REPO / "tests" / "faults" / "killshim.c"
    r = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-Wall", "-Wextra",
                        "-Wformat=2", "-Wshadow", "-Werror", "-o", str(out),
                        str(src), "-ldl"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"building the kill shim failed:\n{r.stderr}"
    os.chmod(out.parent, 0o755)
    os.chmod(out, 0o755)
    preload = [str(out)]
    ldd = subprocess.run(["ldd", str(POPBOXD)], capture_output=True,
                         text=True, timeout=30).stdout
    m = re.search(r"(libasan\.so\S*) => (\S+)", ldd)
    if m:
        preload.insert(0, m.group(2))
    return " ".join(preload)


# Six messages, three in new/, three in cur/, in several naming styles and
# line-end conventions; the marked ones are in both directories.
UPDATE_MSGS = [
    ("new", "1700000001.M1P1.host,S={S},W={W}", True,
     b"Subject: del new 1\n\nbody\n.dot\n"),
    ("new", "1700000002.M2P1.host", False,
     b"Subject: keep new 2\r\n\r\nkeep\r\n"),
    ("new", "1700000003.M3P1.host", True,
     b"Subject: del new 3\n\nno final newline"),
    ("cur", "1700000004.M4P1.host:2,S", True,
     b"Subject: del cur 4\n\n" + b"x" * 5000 + b"\n"),
    ("cur", "1700000005.M5P1.host,S={S}:2,RS", False,
     b"Subject: keep cur 5\n\n\xc3\xa4\n"),
    ("cur", "1700000006.M6P1.host:2,", True,
     b"Subject: del cur 6\n\nsix\n"),
]


def fill(name, data):
    return (name.replace("{S}", str(len(data)))
                .replace("{W}", str(len(wire_form(data)))))


def load_update_maildrop(env):
    """The six messages, directories aged so the cache written by the next
    login may be used without a scan; {'sub/name': (bytes, marked)}."""
    md = env.maildir("alice")
    env.clear("alice")
    out = {}
    for sub, name, marked, data in UPDATE_MSGS:
        name = fill(name, data)
        env.deliver("alice", data, name=name, subdir=sub)
        out[f"{sub}/{name}"] = (data, marked)
    age_dirs(md)
    return out


def run_update_under_shim(env, server, killshim, at, when, tag, **settings):
    """One session under the shim: login, DELE the marked messages, arm,
    QUIT.  settings: config overrides (test_retention: keep_days).
    Returns (killed, trace lines)."""
    md = env.maildir("alice")
    arm = env.root / f"arm-{tag}"
    trace = env.root / f"trace-{tag}"
    for p in (arm, trace):
        if p.exists():
            p.unlink()
    # Appendable by every process the daemon runs, whatever its user.
    trace.touch()
    os.chmod(trace, 0o666)
    s = server(**settings,
               _env={"LD_PRELOAD": killshim, "POPBOX_KILL_AT": str(at),
                     "POPBOX_KILL_WHEN": when, "POPBOX_KILL_ARM": str(arm),
                     "POPBOX_KILL_TRACE": str(trace)})
    marked = {base_name(fill(n, d)) for _, n, m, d in UPDATE_MSGS if m}
    c = RawPOP3(s.host, s.port, timeout=20)
    try:
        c.login("alice", PW["alice"])
        _, uidls = c.multi("UIDL")
        for line in uidls.split(b"\r\n")[:-1]:
            n, u = line.decode().split(" ")
            if u in marked:
                assert c.cmd(f"DELE {n}").startswith(b"+OK")
        assert c.cmd("STAT").startswith(b"+OK %d " % (6 - len(marked)))
        arm.touch()
        c.send("QUIT\r\n")
        try:
            reply = c.readline()
        except (EOFError, ConnectionResetError):
            reply = None
    finally:
        c.close()
    lines = trace.read_text().splitlines()
    kills = [l.split() for l in lines if l.startswith("kill ")]
    killed = bool(kills)
    if killed:
        assert len(kills) == 1, lines
        # No +OK for an UPDATE that did not finish: the connection just
        # ends (or, through a relay, ends with an -ERR).
        assert reply is None or reply.startswith(b"-ERR"), (
            f"QUIT answered {reply!r} though UPDATE was killed:\n{s.log()}")
        if int(kills[0][1]) == s.pid:
            # One process: the whole server was killed.
            rc = s.proc.wait(timeout=20)
            assert rc == -9, f"popboxd ended with {rc}, not SIGKILL:\n{s.log()}"
    else:
        assert reply is not None, f"connection lost, but no kill:\n{s.log()}"
        assert reply.startswith(b"+OK"), f"QUIT: {reply!r}\n{s.log()}"
        assert s.proc.poll() is None, "popboxd died after answering QUIT"
    s.stop()
    arm.unlink()
    return killed, lines


def check_after_update(env, checker, before, completed):
    """The state after a (possibly killed) UPDATE, seen by a clean server."""
    md = env.maildir("alice")
    disk = disk_messages(md)
    for path, (data, marked) in before.items():
        if not marked:
            assert disk.get(path) == data, f"unmarked {path} lost or changed"
        elif path in disk:
            assert not completed, f"{path} survived a completed UPDATE"
            assert disk[path] == data, f"marked {path} half-removed"
    assert set(disk) <= set(before), f"unexpected files {set(disk) - set(before)}"
    assert list((md / "tmp").iterdir()) == [], "files left in tmp/"
    # A login lists exactly the disk, twice alike, and rebuilds the cache.
    first = assert_view_is_disk(checker, md)
    assert session_view(checker) == first, "second login lists differently"
    assert_cache_true(md)
    # The client sees the survivors again and can finish the job.
    with RawPOP3(checker.host, checker.port) as c:
        c.login("alice", PW["alice"])
        _, uidls = c.multi("UIDL")
        marked = {base_name(p.split("/", 1)[1])
                  for p, (_, m) in before.items() if m}
        for line in uidls.split(b"\r\n")[:-1]:
            n, u = line.decode().split(" ")
            if u in marked:
                assert c.cmd(f"DELE {n}").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"+OK")
    assert disk_messages(md) == {p: d for p, (d, m) in before.items() if not m}
    assert_view_is_disk(checker, md)
    assert_cache_true(md)


def steps_of(trace):
    """The counted steps of the process that did the most of them (the one
    that ran UPDATE): [(seq, kind, call, path)]."""
    by_pid = {}
    for l in trace:
        if not l.startswith("kill "):
            pid, rest = l.split(" ", 1)
            by_pid.setdefault(pid, []).append(rest.split(" ", 3))
    return max(by_pid.values(), key=len) if by_pid else []


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_at_every_step_of_update(env, server, killshim, when):
    """For N = 1, 2, ...: SIGKILL before (or right after) the Nth
    file-system call of UPDATE, until an UPDATE completes unkilled."""
    checker = server()
    killed_at = []
    for n in range(1, MAX_STEPS + 1):
        before = load_update_maildrop(env)
        # A cache eligible for the fast path, as a real mail user would have.
        assert_view_is_disk(checker, env.maildir("alice"))
        killed, trace = run_update_under_shim(env, server, killshim, n, when,
                                              f"{when}-{n}")
        steps = steps_of(trace)
        if killed:
            assert trace[-1].startswith("kill ") and \
                trace[-1].endswith(f" {n}"), trace
            assert len(steps) == n, trace
            killed_at.append(" ".join(steps[-1][1:3]))
        else:
            assert len(steps) == n - 1 and not any(
                l.startswith("kill") for l in trace), trace
        check_after_update(env, checker, before, completed=not killed)
        if not killed:
            break
    else:
        pytest.fail(f"UPDATE still killed after {MAX_STEPS} steps")
    # What UPDATE did, each step of which was a kill point: the marked
    # messages unlinked, then new/ and cur/ fsynced, then the cache written
    # to a temp file and renamed into place, then the lock released (all
    # before the +OK).
    kinds = [s[1] for s in steps]
    paths = [s[3] for s in steps]
    listing = "\n".join(" ".join(s) for s in steps)
    marked = sorted(p for p, (_, m) in before.items() if m)
    assert sorted(p.split("/Maildir/", 1)[1] for p in paths[:4]) == marked, \
        listing
    assert kinds[:4] == ["unlink"] * 4, listing
    assert kinds[4:6] == ["fsync"] * 2, listing
    assert {p.rstrip("/").rsplit("/", 1)[1] for p in paths[4:6]} == \
        {"new", "cur"}, listing
    last_rename = len(kinds) - 1 - kinds[::-1].index("rename")
    assert paths[last_rename].endswith("/" + CACHE), listing
    assert {"open", "write"} <= set(kinds[6:last_rename]), listing
    assert paths[-1].endswith("/popbox.lock") and kinds[-1] == "close", listing
    assert len(killed_at) == n - 1 >= 12, killed_at


@pytest.mark.parametrize("at,removed", [
    ("unlink:1", 0), ("unlink:2", 1), ("unlink:4", 3),
    ("fsync:1", 4), ("fsync:2", 4), ("open:1", 4), ("rename:1", 4),
])
def test_sigkill_at_named_step(env, server, killshim, at, removed):
    """POPBOX_KILL_AT=kind:N: the kill lands where it says, and UPDATE is
    all-or-nothing per message, in listing order."""
    checker = server()
    before = load_update_maildrop(env)
    assert_view_is_disk(checker, env.maildir("alice"))
    killed, trace = run_update_under_shim(env, server, killshim, at, "before",
                                          at.replace(":", "-"))
    assert killed, trace
    assert steps_of(trace)[-1][1] == at.split(":")[0], trace
    md = env.maildir("alice")
    gone = [p for p, (_, m) in before.items() if m and not (md / p).exists()]
    marked_in_order = [p for p, (_, m) in before.items() if m]
    assert gone == marked_in_order[:removed], gone
    if at == "rename:1":
        # The temp cache was written but never renamed into place.
        assert (md / CACHE_TMP).exists()
    check_after_update(env, checker, before, completed=False)


# ---------------------------------------------------------------- the cache


CACHE_MSGS = [
    ("new", "1700000101.M1P1.host", b"Subject: a\n\nalpha\n"),
    ("cur", "1700000102.M2P1.host:2,S", b"Subject: b\r\n\r\nbeta\r\n"),
    ("new", "1700000103.M3P1.host,S={S},W={W}", b"Subject: c\n\n.gamma\n"),
]


@pytest.fixture
def cached(env, server):
    """alice with three messages and a good, fast-path cache; returns
    (server, maildir, the truth a login must show)."""
    for sub, name, data in CACHE_MSGS:
        env.deliver("alice", data, name=fill(name, data), subdir=sub)
    md = env.maildir("alice")
    age_dirs(md)
    s = server()
    truth = assert_view_is_disk(s, md)
    assert_cache_true(md)
    return s, md, truth


def plant(md: Path, data: bytes, owner=True):
    p = md / CACHE
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
    p.write_bytes(data)
    if owner:
        own(p)


def trap(md: Path, entries=None) -> bytes:
    """A well-formed cache with the Maildir's mtimes that lists a ghost and
    wrong sizes: trusted, it would show."""
    if entries is None:
        _, entries = parse_cache((md / CACHE).read_bytes())
        entries = [(d, n, s + 1000) for d, n, s in entries] + \
            [("new", "1700000999.ghost", 42)]
    return format_cache(*trap_header(md), entries)


def expect_rebuilt(s, md, truth, rejected=True, timeout=NO_HANG):
    """A login lists the truth (promptly), the cache is rebuilt, and the
    rejection was logged."""
    n0 = s.log().count("event=cache-rejected")
    t0 = time.monotonic()
    view = session_view(s, retr=False)
    assert time.monotonic() - t0 < timeout, "login waited on the cache"
    assert {u: sz for u, (sz, _) in view.items()} == \
        {u: sz for u, (sz, _) in truth.items()}, "listing trusted a bad cache"
    assert_cache_true(md)
    if rejected:
        assert s.log().count("event=cache-rejected") > n0, \
            f"the rejected cache was not logged:\n{s.log()}"


def test_trap_is_armed(cached):
    """Control: a well-formed cache with current mtimes is trusted as it
    stands (that is what makes the fast path fast), so a trap that is not
    refused would show its ghost."""
    s, md, truth = cached
    plant(md, trap(md))
    view = session_view(s, retr=False)
    assert "1700000999.ghost" in view


def test_cache_truncated_at_every_offset(cached):
    s, md, truth = cached
    good = (md / CACHE).read_bytes()
    parse_cache(good)
    for cut in range(len(good)):
        plant(md, good[:cut])
        expect_rebuilt(s, md, truth)


def test_cache_huge_lengths_and_numbers(cached):
    s, md, truth = cached
    n, c, scan = trap_header(md)
    head = MAGIC + b"%d %d %d " % (n, c, scan)
    _, entries = parse_cache((md / CACHE).read_bytes())
    real = format_cache(n, c, scan, entries).split(b"\n", 2)[2]
    real = real[:real.rindex(b"end ")]
    cnt = len(entries)
    bad = [
        head + b"%d\n" % (cnt + 1) + real + b"N 7 18446744073709551615 g\nend %d\n" % (cnt + 1),
        head + b"%d\n" % (cnt + 1) + real + b"N 7 18446744073709551616 g\nend %d\n" % (cnt + 1),
        head + b"%d\n" % (cnt + 1) + real + b"N 7 " + b"9" * 40 + b" g\nend %d\n" % (cnt + 1),
        head + b"%d\n" % (cnt + 1) + real + b"N 7 256 " + b"g" * 256 + b"\nend %d\n" % (cnt + 1),
        head + b"%d\n" % (cnt + 1) + real + b"N 7 200 g\nend %d\n" % (cnt + 1),
        head + b"%d\n" % (cnt + 1) + real + b"N 18446744073709551615 1 g\nend %d\n" % (cnt + 1),
        head + b"%d\n" % (cnt + 1) + real + b"N 281474976710657 1 g\nend %d\n" % (cnt + 1),
        head + b"1000001\n" + real + b"end 1000001\n",
        head + b"18446744073709551615\n" + real + b"end 18446744073709551615\n",
        head + b"18446744073709551616\n" + real + b"end 18446744073709551616\n",
        head + b"%d\n" % (cnt + 5) + real + b"end %d\n" % (cnt + 5),
        head + b"%d\n" % (cnt - 1) + real + b"end %d\n" % (cnt - 1),
        MAGIC + b"9223372036854775808 %d %d %d\n" % (c, scan, cnt) + real + b"end %d\n" % cnt,
        MAGIC + b"%d %d 99999999999999999999 %d\n" % (n, c, cnt) + real + b"end %d\n" % cnt,
        head + b"%d\n" % (cnt + 1) + real + b"N 7 9 ../../x/g\nend %d\n" % (cnt + 1),
        head + b"%d\n" % (cnt + 1) + real + b"N 7 3 g\x00h\nend %d\n" % (cnt + 1),
        head + b"%d\n" % (cnt + 1) + real + b"N 7 7 .hidden\nend %d\n" % (cnt + 1),
    ]
    for data in bad:
        plant(md, data)
        expect_rebuilt(s, md, truth)


def test_cache_garbage(cached):
    s, md, truth = cached
    rnd = random.Random(3)
    head = MAGIC + b"%d %d %d " % trap_header(md)
    for i in range(40):
        body = bytes(rnd.choice(b"0123456789 \nNCend:.ghost\x00\xff")
                     for _ in range(rnd.randrange(0, 400)))
        plant(md, (head if i % 2 else b"") + body)
        expect_rebuilt(s, md, truth)


def test_cache_symlink_to_etc_passwd(cached):
    s, md, truth = cached
    before = sha("/etc/passwd"), os.stat("/etc/passwd").st_mtime_ns
    (md / CACHE).unlink()
    os.symlink("/etc/passwd", md / CACHE)
    expect_rebuilt(s, md, truth)
    assert (sha("/etc/passwd"), os.stat("/etc/passwd").st_mtime_ns) == before


def test_cache_symlink_to_another_users_file(env, cached):
    """A readable, well-formed trap behind a symlink (another user's cache
    file, and a root-owned one): never followed, never written through."""
    s, md, truth = cached
    other = env.maildir("bob") / CACHE
    other.write_bytes(trap(md))
    own(other)
    rootfile = env.root / "root-owned-cache"
    rootfile.write_bytes(trap(md))
    os.chmod(rootfile, 0o644)
    for target in (other, rootfile):
        digest = sha(target)
        (md / CACHE).unlink()
        os.symlink(target, md / CACHE)
        own(md / CACHE)
        expect_rebuilt(s, md, truth)
        assert sha(target) == digest, f"{target} was written through"


def test_cache_hard_link(env, cached):
    s, md, truth = cached
    outside = env.mail_root / "alice" / "linked-cache"
    outside.write_bytes(trap(md))
    own(outside)
    digest = sha(outside)
    (md / CACHE).unlink()
    os.link(outside, md / CACHE)
    expect_rebuilt(s, md, truth)
    assert sha(outside) == digest and os.stat(outside).st_nlink == 1


@needs_root
def test_cache_owned_by_another_user(cached):
    s, md, truth = cached
    plant(md, trap(md), owner=False)       # root's, readable by all
    os.chmod(md / CACHE, 0o644)
    expect_rebuilt(s, md, truth)


def test_cache_fifo_does_not_block(cached):
    s, md, truth = cached
    (md / CACHE).unlink()
    os.mkfifo(md / CACHE)
    own(md / CACHE)
    expect_rebuilt(s, md, truth)


def test_cache_directory_in_its_place(cached):
    s, md, truth = cached
    (md / CACHE).unlink()
    (md / CACHE).mkdir()
    own(md / CACHE)
    expect_rebuilt(s, md, truth)
    # A non-empty one is not ours to empty: the listing is still right
    # (scanned every time), its content untouched, the failure logged.
    (md / CACHE).unlink()
    (md / CACHE).mkdir()
    (md / CACHE / "keep").write_bytes(b"keep\n")
    own_tree(md / CACHE)
    for _ in range(2):
        view = session_view(s)
        assert {u: sz for u, (sz, _) in view.items()} == \
            {u: sz for u, (sz, _) in truth.items()}
    assert (md / CACHE / "keep").read_bytes() == b"keep\n"
    assert not (md / CACHE_TMP).exists()
    s.wait_log(r"event=cache-not-written maildrop=\S+ error=\"popbox.cache "
               r"is a non-empty directory\"")
    shutil.rmtree(md / CACHE)
    expect_rebuilt(s, md, truth, rejected=False)


@needs_root
def test_cache_device(cached):
    s, md, truth = cached
    (md / CACHE).unlink()
    os.mknod(md / CACHE, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    expect_rebuilt(s, md, truth)


def test_cache_oversize(cached):
    s, md, truth = cached
    plant(md, trap(md))
    os.truncate(md / CACHE, CACHE_FILE_MAX + 1)   # sparse: no disk used
    expect_rebuilt(s, md, truth)


def test_cache_temp_name_taken(cached):
    """popbox.cache.tmp as a symlink, a FIFO or an empty directory: cleared,
    never written through."""
    s, md, truth = cached
    target = md.parent / "tmp-target"
    for kind in ("symlink", "fifo", "dir"):
        (md / CACHE).unlink()                 # forces a rewrite
        if kind == "symlink":
            os.symlink(target, md / CACHE_TMP)
        elif kind == "fifo":
            os.mkfifo(md / CACHE_TMP)
        else:
            (md / CACHE_TMP).mkdir()
        os.lchown(md / CACHE_TMP, *(os.lstat(md).st_uid, os.lstat(md).st_gid))
        expect_rebuilt(s, md, truth, rejected=False)
        assert not target.exists()


# ---------------------------------------------------------------- messages


def test_non_files_among_messages(env, server):
    """Symlinks (to /etc/passwd, to another message, dangling), a FIFO, a
    socket, a directory and (as root) a device in new/ and cur/: never
    listed, never waited on, never removed by DELE + QUIT."""
    md = env.maildir("alice")
    real = {}
    for i, sub in enumerate(("new", "cur")):
        name = f"170000020{i}.M{i}P1.host" + (":2,S" if sub == "cur" else "")
        real[f"{sub}/{name}"] = b"Subject: real %d\n\nreal\n" % i
        env.deliver("alice", real[f"{sub}/{name}"], name=name, subdir=sub)
    passwd = sha("/etc/passwd")
    specials = [
        ("new/1700000300.M1P1.passwd", lambda p: os.symlink("/etc/passwd", p)),
        ("new/1700000301.M1P1.passwd,S=10,W=12", lambda p: os.symlink("/etc/passwd", p)),
        ("cur/1700000302.M1P1.dup:2,S",
         lambda p: os.symlink("../new/1700000200.M0P1.host", p)),
        ("cur/1700000303.M1P1.dangling:2,", lambda p: os.symlink("/nonexistent", p)),
        ("new/1700000304.M1P1.fifo", os.mkfifo),
        ("cur/1700000305.M1P1.fifo:2,S", os.mkfifo),
        ("new/1700000306.M1P1.dir", os.mkdir),
        ("new/1700000307.M1P1.sock", None),
    ]
    if IS_ROOT:
        specials.append(("new/1700000308.M1P1.dev",
                         lambda p: os.mknod(p, 0o666 | stat.S_IFCHR,
                                            os.makedev(1, 3))))
    socks = []
    for rel, make in specials:
        p = md / rel
        if make is None:
            so = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            so.bind(str(p))
            socks.append(so)
        else:
            make(p)
        os.lchown(p, os.lstat(md).st_uid, os.lstat(md).st_gid)
    age_dirs(md)
    s = server()
    for _ in range(2):                        # by scan, then by cache
        t0 = time.monotonic()
        assert_view_is_disk(s, md)
        assert time.monotonic() - t0 < NO_HANG
    with RawPOP3(s.host, s.port, timeout=NO_HANG * 2) as c:
        c.login("alice", PW["alice"])
        assert c.cmd("STAT").startswith(b"+OK 2 ")
        assert c.cmd("DELE 1").startswith(b"+OK")
        assert c.cmd("DELE 2").startswith(b"+OK")
        assert c.cmd("DELE 3").startswith(b"-ERR")
        assert c.cmd("QUIT").startswith(b"+OK")
    for rel, _ in specials:
        assert os.path.lexists(md / rel), f"{rel} was removed"
    assert disk_messages(md) == {}
    assert sha("/etc/passwd") == passwd
    for so in socks:
        so.close()


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dir"])
def test_message_replaced_during_session(env, server, kind):
    """A listed message becomes a FIFO, a symlink or a directory while the
    session is open: RETR fails at once, the session goes on, UPDATE
    removes the other marked message and leaves the intruder alone."""
    md = env.maildir("alice")
    p1 = env.deliver("alice", b"Subject: one\n\nfirst\n", name="1700000401.M1P1.host")
    env.deliver("alice", b"Subject: two\n\nsecond\n", name="1700000402.M2P1.host")
    s = server()
    with RawPOP3(s.host, s.port, timeout=NO_HANG * 2) as c:
        c.login("alice", PW["alice"])
        assert c.cmd("STAT").startswith(b"+OK 2 ")
        p1.unlink()
        if kind == "fifo":
            os.mkfifo(p1)
        elif kind == "symlink":
            os.symlink("/etc/passwd", p1)
        else:
            p1.mkdir()
        os.lchown(p1, os.lstat(md).st_uid, os.lstat(md).st_gid)
        t0 = time.monotonic()
        r = c.cmd("RETR 1")
        assert r.startswith(b"-ERR [SYS/PERM]"), r
        assert time.monotonic() - t0 < NO_HANG
        assert c.cmd("NOOP") == b"+OK"
        st, body = c.multi("RETR 2")
        assert body == b"Subject: two\r\n\r\nsecond\r\n"
        assert c.cmd("DELE 2").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"+OK")
    assert os.path.lexists(p1)
    assert disk_messages(md) == {}


@pytest.mark.parametrize("kind", ["symlink", "dangling", "fifo", "dir", "device"])
def test_lock_file_not_a_regular_file(env, server, kind):
    """popbox.lock that is not a regular file: the login is refused with
    [SYS/PERM] at once, and what a symlink points to is not touched."""
    if kind == "device" and not IS_ROOT:
        pytest.skip("mknod needs root")
    md = env.maildir("alice")
    env.deliver("alice", b"Subject: x\n\nx\n")
    lock = md / "popbox.lock"
    target = env.root / "lock-target"
    target.write_bytes(b"not a lock\n")
    os.utime(target, (1_000_000_000, 1_000_000_000))
    if kind == "symlink":
        os.symlink("/etc/passwd", lock)
    elif kind == "dangling":
        os.symlink(target.with_name("nowhere"), lock)
    elif kind == "fifo":
        os.mkfifo(lock)
    elif kind == "dir":
        lock.mkdir()
    else:
        os.mknod(lock, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.lchown(lock, os.lstat(md).st_uid, os.lstat(md).st_gid)
    passwd = sha("/etc/passwd"), os.stat("/etc/passwd").st_mtime_ns
    s = server()
    with RawPOP3(s.host, s.port, timeout=NO_HANG * 2) as c:
        assert c.cmd("USER alice").startswith(b"+OK")
        t0 = time.monotonic()
        r = c.cmd("PASS " + PW["alice"])
        assert r.startswith(b"-ERR [SYS/PERM]"), r
        assert time.monotonic() - t0 < NO_HANG
    assert (sha("/etc/passwd"), os.stat("/etc/passwd").st_mtime_ns) == passwd
    assert not target.with_name("nowhere").exists()
    if lock.is_dir() and not lock.is_symlink():
        lock.rmdir()
    else:
        lock.unlink()
    assert len(session_view(s)) == 1
    assert stat.S_ISREG(os.lstat(lock).st_mode)
