"""Keeping mail for some time (issue 5): the retention policy end to end.

1. CAPA EXPIRE before and after login: the site default (NEVER, or a
   number with USER before login) and an account's own expire_days.
2. pop3=no: the right password gets "-ERR [AUTH] POP access is disabled",
   a wrong one the ordinary failure, and the maildrop is never opened.
3. keep_days: DELE + QUIT moves messages to the .Kept folder (",K=" in the
   name, bytes and mtime unchanged) instead of unlinking them.
4. `popbox expire`: removes exactly what the policy no longer keeps, at
   boundary ages on both sides, with per-account overrides, a dry run, a
   maildrop locked by a session, bad passwd lines and failing maildrops;
   never touches the time of the last login (LOGIN-DELAY).
5. SIGKILL at every file-system step of an UPDATE that keeps: every marked
   message is either still in the maildrop or in .Kept, whole, never both,
   never neither; the unmarked ones are untouched.
"""
import base64
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import POPBOX, USERS, RawPOP3, own, own_tree
from test_faults import (MAX_STEPS, age_dirs, assert_cache_true,
                         assert_view_is_disk, base_name, disk_messages,
                         killshim, load_update_maildrop, run_update_under_shim,
                         steps_of)

PW = {u: pw for u, (_, pw) in USERS.items()}
DAY = 86400
# Clearly on one side of a boundary, whatever the test's own run time.
MARGIN = 120
KEPT = ".Kept"
K_FIELD = re.compile(r",K=(\d+)(?=[,:]|$)")

assert killshim  # a fixture, imported for the fault tests below


# ---------------------------------------------------------------- helpers


def set_fields(env, user, fields):
    """Gives user's passwd-file line these extra fields (None: none)."""
    h = env.hashes.get(user) or env.hashes["alice"]
    env.hashes.pop(user, None)
    env.extra_passwd_lines = [l for l in env.extra_passwd_lines
                              if not l.startswith(user + ":")]
    env.extra_passwd_lines.append(f"{user}:{h}::::::{fields or ''}")
    env.write_passwd()


def capa(c) -> dict:
    status, body = c.multi("CAPA")
    assert status.startswith(b"+OK"), status
    out = {}
    for line in body.decode().split("\r\n")[:-1]:
        words = line.split(" ")
        out[words[0]] = words[1:]
    return out


def capa_expire(srv, user=None, password=None):
    """(EXPIRE before login, EXPIRE after login as user or None)."""
    with RawPOP3(srv.host, srv.port) as c:
        before = capa(c)["EXPIRE"]
        after = None
        if user is not None:
            c.login(user, password or PW.get(user, PW["alice"]))
            after = capa(c)["EXPIRE"]
        c.cmd("QUIT")
    return before, after


def expire_conf(env, **overrides) -> Path:
    conf = env.root / "expire.conf"
    conf.write_text(env.config_text(**overrides))
    return conf


def run_expire(env, *args, conf=None, **overrides):
    conf = conf or expire_conf(env, **overrides)
    r = subprocess.run([str(POPBOX), "expire", "-c", str(conf), *args],
                       capture_output=True, timeout=60)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert "Sanitizer" not in err and "runtime error" not in err, err
    return r.returncode, out, err


def user_line(out, user):
    m = re.search(rf"^{re.escape(user)}: (\d+) messages, (\d+) bytes "
                  rf"(removed|would be removed) \((\d+) expired, (\d+) kept\)$",
                  out, re.M)
    if m is None:
        return None
    return {"messages": int(m[1]), "bytes": int(m[2]), "expired": int(m[4]),
            "kept": int(m[5]), "dry": m[3] != "removed"}


def summary(out):
    m = re.search(r"^expire: (\d+) accounts, (\d+) with removals: (\d+) "
                  r"messages, (\d+) bytes .*; (\d+) skipped \(in use\), "
                  r"(\d+) failed$", out, re.M)
    assert m, f"no summary line:\n{out}"
    return dict(zip(("accounts", "with", "messages", "bytes", "skipped",
                     "failed"), map(int, m.groups())))


def put(env, user, data, age, subdir="new", name=None, now=None) -> Path:
    """A message whose mtime is `age` seconds before now."""
    p = env.deliver(user, data, name=name, subdir=subdir)
    t = (now or time.time()) - age
    os.utime(p, (t, t))
    return p


def kept_dir(env, user) -> Path:
    return env.maildir(user) / KEPT


def put_kept(env, user, name, data, subdir="cur", mtime=None) -> Path:
    """A file in .Kept as if UPDATE had put it there."""
    k = kept_dir(env, user)
    for sub in ("tmp", "new", "cur"):
        (k / sub).mkdir(parents=True, exist_ok=True)
    p = k / subdir / name
    p.write_bytes(data)
    if mtime is not None:
        os.utime(p, (mtime, mtime))
    own_tree(k)
    return p


def kept_files(env, user) -> dict:
    """{'new/name' or 'cur/name': bytes} of the regular files in .Kept."""
    k = kept_dir(env, user)
    out = {}
    for sub in ("new", "cur"):
        d = k / sub
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if stat.S_ISREG(os.lstat(p).st_mode):
                    out[f"{sub}/{p.name}"] = p.read_bytes()
    return out


def strip_k(name: str) -> str:
    return K_FIELD.sub("", name)


def delete_and_quit(srv, user, pick):
    """Logs in, DELEs the messages whose UIDL pick(uidl) is true, QUITs.
    Returns the QUIT reply."""
    with RawPOP3(srv.host, srv.port) as c:
        c.login(user, PW[user])
        _, uidls = c.multi("UIDL")
        for line in uidls.decode().split("\r\n")[:-1]:
            n, u = line.split(" ")
            if pick(u):
                assert c.cmd(f"DELE {n}").startswith(b"+OK")
        return c.cmd("QUIT")


# ---------------------------------------------------------------- CAPA EXPIRE


def test_capa_expire_never(env, server):
    """Site default NEVER: NEVER before login (USER may not follow NEVER,
    RFC 2449 section 9) and after it, for every account: an account's own
    expire_days would break the promise made before login, so it is
    ignored under a never site."""
    set_fields(env, "bob", "expire_days=7")
    s = server()
    assert capa_expire(s, "alice") == (["NEVER"], ["NEVER"])
    assert capa_expire(s, "bob") == (["NEVER"], ["NEVER"])


def test_capa_expire_number(env, server):
    """Site default 30: "30 USER" before login, the account's value after."""
    set_fields(env, "bob", "expire_days=7")
    set_fields(env, "carol", "userdb_expire_days=never")
    s = server(expire_days=30)
    assert capa_expire(s, "alice") == (["30", "USER"], ["30"])
    assert capa_expire(s, "bob") == (["30", "USER"], ["7"])
    assert capa_expire(s, "carol") == (["30", "USER"], ["NEVER"])


# ---------------------------------------------------------------- pop3=no


DISABLED = b"-ERR [AUTH] POP access is disabled for this account"


def test_pop3_disabled(env, server):
    set_fields(env, "fred", "pop3=no")
    md = env.maildir("fred")
    env.deliver("fred", b"Subject: for fred\n\nhi\n")
    s = server()
    start = len(s.log())
    # The right password: verified, then refused with its own text, and
    # the session ends there (it was handed to a mail process).
    with RawPOP3(s.host, s.port) as c:
        assert c.cmd("USER fred").startswith(b"+OK")
        assert c.cmd(f"PASS {PW['alice']}") == DISABLED
        assert c.wait_closed(), "connection left open after the refusal"
    s.wait_log(r"event=login-refused session=\S+ user=fred rip=127\.0\.0\.1 "
               r"reason=pop-disabled", start=start)
    # SASL PLAIN takes the same path.
    with RawPOP3(s.host, s.port) as c:
        cred = base64.b64encode(b"\0fred\0" + PW["alice"].encode())
        assert c.cmd(b"AUTH PLAIN " + cred) == DISABLED
    # Not an authentication failure (nothing for a ban list to count).
    assert "event=auth-failed" not in s.log()[start:], s.log()[start:]
    # A wrong password: word for word what any failure says.
    replies = []
    for user, pw in (("fred", "wrong"), ("alice", "wrong"),
                     ("nosuchuser", "wrong")):
        with RawPOP3(s.host, s.port) as c:
            assert c.cmd(f"USER {user}").startswith(b"+OK")
            replies.append(c.cmd(f"PASS {pw}"))
    assert replies[0] == replies[1] == replies[2] == \
        b"-ERR [AUTH] invalid user name or password", replies
    log = s.log()[start:]
    assert not re.search(r"event=login session=\S+ user=fred", log), log
    # The maildrop was never opened: no lock file, no cache.
    assert not (md / "popbox.lock").exists()
    assert not (md / "popbox.cache").exists()
    # pop3=yes (explicit) logs in as usual.
    set_fields(env, "fred", "pop3=yes")
    with RawPOP3(s.host, s.port) as c:
        c.login("fred", PW["alice"])
        assert c.cmd("STAT").startswith(b"+OK 1 ")


# ---------------------------------------------------------------- keep_days


def test_keep_moves_deleted_to_kept(env, server):
    a = put(env, "alice", b"Subject: a\n\nalpha\n", 5 * DAY,
            name="1700000001.M1P1.host,S=18")
    b = put(env, "alice", b"Subject: b\r\n\r\nbeta\r\n", 5 * DAY,
            subdir="cur", name="1700000002.M2P1.host:2,S")
    c_ = put(env, "alice", b"Subject: c\n\ngamma\n", 5 * DAY,
             name="1700000003.M3P1.host")
    mtimes = {p.name: os.stat(p).st_mtime for p in (a, b, c_)}
    s = server(keep_days=3)
    t0 = int(time.time())
    reply = delete_and_quit(s, "alice", lambda u: u != "1700000003.M3P1.host")
    t1 = int(time.time())
    assert reply == b"+OK popbox signing off (2 messages deleted)", reply
    # Out of the POP3 view; the third is untouched.
    assert set(env.files("alice")) == {"new/1700000003.M3P1.host"}
    kept = kept_files(env, "alice")
    assert {strip_k(k) for k in kept} == {"new/1700000001.M1P1.host,S=18",
                                          "cur/1700000002.M2P1.host:2,S"}, kept
    for k, data in kept.items():
        since = int(K_FIELD.search(k)[1])
        assert t0 <= since <= t1, (k, t0, t1)
        orig = {"1700000001.M1P1.host,S=18": b"Subject: a\n\nalpha\n",
                "1700000002.M2P1.host:2,S": b"Subject: b\r\n\r\nbeta\r\n"}
        name = strip_k(k.split("/", 1)[1])
        assert data == orig[name], k
        # The delivery time is kept: only the name says when it was DELEted.
        assert os.stat(kept_dir(env, "alice") / k).st_mtime == mtimes[name]
    # The name keeps its ,S= and info, ,K= sits at the end of the base name.
    assert any(re.fullmatch(r"cur/1700000002\.M2P1\.host,K=\d+:2,S", k)
               for k in kept), kept
    # A Maildir++ folder other IMAP servers show as "Kept".
    k = kept_dir(env, "alice")
    assert (k / "tmp").is_dir() and (k / "maildirfolder").is_file()
    assert os.lstat(k).st_uid == os.lstat(env.maildir("alice")).st_uid
    # The next login lists exactly the disk, and the cache agrees.
    assert_view_is_disk(s, env.maildir("alice"))
    assert_cache_true(env.maildir("alice"))


def test_keep_per_user_and_zero(env, server):
    """keep_days=0 (the default) unlinks; an account's keep_days= keeps."""
    set_fields(env, "bob", "keep_days=2")
    for u in ("alice", "bob"):
        env.deliver(u, b"Subject: x\n\nx\n")
    s = server()
    for u in ("alice", "bob"):
        assert delete_and_quit(s, u, lambda _: True).startswith(b"+OK")
        assert env.files(u) == {}
    assert not kept_dir(env, "alice").exists()
    assert len(kept_files(env, "bob")) == 1


def test_keep_replaces_an_old_k_field(env, server):
    """A message kept once, put back by the admin and DELEted again, gets
    one fresh ,K= (never two, which would make it unexpirable)."""
    env.deliver("alice", b"Subject: back\n\nagain\n",
                name="1700000009.M9P1.host,S=21,K=1600000000:2,S", subdir="cur")
    s = server(keep_days=1)
    assert delete_and_quit(s, "alice", lambda _: True).startswith(b"+OK")
    (name,) = kept_files(env, "alice")
    assert re.fullmatch(r"cur/1700000009\.M9P1\.host,S=21,K=(\d+):2,S", name), name
    assert int(K_FIELD.search(name)[1]) > 1600000000


def test_keep_never_replaces_a_kept_file(env, server):
    """Two messages whose kept names would collide both survive."""
    now = int(time.time())
    env.deliver("alice", b"Subject: new one\n\n1\n", name="1700000010.M1P1.h")
    # Pre-fill .Kept with the names the next few seconds would give.
    for t in range(now - 2, now + 4):
        put_kept(env, "alice", f"1700000010.M1P1.h,K={t}", b"older\n",
                 subdir="new")
    before = kept_files(env, "alice")
    s = server(keep_days=1)
    assert delete_and_quit(s, "alice", lambda _: True).startswith(b"+OK")
    after = kept_files(env, "alice")
    assert {k: v for k, v in after.items() if k in before} == before
    (added,) = set(after) - set(before)
    assert after[added] == b"Subject: new one\n\n1\n"
    assert int(K_FIELD.search(added)[1]) >= now + 4


@pytest.mark.parametrize("plant", ["symlink", "file"])
def test_keep_refuses_a_kept_that_is_not_a_directory(env, server, tmp_path,
                                                     plant):
    """.Kept as a symlink (or a file): UPDATE fails, nothing is lost, and
    nothing is written through the link."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    k = kept_dir(env, "alice")
    if plant == "symlink":
        os.symlink(target, k)
        os.lchown(k, *(os.lstat(env.maildir("alice"))[4:6]))
    else:
        k.write_bytes(b"not a folder\n")
        own(k)
    env.deliver("alice", b"Subject: stays\n\nx\n")
    before = env.files("alice")
    s = server(keep_days=1)
    reply = delete_and_quit(s, "alice", lambda _: True)
    assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
    assert env.files("alice") == before
    assert list(target.iterdir()) == []
    s.wait_log(r"event=update-failed .*\.Kept")


# ---------------------------------------------------------------- popbox expire


AGES = [
    # (name, age in seconds, kept by expire_days=10?)
    ("young", 1 * DAY, True),
    ("inside", 10 * DAY - MARGIN, True),
    ("outside", 10 * DAY + MARGIN, False),
    ("ancient", 400 * DAY, False),
    ("future", -2 * DAY, True),
]


def load_ages(env, user, now):
    """One message per AGES row, alternating new/ and cur/ (with flags)."""
    out = {}
    for i, (tag, age, kept) in enumerate(AGES):
        sub = "new" if i % 2 == 0 else "cur"
        name = f"{1700000100 + i}.M{i}P7.{tag}" + (":2,S" if sub == "cur" else "")
        data = f"Subject: {tag}\n\n{tag} body {'x' * i}\n".encode()
        put(env, user, data, age, subdir=sub, name=name, now=now)
        out[f"{sub}/{name}"] = (data, kept)
    age_dirs(env.maildir(user))
    return out


def test_expire_removes_exactly_what_the_policy_does_not_keep(env, server):
    now = time.time()
    msgs = load_ages(env, "alice", now)
    mtimes = {k: os.stat(env.maildir("alice") / k).st_mtime for k in msgs}
    # A cache on the fast path first, as a real user would have.
    s = server(expire_days=10)
    assert_view_is_disk(s, env.maildir("alice"))
    rc, out, err = run_expire(env, expire_days=10)
    assert rc == 0, err
    keep = {k for k, (_, kept) in msgs.items() if kept}
    gone = set(msgs) - keep
    assert set(env.files("alice")) == keep, out
    for k in keep:
        assert env.files("alice")[k] == msgs[k][0]
        assert os.stat(env.maildir("alice") / k).st_mtime == mtimes[k]
    line = user_line(out, "alice")
    assert line == {"messages": len(gone), "expired": len(gone), "kept": 0,
                    "bytes": sum(len(msgs[k][0]) for k in gone),
                    "dry": False}, out
    assert summary(out) == {"accounts": len(USERS), "with": 1,
                            "messages": len(gone), "bytes": line["bytes"],
                            "skipped": 0, "failed": 0}, out
    # Nothing else has a line (no removals).
    assert [l.split(":")[0] for l in out.splitlines()
            if not l.startswith("expire:")] == ["alice"], out
    # The POP3 view and the cache follow.
    assert_view_is_disk(s, env.maildir("alice"))
    assert_cache_true(env.maildir("alice"))
    # A second run finds nothing more.
    rc, out, _ = run_expire(env, expire_days=10)
    assert rc == 0 and summary(out)["messages"] == 0, out
    assert set(env.files("alice")) == keep


def test_expire_never_keeps_everything(env):
    now = time.time()
    for u in USERS:
        load_ages(env, u, now)
        put(env, u, b"Subject: 1980\n\nold\n", now - 315532800, now=now)
    before = {u: env.files(u) for u in USERS}
    rc, out, err = run_expire(env)              # expire_days = never
    assert rc == 0, err
    assert summary(out)["messages"] == 0, out
    assert {u: env.files(u) for u in USERS} == before
    # No lock was even taken: nothing could have been removed.
    assert not (env.maildir("alice") / "popbox.lock").exists()
    # -v: a line for every account.
    rc, out, _ = run_expire(env, "-v")
    assert rc == 0
    for u in USERS:
        assert user_line(out, u) == {"messages": 0, "bytes": 0, "expired": 0,
                                     "kept": 0, "dry": False}, out


def test_expire_per_user_overrides(env):
    now = time.time()
    set_fields(env, "bob", "expire_days=7")
    set_fields(env, "carol", "expire_days=never")
    set_fields(env, "dave", "userdb_expire_days=3650")
    ages = {"d6": 6 * DAY, "d8": 8 * DAY, "d31": 31 * DAY, "d3000": 3000 * DAY,
            "d3651": 3651 * DAY}
    for u in USERS:
        for tag, age in ages.items():
            put(env, u, f"Subject: {tag}\n\n{u}\n".encode(), age,
                name=f"17000002{len(tag)}{age % 97}.{tag}", now=now)
    rc, out, err = run_expire(env, expire_days=30)
    assert rc == 0, err
    left = {u: sorted(n.rsplit(".", 1)[1] for n in env.files(u)) for u in USERS}
    assert left == {
        "alice": ["d6", "d8"],                   # the site's 30 days
        "sam": ["d6", "d8"],
        "bob": ["d6"],                           # his own 7
        "carol": ["d3000", "d31", "d3651", "d6", "d8"],   # never
        "dave": ["d3000", "d31", "d6", "d8"],    # his own 3650
    }, out
    assert user_line(out, "carol") is None and user_line(out, "bob")["expired"] == 4
    # The site default never: bob's own 7 days no longer count either.
    rc, out, err = run_expire(env)
    assert rc == 0, err
    assert {u: sorted(n.rsplit(".", 1)[1] for n in env.files(u))
            for u in USERS}["bob"] == ["d6"]
    assert summary(out)["messages"] == 0, out
    # An account's own expire_days does not count under a never site
    # (CAPA said EXPIRE NEVER before login): nothing removed, and said so.
    set_fields(env, "alice", "expire_days=5")
    rc, out, err = run_expire(env)
    assert rc == 0, err
    assert sorted(n.rsplit(".", 1)[1] for n in env.files("alice")) == ["d6", "d8"]
    assert summary(out)["messages"] == 0, out
    assert "alice: its expire_days is ignored" in err, err


KEPT_CASES = [
    # (name stem, ,K= age or a raw suffix, removed by keep_days=3?)
    ("k-outside", 3 * DAY + MARGIN, True),
    ("k-inside", 3 * DAY - MARGIN, False),
    ("k-old", 300 * DAY, True),
    ("k-future", -DAY, False),
    ("no-k", None, False),
    ("bad-k", ",K=12x4", False),
    ("two-k", ",K=1000,K=1000", False),
    ("k-in-info", ":2,K=1000", False),
    ("empty-k", ",K=", False),
]


def load_kept(env, user, now):
    out = {}
    for i, (stem, k, removed) in enumerate(KEPT_CASES):
        if k is None:
            suffix = ""
        elif isinstance(k, str):
            suffix = k
        else:
            suffix = f",K={int(now - k)}"
        name = f"1700000300.M{i}P1.{stem}{suffix}"
        data = f"Subject: {stem}\n\nkept\n".encode()
        # The mtime (delivery) is very old for all: only ,K= counts.
        put_kept(env, user, name, data, subdir=("cur" if i % 2 else "new"),
                 mtime=now - 1000 * DAY)
        out[name] = (data, removed)
    return out


def test_expire_kept_messages(env):
    now = time.time()
    kept = load_kept(env, "alice", now)
    for_bob = load_kept(env, "bob", now)
    set_fields(env, "bob", "keep_days=10")
    # A maildrop message is not touched by keep_days.
    put(env, "alice", b"Subject: inbox\n\nold\n", 900 * DAY, now=now)
    rc, out, err = run_expire(env, keep_days=3)
    assert rc == 0, err
    left = {k.split("/", 1)[1] for k in kept_files(env, "alice")}
    assert left == {n for n, (_, rm) in kept.items() if not rm}, out
    gone = [n for n, (_, rm) in kept.items() if rm]
    assert user_line(out, "alice") == {
        "messages": len(gone), "expired": 0, "kept": len(gone),
        "bytes": sum(len(kept[n][0]) for n in gone), "dry": False}, out
    assert len(env.files("alice")) == 1
    # bob keeps 10 days: only the 300-day one goes.
    left_bob = {k.split("/", 1)[1] for k in kept_files(env, "bob")}
    assert left_bob == set(for_bob) - {n for n in for_bob if ".k-old," in n}


def test_expire_kept_with_keep_days_zero(env):
    """keep_days 0: whatever was kept is due once a second has passed
    (the admin turned keeping off); files without ,K= still stay."""
    now = time.time()
    put_kept(env, "alice", f"1.M1.a,K={int(now) - 5}", b"a\n")
    put_kept(env, "alice", f"1.M2.b,K={int(now) + 60}", b"b\n")
    put_kept(env, "alice", "1.M3.c", b"c\n")
    rc, out, err = run_expire(env)
    assert rc == 0, err
    assert sorted(kept_files(env, "alice")) == [
        f"cur/1.M2.b,K={int(now) + 60}", "cur/1.M3.c"], out


def test_expire_after_keep_end_to_end(env, server):
    """DELE + QUIT keeps; expire leaves it within keep_days, removes it
    after (the ,K= time moved back to stand for days passing)."""
    env.deliver("alice", b"Subject: e2e\n\nkeep me a while\n")
    s = server(keep_days=2)
    assert delete_and_quit(s, "alice", lambda _: True).startswith(b"+OK")
    (name,) = kept_files(env, "alice")
    rc, out, _ = run_expire(env, keep_days=2)
    assert rc == 0 and list(kept_files(env, "alice")) == [name], out
    p = kept_dir(env, "alice") / name
    since = int(K_FIELD.search(name)[1])
    older = p.with_name(K_FIELD.sub(f",K={since - 2 * DAY - MARGIN}", p.name))
    os.rename(p, older)
    rc, out, _ = run_expire(env, keep_days=2)
    assert rc == 0 and kept_files(env, "alice") == {}, out
    assert user_line(out, "alice")["kept"] == 1


def test_expire_dry_run_removes_nothing(env):
    now = time.time()
    msgs = load_ages(env, "alice", now)
    kept = load_kept(env, "bob", now)
    before = ({u: env.files(u) for u in USERS}, kept_files(env, "bob"))
    rc, out, err = run_expire(env, "-n", expire_days=10, keep_days=3)
    assert rc == 0, err
    assert ({u: env.files(u) for u in USERS}, kept_files(env, "bob")) == before
    a, b = user_line(out, "alice"), user_line(out, "bob")
    assert a["dry"] and a["expired"] == sum(1 for _, _, k in AGES if not k)
    assert b["dry"] and b["kept"] == sum(1 for _, _, rm in KEPT_CASES if rm)
    assert "would be removed (dry run)" in out
    # The real run then removes exactly what the dry run announced.
    rc, out2, _ = run_expire(env, expire_days=10, keep_days=3)
    assert user_line(out2, "alice") == dict(a, dry=False)
    assert user_line(out2, "bob") == dict(b, dry=False)
    assert len(env.files("alice")) == len(msgs) - a["expired"]


def test_expire_skips_a_maildrop_in_use(env, server):
    now = time.time()
    for u in ("alice", "bob"):
        put(env, u, b"Subject: old\n\nx\n", 40 * DAY, now=now)
    s = server(expire_days=30)
    with RawPOP3(s.host, s.port) as c:
        c.login("alice", PW["alice"])
        t = time.monotonic()
        rc, out, err = run_expire(env, expire_days=30)
        assert time.monotonic() - t < 20, "expire waited for the lock"
        assert rc == 0, err
        assert "popbox: expire: alice: maildrop in use by a POP3 session, " \
            "skipped" in err
        assert summary(out)["skipped"] == 1 and summary(out)["failed"] == 0
        assert len(env.files("alice")) == 1 and env.files("bob") == {}
        assert c.cmd("STAT").startswith(b"+OK 1 ")
        assert c.cmd("QUIT").startswith(b"+OK")
    rc, out, _ = run_expire(env, expire_days=30)
    assert rc == 0 and env.files("alice") == {}, out


def test_expire_leaves_the_last_login_time_alone(env, server):
    """An admin run is no login: LOGIN-DELAY is neither checked nor reset."""
    put(env, "alice", b"Subject: old\n\nx\n", 40 * DAY)
    lock = env.maildir("alice") / "popbox.lock"
    lock.touch()
    own(lock)
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    rc, out, err = run_expire(env, expire_days=30, login_delay=600)
    assert rc == 0 and env.files("alice") == {}, (out, err)
    assert time.time() - os.stat(lock).st_mtime > 3000
    s = server(login_delay=600)
    with RawPOP3(s.host, s.port) as c:
        c.login("alice", PW["alice"])


def test_expire_bad_lines_and_failures(env):
    now = time.time()
    for u in ("alice", "bob", "carol"):
        put(env, u, b"Subject: old\n\nx\n", 40 * DAY, now=now)
    # A bad field refuses bob's line (popboxd ignores it too): untouched.
    set_fields(env, "bob", "expire_days=0")
    # A second line for carol never counts: the first one (30 days) does.
    env.extra_passwd_lines.append(f"carol:{env.hashes['carol']}::::::"
                                  "expire_days=never")
    # dave's Maildir is a file: that account fails, the others go on.
    dave = env.mail_root / "dave" / "Maildir"
    for sub in ("new", "cur", "tmp"):
        os.rmdir(dave / sub)
    os.rmdir(dave)
    dave.write_text("not a Maildir\n")
    env.write_passwd()
    rc, out, err = run_expire(env, expire_days=30)
    assert rc == 1, (out, err)
    assert re.search(r"line \d+: bad or repeated .*line ignored", err), err
    assert re.search(r"^popbox: expire: dave: .*", err, re.M), err
    assert env.files("bob") and not env.files("alice")
    assert not env.files("carol")
    assert summary(out)["failed"] == 1


def test_expire_usage_and_config_errors(env):
    r = subprocess.run([str(POPBOX), "expire", "-x"], capture_output=True,
                       timeout=30)
    assert r.returncode == 64
    conf = env.root / "bad.conf"
    conf.write_text("bogus = 1\n")
    no_leaks = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    r = subprocess.run([str(POPBOX), "expire", "-c", str(conf)],
                       capture_output=True, timeout=30, env=no_leaks)
    assert r.returncode == 78, r.stderr


# ---------------------------------------------------------------- faults


def check_after_keep(env, checker, before, completed):
    """Each marked message in exactly one place, whole; unmarked untouched;
    a clean server lists the disk; the survivors can still be deleted."""
    md = env.maildir("alice")
    disk = disk_messages(md)
    kept = {f"{p.split('/', 1)[0]}/{strip_k(p.split('/', 1)[1])}": d
            for p, d in kept_files(env, "alice").items()}
    assert len(kept) == len(kept_files(env, "alice")), "kept twice"
    for path, (data, marked) in before.items():
        if not marked:
            assert disk.get(path) == data, f"unmarked {path} lost or changed"
            assert path not in kept, f"unmarked {path} was kept"
            continue
        where = (path in disk) + (path in kept)
        assert where == 1, f"marked {path} is in {where} places"
        assert disk.get(path, kept.get(path)) == data, f"{path} damaged"
        if completed:
            assert path in kept, f"{path} not moved by a completed UPDATE"
    assert set(disk) <= set(before) and set(kept) <= set(before)
    assert list((md / "tmp").iterdir()) == []
    assert_view_is_disk(checker, md)
    assert_cache_true(md)
    # The client finishes the job (keep_days again: into .Kept).
    marked = {base_name(p.split("/", 1)[1]) for p, (_, m) in before.items() if m}
    assert delete_and_quit(checker, "alice",
                           lambda u: u in marked).startswith(b"+OK")
    assert disk_messages(md) == {p: d for p, (d, m) in before.items() if not m}
    kept = {f"{p.split('/', 1)[0]}/{strip_k(p.split('/', 1)[1])}": d
            for p, d in kept_files(env, "alice").items()}
    assert kept == {p: d for p, (d, m) in before.items() if m}
    assert_cache_true(md)


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_at_every_step_of_a_keeping_update(env, server, killshim,
                                                    when):
    checker = server(keep_days=5)
    steps = []
    for n in range(1, MAX_STEPS + 1):
        before = load_update_maildrop(env)
        k = kept_dir(env, "alice")
        if k.exists():
            subprocess.run(["rm", "-rf", str(k)], check=True)
        assert_view_is_disk(checker, env.maildir("alice"))
        killed, trace = run_update_under_shim(env, server, killshim, n,
                                              when, f"keep-{when}-{n}",
                                              keep_days=5)
        steps = steps_of(trace)
        assert len(steps) == (n if killed else n - 1), trace
        check_after_keep(env, checker, before, completed=not killed)
        if not killed:
            break
    else:
        pytest.fail(f"UPDATE still killed after {MAX_STEPS} steps")
    # What a keeping UPDATE does, each step a kill point: the folder made
    # durable, the marked messages renamed into it, new/ cur/ and the
    # .Kept directories fsynced, the cache replaced, the lock released.
    kinds = [s[1] for s in steps]
    listing = "\n".join(" ".join(s) for s in steps)
    assert kinds.count("rename") == 4 + 1, listing   # 4 messages, the cache
    renames = [s for s in steps if s[1] == "rename"]
    assert all(f"/{KEPT}/" in s[3] for s in renames[:4]), listing
    # Nothing is unlinked but a stale temp cache.
    assert all(s[3].endswith("/popbox.cache.tmp")
               for s in steps if s[1] == "unlink"), listing
    fsyncs = [s[3].rstrip("/") for s in steps if s[1] == "fsync"]
    assert any(p.endswith(f"/{KEPT}") for p in fsyncs) and \
        any(p.endswith("/Maildir") for p in fsyncs), listing
    for sub in ("new", "cur"):
        assert any(p.endswith(f"/Maildir/{sub}") for p in fsyncs), listing
        assert any(p.endswith(f"/{KEPT}/{sub}") for p in fsyncs), listing
    assert len(steps) >= 14, listing
