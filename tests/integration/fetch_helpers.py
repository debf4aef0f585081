"""Helpers for the popbox-fetch integration tests (test_fetch.py,
test_fetch_dovecot.py, test_fetch_faults.py): running the program, writing
its configuration, and reading back what it stored, so that every test can
compare the local copies byte for byte with what the server held.

What popbox-fetch stores (docs/fetch.md): exactly the bytes the server
sent, un-stuffed, with CRLF turned into LF and no header added.  For a
message held in a maildrop file that is lf_form(file bytes): the RFC 1939
wire form (conftest.wire_form: bare LF -> CRLF, a final CRLF added when
the file has no final newline) with CRLF -> LF.
"""
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD, SANITIZER_PATTERNS, wire_form

FETCH = BUILD / "popbox-fetch"

# NAME: fetched N (BYTES bytes), deleted D, kept K, skipped S[, errors E]
SUMMARY = re.compile(
    r"^(?P<name>.+?): fetched (?P<fetched>\d+) \((?P<bytes>\d+) bytes\), "
    r"deleted (?P<deleted>\d+), kept (?P<kept>\d+), skipped (?P<skipped>\d+)"
    r"(?:, errors (?P<errors>\d+))?$", re.M)

EXIT_OK, EXIT_PERM, EXIT_USAGE, EXIT_TEMP = 0, 1, 2, 75

FROM_LINE = re.compile(
    rb"^From \S+ (Mon|Tue|Wed|Thu|Fri|Sat|Sun) "
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    rb"[ \d]\d \d\d:\d\d:\d\d \d{4}$")


def need_fetch():
    if not (FETCH.is_file() and os.access(FETCH, os.X_OK)):
        pytest.fail(f"{FETCH} is not built (tools/popbox-fetch.c; make "
                    f"BUILD={BUILD} all)", pytrace=False)


def lf_form(data: bytes) -> bytes:
    """What popbox-fetch must store for a maildrop file holding data."""
    return wire_form(data).replace(b"\r\n", b"\n")


class Run:
    """One finished popbox-fetch run: rc, out, err (text)."""

    def __init__(self, args, proc_rc, out: bytes, err: bytes, seconds):
        self.args = args
        self.rc = proc_rc
        self.out = out.decode("utf-8", "replace")
        self.err = err.decode("utf-8", "replace")
        self.seconds = seconds

    def __repr__(self):
        return (f"popbox-fetch {' '.join(map(str, self.args))}\n"
                f"  exit {self.rc} after {self.seconds:.1f}s\n"
                f"  stdout: {self.out!r}\n  stderr: {self.err!r}")

    def summaries(self) -> dict:
        """{account name: {fetched, bytes, deleted, kept, skipped, errors}}."""
        out = {}
        for m in SUMMARY.finditer(self.out):
            d = {k: int(v) if v is not None else 0
                 for k, v in m.groupdict().items() if k != "name"}
            out[m.group("name")] = d
        return out

    def summary(self) -> dict:
        """The one summary line of a single-account run."""
        s = self.summaries()
        assert len(s) == 1, f"expected one summary line:\n{self!r}"
        return next(iter(s.values()))


def check_sanitizers(text: str, what="popbox-fetch"):
    for pat in SANITIZER_PATTERNS:
        assert pat not in text, f"sanitizer report in {what} stderr:\n{text}"


def fetch_env(home: Path, now=None, extra=None) -> dict:
    """The environment of a run: a private HOME (nothing lands in the real
    one), POPBOX_FETCH_NOW when now is given."""
    e = dict(os.environ)
    e["HOME"] = str(home)
    e.pop("POPBOX_FETCH_NOW", None)
    if now is not None:
        e["POPBOX_FETCH_NOW"] = str(int(now))
    e.update(extra or {})
    return e


def run_fetch(args, home: Path, now=None, timeout=120, extra_env=None,
              stdin=subprocess.DEVNULL, expect=None) -> Run:
    """Runs popbox-fetch with args (stdout and stderr are pipes, so not a
    TTY); checks stderr for sanitizer reports, and the exit code if expect
    is given."""
    need_fetch()
    args = [str(a) for a in args]
    t0 = time.monotonic()
    p = subprocess.run([str(FETCH), *args], env=fetch_env(home, now, extra_env),
                       stdin=stdin, capture_output=True, timeout=timeout)
    r = Run(args, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)
    check_sanitizers(r.err)
    if expect is not None:
        assert r.rc == expect, f"expected exit {expect}:\n{r!r}"
    return r


def write_config(path: Path, accounts: dict) -> Path:
    """accounts: {name: {key: value}} -> an INI-like popbox-fetch config."""
    lines = ["# written by the popbox-fetch integration tests"]
    for name, keys in accounts.items():
        lines.append(f"[account {name}]")
        for k, v in keys.items():
            if v is not None:
                lines.append(f"{k} = {v}")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


# ---------------------------------------------------------------- local copies


def make_maildir(d: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    return d


def maildir_messages(d: Path, check_tmp=True) -> list:
    """The messages of a local Maildir (new/ and cur/), sorted by content;
    asserts tmp/ holds nothing left over (unless check_tmp is false: during
    a run, or after a SIGKILL, a file there is legitimate)."""
    out = []
    for sub in ("new", "cur"):
        sd = d / sub
        if sd.is_dir():
            out += [p.read_bytes() for p in sd.iterdir() if p.is_file()]
    tmp = d / "tmp"
    if check_tmp and tmp.is_dir():
        left = [p.name for p in tmp.iterdir()]
        assert not left, f"files left in {tmp}: {left}"
    return sorted(out)


def mbox_messages(path: Path) -> list:
    """Splits an mboxrd file into its messages, un-quoted (one '>' removed
    from every line matching ^>+From ), without the From_ line and the
    empty separator line; checks the framing on the way.  Sorted."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if not data:
        return []
    assert data.startswith(b"From "), f"mbox does not start with From_: {data[:80]!r}"
    assert data.endswith(b"\n\n"), f"mbox does not end with an empty line: {data[-80:]!r}"
    lines = data.split(b"\n")[:-1]           # the text after the final LF is empty
    msgs, cur = [], None
    for i, line in enumerate(lines):
        if line.startswith(b"From "):
            assert FROM_LINE.match(line), f"bad From_ line {i + 1}: {line!r}"
            assert i == 0 or lines[i - 1] == b"", (
                f"From_ line {i + 1} not after an empty line: {lines[i - 1]!r}")
            if cur is not None:
                msgs.append(cur)
            cur = []
            continue
        if re.match(rb"^>+From ", line):
            line = line[1:]
        cur.append(line)
    msgs.append(cur)
    out = []
    for m in msgs:
        assert m and m[-1] == b"", f"message not followed by an empty line: {m[-3:]!r}"
        out.append(b"".join(l + b"\n" for l in m[:-1]))
    return sorted(out)


def assert_same_messages(got: list, originals: list, what="local copies"):
    """got (stored bytes) equals lf_form of originals, as multisets: every
    message exactly once, byte for byte."""
    want = sorted(lf_form(m) for m in originals)
    got = sorted(got)
    if got == want:
        return
    missing = [w[:70] for w in want if w not in got]
    extra = [g[:70] for g in got if g not in want]
    dups = len(got) - len(set(got))
    raise AssertionError(
        f"{what}: {len(got)} stored, {len(want)} expected; {dups} duplicate(s);\n"
        f"  missing: {missing[:5]}\n  unexpected: {extra[:5]}")


def numbered_messages(n, size=600, tag="msg", crlf=False, seed=1):
    """n distinct messages (a unique Message-ID and X-Test-Id in each), some
    with dot lines, From lines (quoted in an mbox), 8-bit bytes and no final
    newline; about size bytes each."""
    import random
    rnd = random.Random(seed)
    eol = b"\r\n" if crlf else b"\n"
    out = []
    for i in range(1, n + 1):
        head = [b"Return-Path: <sender%d@example.org>" % i,
                b"From: Sender %d <sender%d@example.org>" % (i, i),
                b"To: fetcher@example.net",
                b"Subject: %s %d" % (tag.encode(), i),
                b"Message-ID: <%s.%d@popbox-test>" % (tag.encode(), i),
                b"X-Test-Id: %s-%d" % (tag.encode(), i)]
        body = []
        if i % 3 == 0:
            body.append(b".a line starting with a dot")
        if i % 4 == 0:
            body.append(b"From here on, a line an mbox must quote")
            body.append(b">From an already quoted-looking line")
        if i % 5 == 0:
            body.append(b".")
            body.append(b"\xc3\xa4\xc3\xb6 8-bit text")
        filler = b"lorem ipsum dolor sit amet consectetur adipiscing elit "
        total = sum(len(l) + len(eol) for l in head + body) + len(eol)
        while total < size:
            line = filler[: rnd.randint(20, len(filler))].strip() + b" %d" % rnd.randint(0, 99999)
            body.append(line)
            total += len(line) + len(eol)
        data = eol.join(head) + eol + eol + eol.join(body)
        if i % 7 != 0:
            data += eol                     # every 7th without a final newline
        out.append(data)
    return out


def wait_for_file(path: Path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.02)
