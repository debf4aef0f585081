"""Helpers for the popbox-fetch integration tests (test_fetch.py,
test_fetch_dovecot.py, test_fetch_faults.py): running the program, writing
its configuration, and reading back what it stored, so that every test can
compare the local copies byte for byte with what the server held.

What popbox-fetch stores (docs/fetch.md): exactly the bytes the server
sent, un-stuffed, with CRLF turned into LF and no header added.  For a
message held in a maildrop file that is lf_form(file bytes): the RFC 1939
wire form (conftest.wire_form: bare LF -> CRLF, a final CRLF added when
the file has no final newline) with CRLF -> LF.

For an mbox after crashes (SIGKILL in the middle of an append leaves a
torn message at the end of the file, fetch/sink.h): mbox_appends() reads
the file append by append and tells whole messages from torn ones, and
siphash24() / mbox_append_name() make the pending names of
fetch/sink-private.h for hand-made crash states.
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


# ---------------------------------------------------------------- mbox appends


def mbox_quoted(content: bytes) -> bytes:
    """What an mbox append writes after its From_ line for a message stored
    as content: mboxrd quoting (one more '>' on every line matching
    ^>*From ), a final newline if missing, the empty separator line."""
    q = re.sub(rb"(?m)^(>*From )", rb">\1", content)
    if q and not q.endswith(b"\n"):
        q += b"\n"
    return q + b"\n"


def mbox_separator(before: bytes) -> bytes:
    """What an append puts before its From_ line after the bytes before
    (fetch/sink-mbox.c mbox_separator): so that it follows an empty line."""
    if not before or before.endswith(b"\n\n"):
        return b""
    return b"\n" if before.endswith(b"\n") else b"\n\n"


def _torn_ok(piece: bytes, quoted_forms) -> bool:
    """piece (after its separator) is a cut-short append: a prefix of a
    From_ line, or a whole From_ line and a proper prefix of one of the
    quoted messages."""
    nl = piece.find(b"\n")
    if nl < 0:
        return b"From ".startswith(piece[:5])
    if not FROM_LINE.match(piece[:nl]):
        return False
    body = piece[nl + 1:]
    return any(len(body) < len(q) and q.startswith(body) for q in quoted_forms)


def _whole_end(data: bytes, nl: int, by_quoted: dict, longest: int):
    """The end of a whole append whose From_ line ends at nl, or None:
    the first empty line after which the bytes since nl + 1 are the
    quoted form of a known message."""
    k = data.find(b"\n\n", nl)
    while 0 <= k and k + 2 - (nl + 1) <= longest:
        if data[nl + 1:k + 2] in by_quoted:
            return k + 2
        k = data.find(b"\n\n", k + 1)
    return None


def mbox_appends(data: bytes, contents, torn_ends=(), torn_at_end=False):
    """Reads an mbox written by popbox-fetch append by append: each is the
    separator mbox_separator() gives, a From_ line, and the quoted form of
    one of contents (stored messages, LF form).  An append may be torn
    (cut short by a SIGKILL) only where the file ended at the moment of a
    kill: at one of torn_ends (file sizes noted then), or at the end of
    data if torn_at_end.  An append that would reach past such a point
    started before it and was completed only by the next append's
    separator: torn too, although it now looks whole.  Returns (whole
    messages in file order, [(start, end) of each torn append]); raises
    AssertionError on any other byte."""
    by_quoted = {mbox_quoted(c): c for c in contents}
    quoted_forms = list(by_quoted)
    longest = max((len(x) for x in quoted_forms), default=0)
    ends = sorted(set(torn_ends))
    whole, torn = [], []
    q = 0
    while q < len(data):
        limit = next((e for e in ends if e > q), None)
        sep = mbox_separator(data[:q])
        start = q + len(sep)
        nl = data.find(b"\n", start)
        end = _whole_end(data, nl, by_quoted, longest) if (
            data[q:start] == sep and nl >= 0
            and FROM_LINE.match(data[start:nl])) else None
        if end is not None and (limit is None or end <= limit):
            whole.append(by_quoted[data[nl + 1:end]])
            q = end
            continue
        stop = limit if limit is not None else (len(data) if torn_at_end else None)
        piece = data[q:stop] if stop is not None else b""
        if (stop is not None and piece[:len(sep)] == sep[:len(piece)]
                and _torn_ok(piece[len(sep):], quoted_forms)):
            torn.append((q, stop))
            q = stop
            continue
        raise AssertionError(f"mbox at byte {q}: not an append of a known "
                             f"message: {data[q:q + 120]!r}")
    return whole, torn


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 of data under the 16-byte key (the hash of a pending
    mbox name)."""
    mask = (1 << 64) - 1

    def rotl(x, b):
        return ((x << b) | (x >> (64 - b))) & mask

    def rounds(v, n):
        v0, v1, v2, v3 = v
        for _ in range(n):
            v0 = (v0 + v1) & mask; v1 = rotl(v1, 13) ^ v0; v0 = rotl(v0, 32)
            v2 = (v2 + v3) & mask; v3 = rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & mask; v3 = rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & mask; v1 = rotl(v1, 17) ^ v2; v2 = rotl(v2, 32)
        return [v0, v1, v2, v3]

    k0 = int.from_bytes(key[:8], "little")
    k1 = int.from_bytes(key[8:], "little")
    v = [k0 ^ 0x736f6d6570736575, k1 ^ 0x646f72616e646f6d,
         k0 ^ 0x6c7967656e657261, k1 ^ 0x7465646279746573]
    n = len(data)
    blocks = [int.from_bytes(data[i:i + 8], "little") for i in range(0, n - n % 8, 8)]
    blocks.append(((n & 0xff) << 56) | int.from_bytes(data[n - n % 8:], "little"))
    for m in blocks:
        v[3] ^= m
        v = rounds(v, 2)
        v[0] ^= m
    v[2] ^= 0xff
    v = rounds(v, 4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def mbox_append_name(off: int, append: bytes, key: bytes) -> str:
    """The pending name of append (its bytes, separator included) made at
    offset off: "mbox.<off>.<len>.<key hex>.<hash hex>"."""
    return f"mbox.{off}.{len(append)}.{key.hex()}.{siphash24(key, append):016x}"
