"""Real POP3 clients against popboxd: curl and mpop, and the commands that
`make run` (scripts/run-demo.sh) prints."""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (CURL, MESSAGES, MPOP, POPBOX, REPO, SANITIZER_PATTERNS,
                      USERS, needs_curl, needs_mpop, wire_form)

PW = {u: pw for u, (_, pw) in USERS.items()}
def run(cmd, timeout=30, **kw):
    return subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)


@pytest.fixture
def filled(env, server):
    for m in MESSAGES:
        env.deliver("alice", m)
    return server()


def url(s, path=""):
    return f"pop3://{s.host}:{s.port}/{path}"


@needs_curl
def test_curl_list_retr_dele(filled, env):
    s = filled
    auth = ["-u", f"alice:{PW['alice']}"]
    r = run([CURL, "-sS", *auth, url(s)])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split(b"\r\n")
    assert lines[-1] == b"" and len(lines) == 4, f"curl LIST output {r.stdout!r}"
    sizes = sorted(int(l.split()[1]) for l in lines[:-1])
    assert sizes == sorted(len(wire_form(m)) for m in MESSAGES)

    got = []
    for n in (1, 2, 3):
        r = run([CURL, "-sS", *auth, url(s, str(n))])
        assert r.returncode == 0, r.stderr
        got.append(r.stdout)
    assert sorted(got) == sorted(wire_form(m) for m in MESSAGES), \
        "curl's RETR output differs from the wire form"

    r = run([CURL, "-sS", *auth, "-X", "DELE 1", url(s), "-I"])
    assert r.returncode == 0, r.stderr
    assert len(env.files("alice")) == 2, "curl DELE 1 + QUIT did not delete"
    assert wire_form(b"".join(env.files("alice").values())) != b""
    r = run([CURL, "-sS", *auth, url(s)])
    assert len(r.stdout.split(b"\r\n")) == 3, r.stdout


@needs_curl
def test_curl_wrong_password(filled, env):
    r = run([CURL, "-sS", "-u", "alice:wrong", url(filled)])
    assert r.returncode == 67, f"curl exit {r.returncode} (67 = login denied): {r.stderr!r}"
    assert len(env.files("alice")) == 3


def mpop_cmd(s, user, pwfile, uidls, dest, keep):
    cmd = [MPOP, f"--host={s.host}", f"--port={s.port}", "--tls=off",
           "--auth=user", f"--user={user}", f"--passwordeval=cat {pwfile}",
           f"--uidls-file={uidls}", f"--delivery=maildir,{dest}"]
    if keep:
        cmd.append("--keep=on")
    return cmd


def fetched(dest: Path):
    return [p.read_bytes() for sub in ("new", "cur") for p in (dest / sub).iterdir()]


def assert_fetched_all(files, originals):
    assert len(files) == len(originals), f"fetched {len(files)} messages"
    for m in originals:
        want = wire_form(m).replace(b"\r\n", b"\n")
        hits = [f for f in files if f.endswith(want)]
        assert hits, f"no fetched file ends with the original {m[:40]!r}"


@pytest.fixture
def mpop_home(env):
    home = env.root / "mpop-home"
    home.mkdir()
    dest = home / "fetched"
    for sub in ("new", "cur", "tmp"):
        (dest / sub).mkdir(parents=True)
    pwfile = home / "pw"
    pwfile.write_text(PW["alice"] + "\n")
    os.chmod(pwfile, 0o600)
    return home, dest, pwfile


@needs_mpop
def test_mpop_keep_then_delete(filled, env, mpop_home):
    s = filled
    home, dest, pwfile = mpop_home
    uidls = home / "uidls"
    before = env.files("alice")
    e = dict(os.environ, HOME=str(home))
    r = run(mpop_cmd(s, "alice", pwfile, uidls, dest, keep=True), env=e)
    assert r.returncode == 0, f"mpop exit {r.returncode}: {r.stderr!r} {r.stdout!r}"
    assert_fetched_all(fetched(dest), MESSAGES)
    assert env.files("alice") == before, "--keep=on deleted mail"

    # Second run: mpop's UIDL list says everything is known already.
    r = run(mpop_cmd(s, "alice", pwfile, uidls, dest, keep=True), env=e)
    assert r.returncode == 0, r.stderr
    assert len(fetched(dest)) == len(MESSAGES), "UIDLs changed: mpop fetched again"

    # Without --keep, mpop deletes what it has (the known UIDLs too).
    r = run(mpop_cmd(s, "alice", pwfile, uidls, dest, keep=False), env=e)
    assert r.returncode == 0, r.stderr
    assert env.files("alice") == {}, "server Maildir not empty after mpop without --keep"
    assert len(fetched(dest)) == len(MESSAGES)


@needs_mpop
def test_mpop_fetch_and_delete(filled, env, mpop_home):
    s = filled
    home, dest, pwfile = mpop_home
    e = dict(os.environ, HOME=str(home))
    r = run(mpop_cmd(s, "alice", pwfile, home / "uidls", dest, keep=False), env=e)
    assert r.returncode == 0, f"mpop exit {r.returncode}: {r.stderr!r}"
    assert_fetched_all(fetched(dest), MESSAGES)
    assert env.files("alice") == {}, "server Maildir not empty after mpop"


@needs_mpop
def test_mpop_wrong_password_keeps_mail(filled, env, mpop_home):
    s = filled
    home, dest, pwfile = mpop_home
    pwfile.write_text("wrong\n")
    e = dict(os.environ, HOME=str(home))
    r = run(mpop_cmd(s, "alice", pwfile, home / "uidls", dest, keep=False), env=e)
    assert r.returncode != 0, "mpop succeeded with a wrong password"
    assert len(env.files("alice")) == 3


# ---------------------------------------------------------------- make run


def printed_commands(text, port, tls_port):
    """The shell commands run-demo.sh prints (indented lines after the
    'with curl:' and 'with mpop' paragraphs), with the real ports."""
    cmds = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"^  (curl|mkdir|mpop) ", line):
            cmd = line.strip()
            while cmd.endswith("\\"):
                i += 1
                cmd = cmd[:-1] + " " + lines[i].strip()
            cmds.append(cmd)
        i += 1
    fixed = []
    for c in cmds:
        tls = "pop3s://" in c or "--tls-starttls=off" in c
        p = tls_port if tls else port
        c = re.sub(r"(127\.0\.0\.1|localhost):0/", rf"\g<1>:{p}/", c)
        c = c.replace("--port=0 ", f"--port={p} ")
        fixed.append(c)
    return fixed


@needs_curl
@needs_mpop
def test_make_run_demo_commands(env):
    """Runs scripts/run-demo.sh in a temp directory (port 0 instead of 1110)
    and runs the curl and mpop commands it prints, as printed."""
    top = env.root / "demo"
    top.mkdir()
    os.chmod(top, 0o755)
    out_path = env.root / "demo.stdout"
    err_path = env.root / "demo.stderr"
    e = dict(os.environ, POPBOX_DEMO_PORT="0", HOME=str(top))
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(["bash", str(REPO / "scripts" / "run-demo.sh"),
                                 str(POPBOX.parent)], cwd=top, env=e,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 20
        port = tls_port = None
        while time.monotonic() < deadline:
            # Plain first, then the implicit-TLS listener.
            ports = re.findall(r"event=listening addr=127\.0\.0\.1:(\d+)",
                               err_path.read_text(errors="replace"))
            if len(ports) >= 2 and "event=started" in err_path.read_text(errors="replace"):
                port, tls_port = int(ports[0]), int(ports[1])
                break
            assert proc.poll() is None, \
                f"run-demo.sh exited {proc.returncode}:\n{out_path.read_text()}\n" \
                f"{err_path.read_text()}"
            time.sleep(0.05)
        assert port, f"demo server did not start:\n{err_path.read_text()}"
        text = out_path.read_text()
        cmds = printed_commands(text, port, tls_port)
        kinds = [c.split()[0] for c in cmds]
        assert kinds == ["curl", "curl", "curl", "mkdir", "mpop",
                         "curl", "curl", "mkdir", "mpop"], \
            f"unexpected printed commands: {cmds}"
        # The TLS ones keep the mail: run them first.
        tls_cmds, cmds = cmds[5:], cmds[:5]
        maildir = top / "run" / "mail" / "demo" / "Maildir"
        originals = [p.read_bytes() for sub in ("new", "cur")
                     for p in (maildir / sub).iterdir()]
        assert len(originals) == 3, "the demo maildrop should hold 3 samples"

        def run_printed(commands):
            outputs = []
            for c in commands:
                r = subprocess.run(["bash", "-c", c], cwd=top, env=e,
                                   capture_output=True, timeout=60)
                assert r.returncode == 0, f"printed command failed ({r.returncode}): " \
                                          f"{c}\n{r.stderr.decode(errors='replace')}"
                outputs.append(r.stdout)
            return outputs

        tls_results = run_printed(tls_cmds)
        assert len(tls_results[0].split(b"\r\n")) == 4, \
            f"demo LIST over pop3s: {tls_results[0]!r}"
        assert tls_results[1] in [wire_form(o) for o in originals], \
            f"demo RETR 1 over STLS is not a demo message: {tls_results[1][:80]!r}"
        assert len(fetched(top / "run" / "fetched-tls")) == 3, \
            "mpop over pop3s should fetch the 3 samples"

        results = run_printed(cmds)
        listing = results[0].split(b"\r\n")
        assert len(listing) == 4, f"demo LIST: {results[0]!r}"
        assert results[1] in [wire_form(o) for o in originals], \
            f"demo RETR 1 output is not a demo message: {results[1][:80]!r}"
        fetched_dir = top / "run" / "fetched"
        got = fetched(fetched_dir)
        assert len(got) == 2, f"mpop fetched {len(got)} (3 samples minus DELE 1)"
        left = [p for sub in ("new", "cur") for p in (maildir / sub).iterdir()]
        assert left == [], f"mpop left mail on the server: {left}"
        for g in got:
            assert any(g.endswith(wire_form(o).replace(b"\r\n", b"\n"))
                       for o in originals), f"fetched message not a sample: {g[:200]!r}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    log = err_path.read_text(errors="replace")
    for pat in SANITIZER_PATTERNS:
        assert pat not in log, f"sanitizer report in the demo server:\n{log}"
