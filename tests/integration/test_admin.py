"""The administrator's view: config checking, popbox passwd, log records,
privileges."""
import os
import poplib
import pwd
import re
import subprocess

import pytest

from conftest import IS_ROOT, POPBOX, POPBOXD, USERS, RawPOP3

PW = {u: pw for u, (_, pw) in USERS.items()}

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z? popboxd\[\d+\]: "
    r"(debug|info|warn|warning|error): event=[a-z-]+( [a-z_]+=(\"[^\"]*\"|\S*))*$")
FAIL2BAN = re.compile(r"event=auth-failed .* rip=(\S+)")


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True,
                          timeout=30, **kw)


# ---------------------------------------------------------------- config


def test_check_config_prints_settings(env):
    conf = env.root / "check.conf"
    conf.write_text(env.config_text(login_delay=7, expire_days=12, apop="yes"))
    r = run([POPBOXD, "-t", "-c", conf])
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    for line in ("listen = 127.0.0.1:0", f"passdb_file = {env.passwd}",
                 "auth_failure_delay_ms = 300", "login_delay = 7",
                 "expire_days = 12", "apop = yes", "max_auth_failures = 3"):
        assert re.search(rf"^{re.escape(line)}$", out, re.M), \
            f"`popboxd -t` output lacks {line!r}:\n{out}"
    # The output is itself a config that loads to the same settings.
    again = env.root / "again.conf"
    again.write_bytes(r.stdout)
    r2 = run([POPBOXD, "-t", "-c", again])
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == r.stdout, "popboxd -t output does not round-trip"
    r3 = run([POPBOX, "check-config", "-c", conf])
    assert r3.returncode == 0 and r3.stdout == r.stdout, \
        "popbox check-config differs from popboxd -t"


BAD_CONFIGS = [
    # (extra lines after 2 good ones, line number that must be named)
    (["lsiten = 127.0.0.1:0"], 3, "lsiten"),
    (["# comment", "", "bogus_key = 1"], 5, "bogus_key"),
    (["login_timeout = 4"], 3, None),
    (["expire_days = 0"], 3, None),
    (["max_auth_failures = -1"], 3, None),
    (["auth_failure_delay_ms = 1x"], 3, None),
    (["apop = maybe"], 3, None),
    (["passdb_file = /other"], 3, None),          # repeated key
    (["just some words"], 3, None),               # no '='
    (["workers ="], 3, None),                     # empty value
    (["idle_timeout = 599"], 3, None),
]


@pytest.mark.parametrize("extra,lineno,word", BAD_CONFIGS)
def test_bad_config_exits_78_naming_the_line(env, extra, lineno, word):
    conf = env.root / "bad.conf"
    conf.write_text("\n".join([f"passdb_file = {env.passwd}",
                               "listen = 127.0.0.1:0", *extra]) + "\n")
    # Leak reports at exit would turn 78 into 1 in the ASan build; that is
    # checked on its own in test_bad_config_error_path_does_not_leak.
    no_leaks = dict(os.environ, ASAN_OPTIONS=(os.environ.get("ASAN_OPTIONS", "") +
                                              ":detect_leaks=0").lstrip(":"))
    for cmd in ([POPBOXD, "-t", "-c", conf], [POPBOXD, "-c", conf],
                [POPBOX, "check-config", "-c", conf]):
        r = run(cmd, env=no_leaks)
        err = r.stderr.decode(errors="replace")
        assert r.returncode == 78, f"{cmd[1:]} {extra}: exit {r.returncode}, {err}"
        assert re.search(rf"\bline {lineno}\b", err), f"no 'line {lineno}' in {err!r}"
        if word:
            assert word in err, f"{word!r} not named in {err!r}"


def test_missing_passdb_file_setting(env):
    conf = env.root / "nopassdb.conf"
    conf.write_text("listen = 127.0.0.1:0\n")
    no_leaks = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    r = run([POPBOXD, "-t", "-c", conf], env=no_leaks)
    assert r.returncode == 78, r


def test_bad_config_error_path_does_not_leak(env):
    """popboxd must free its settings when the config does not load: under
    ASan, LeakSanitizer otherwise reports and the exit code becomes 1."""
    conf = env.root / "leak.conf"
    conf.write_text(f"passdb_file = {env.passwd}\nlisten = 127.0.0.1:0\n"
                    "lsiten = oops\n")
    r = run([POPBOXD, "-t", "-c", conf])
    err = r.stderr.decode(errors="replace")
    assert "LeakSanitizer" not in err, \
        f"popboxd -t leaks on a config error (main.c returns 78 " \
        f"without settings_free):\n{err[:1500]}"
    assert r.returncode == 78, f"exit {r.returncode}"


# ---------------------------------------------------------------- passwd


@pytest.mark.parametrize("scheme", [None, "SHA512-CRYPT", "SHA256-CRYPT",
                                    "YESCRYPT", "BLF-CRYPT", "PLAIN"])
def test_popbox_passwd_round_trip(env, server, scheme):
    s = server()
    password = "ünïcode pass wörd 42"
    cmd = [POPBOX, "passwd"] + (["-s", scheme] if scheme else [])
    r = run(cmd, input=(password + "\n").encode())
    assert r.returncode == 0, r.stderr
    h = r.stdout.decode().strip()
    want = "{" + (scheme or "YESCRYPT") + "}"
    assert h.startswith(want), f"hash {h!r} does not start with {want}"
    assert password not in h or scheme == "PLAIN"
    # The running server re-reads the passwd-file at login.
    env.extra_passwd_lines.append(f"erin:{h}::::::")
    env.write_passwd()
    env.maildir("erin")
    env.deliver("erin", b"Subject: for erin\n\nhi\n")
    p = poplib.POP3(s.host, s.port, timeout=10)
    try:
        p.user("erin")
        p.pass_(password)
        assert p.stat()[0] == 1
    finally:
        p.quit()
    p = poplib.POP3(s.host, s.port, timeout=10)
    try:
        p.user("erin")
        with pytest.raises(poplib.error_proto):
            p.pass_(password + "x")
    finally:
        p.close()


def test_popbox_passwd_refuses_bad_input():
    r = run([POPBOX, "passwd"], input=b"\n")
    assert r.returncode == 65, f"empty password: exit {r.returncode}"
    r = run([POPBOX, "passwd", "-s", "NO-SUCH-SCHEME"], input=b"pw\n")
    assert r.returncode == 64, f"unknown scheme: exit {r.returncode}"
    r = run([POPBOX, "passwd", "-s", "MD5-CRYPT"], input=b"pw\n")
    assert r.returncode != 0, "MD5-CRYPT hashes must never be made"


# ---------------------------------------------------------------- logging


def check_log_shape(text):
    for i, line in enumerate(text.split("\n")[:-1]):
        assert LOG_LINE.match(line), f"log line {i + 1} is not one key=value record: {line!r}"


def test_log_records(env, server):
    env.deliver("alice", b"Subject: a\n\nbody a\n")
    env.deliver("alice", b"Subject: b\n\nbody b\n")
    s = server()
    with RawPOP3(s.host, s.port) as c:
        c.cmd("USER alice")
        assert c.cmd("PASS not-right").startswith(b"-ERR [AUTH]")
        c.cmd("USER nosuch")
        assert c.cmd("PASS not-right").startswith(b"-ERR [AUTH]")
    with RawPOP3(s.host, s.port) as c:
        c.login("alice", PW["alice"])
        st, body = c.multi("RETR 1")
        assert c.cmd("DELE 2").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"+OK")
    m = s.wait_log(r"event=logout [^\n]*")
    logout = m.group(0)
    text = s.log()
    login = re.search(r"event=login [^\n]*", text)
    assert login, f"no login record:\n{text}"
    assert re.search(r"\buser=alice\b", login.group(0)) and \
        re.search(r"\brip=127\.0\.0\.1\b", login.group(0)), login.group(0)
    fails = [m.group(1) for m in FAIL2BAN.finditer(text)]
    assert fails == ["127.0.0.1", "127.0.0.1"], \
        f"fail2ban regex found {fails} in:\n{text}"
    assert re.search(r"\buser=alice\b", logout), logout
    assert re.search(r"\bretrieved=1\b", logout), logout
    assert re.search(r"\bdeleted=1\b", logout), logout
    b = re.search(r"\bbytes=(\d+)\b", logout)
    assert b and int(b.group(1)) > 0, logout
    check_log_shape(text)


def test_hostile_user_names_are_escaped(env, server):
    s = server()
    names = [b"evil\x1b[31m", b"evil\xff\xfe\"quote\\back", b"x" * 300,
             b"evil\nevent=login user=admin", b"\xe2\x80\xae" + b"rtl"]
    for name in names:
        with RawPOP3(s.host, s.port) as c:
            r = c.cmd(b"USER " + name)
            if r.startswith(b"+OK"):
                assert c.cmd("PASS whatever").startswith(b"-ERR")
    s.wait_log(r"event=auth-failed .*rtl")
    raw = s.log_bytes()
    assert b"\x1b" not in raw, "raw ESC byte in the log"
    assert not re.search(rb"[\x00-\x09\x0b-\x1f\x7f-\xff]", raw), \
        f"control or 8-bit bytes in the log: {raw!r}"
    text = raw.decode()
    check_log_shape(text)
    assert not re.search(r"^[^\n]*event=login user=admin", text, re.M), \
        "a user name forged a log record"
    assert all(len(l) < 1024 for l in text.split("\n")), "unbounded log line"
    # fail2ban still finds the address on every failure.
    assert len(FAIL2BAN.findall(text)) == len(
        re.findall(r"event=auth-failed", text))


@pytest.mark.parametrize("debug", [False, True])
def test_no_password_in_log(env, server, debug):
    env.deliver("dave", b"Subject: d\n\nd\n")
    s = server(apop="yes", _args=["-d"] if debug else [])
    secrets = [PW[u] for u in USERS] + ["Wr0ng-Guess-Pass", "ApopWrong"]
    for user in USERS:
        with RawPOP3(s.host, s.port) as c:
            c.login(user, PW[user])
            c.cmd("QUIT")
        with RawPOP3(s.host, s.port) as c:
            c.cmd(f"USER {user}")
            c.cmd("PASS Wr0ng-Guess-Pass")
    p = poplib.POP3(s.host, s.port, timeout=10)
    p.apop("dave", PW["dave"])
    p.quit()
    with RawPOP3(s.host, s.port) as c:
        c.cmd("USER dave")
        c.cmd(f"PASS {PW['dave']} trailing")
    # SASL: the password travels base64-encoded; neither form is logged.
    import base64
    plain_ok = base64.b64encode(f"\0dave\0{PW['dave']}".encode()).decode()
    plain_bad = base64.b64encode(b"\0dave\0SaslWrong-99").decode()
    secrets += ["SaslWrong-99", plain_ok, plain_bad]
    for blob in (plain_bad, plain_ok):
        with RawPOP3(s.host, s.port) as c:
            c.cmd(f"AUTH PLAIN {blob}")
            c.cmd("QUIT")
    s.wait_log(r"event=logout .*user=dave")
    text = s.log()
    for secret in secrets + [PW["dave"] + " trailing"]:
        assert secret not in text, f"password {secret!r} appears in the log"
        for word in secret.split():
            if len(word) >= 5 and word not in ("secret",):
                assert word not in text, f"password part {word!r} in the log"
    for h in env.hashes.values():
        assert h.split("}", 1)[1] not in text, "a password hash appears in the log"
    if debug:
        assert "debug:" in text, "-d produced no debug records"


@pytest.mark.skipif(not IS_ROOT, reason="needs root")
def test_mail_user_root_refused(env):
    conf = env.root / "root.conf"
    conf.write_text(env.config_text(mail_user="root"))
    r = subprocess.run([str(POPBOXD), "-c", str(conf)], capture_output=True,
                       timeout=10)
    assert r.returncode != 0, "popboxd ran with mail_user = root"


def test_second_instance_cannot_bind_the_same_port(env, server):
    """A second popboxd on a port that is in use must fail to start, not
    silently share it (SO_REUSEPORT on every listener lets the kernel split
    connections between two servers with possibly different configs)."""
    import time
    s = server()
    conf = env.root / "second.conf"
    conf.write_text(env.config_text(listen=f"127.0.0.1:{s.port}"))
    errp = env.root / "second.stderr"
    with open(errp, "wb") as err:
        p = subprocess.Popen([str(POPBOXD), "-c", str(conf)], stderr=err,
                             stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while p.poll() is None and time.monotonic() < deadline:
            if "event=started" in errp.read_text(errors="replace"):
                break
            time.sleep(0.05)
        assert p.poll() is not None and p.returncode != 0, \
            f"a second popboxd started on port {s.port} already in use:\n" \
            f"{errp.read_text(errors='replace')}"
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=10)
