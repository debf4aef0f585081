"""Byte-exact wire checks over a raw socket: line ends, dot-stuffing, TOP,
PIPELINING, over-long lines, hostile input and slow readers."""
import os
import socket
import time

import pytest

from conftest import USERS, RawPOP3, server_rss_kb, top_form, unstuff, wire_form

PW = {u: pw for u, (_, pw) in USERS.items()}


def big_message() -> bytes:
    """About 5 MB: mixed line ends, dot lines, long lines, 8-bit bytes."""
    parts = [b"From: big@example.org\nSubject: five megabytes\n\n"]
    i = 0
    size = len(parts[0])
    while size < 5 * 1024 * 1024:
        kind = i % 7
        if kind == 0:
            line = b"line %d with LF\n" % i
        elif kind == 1:
            line = b"line %d with CRLF\r\n" % i
        elif kind == 2:
            line = b".dot line %d\n" % i
        elif kind == 3:
            line = b"x" * 3000 + b"\n"
        elif kind == 4:
            line = b"bare\rCR %d\n" % i
        elif kind == 5:
            line = b"8bit \xe4\xf6\xfc\xff %d\r\n" % i
        else:
            line = b".\n"
        parts.append(line)
        size += len(line)
        i += 1
    parts.append(b"last line without newline")
    return b"".join(parts)


WIRE_CASES = {
    "lf": b"Subject: lf\n\nline one\nline two\n",
    "crlf": b"Subject: crlf\r\n\r\nline one\r\nline two\r\n",
    "mixed": b"Subject: mixed\r\nX: y\n\nbody\r\nmore\nend\r\n",
    "bare_cr": b"Subject: bare cr\n\nA\rB\nC\r\r\nD\r",
    "no_final_newline": b"Subject: nonl\n\nlast line",
    "nul_bytes": b"Subject: nul\n\na\x00b\n\x00\n\x00\x00\x00",
    "eight_bit": b"Subject: 8bit \xc3\xa4\n\n\x80\x81\xfe\xff\n\xe2\x82\xac euro\n",
    "dots": b"Subject: dots\n\n.leading\n..two\n...three\n. space\nmid.dle\n.",
    "lone_dot": b"Subject: lone\n\nbefore\n.\nafter\n.\r\n.",
    "empty": b"",
    "only_newline": b"\n",
    "only_cr": b"\r",
    "headers_only": b"Subject: no body\nX-A: b\n",
    "empty_lines": b"Subject: blank\n\n\n\n\nx\n\n",
    "cr_before_blank": b"Subject: a\n\r\nbody1\nbody2\nbody3\n",
    "big": big_message(),
}


@pytest.fixture(scope="module")
def wsrv(module_env, module_server):
    """One event loop (workers = 1) so the slow-reader test shares it."""
    names = {}
    for key, data in WIRE_CASES.items():
        names[key] = module_env.deliver("alice", data).name
    module_env.deliver("bob", WIRE_CASES["big"])
    module_env.deliver("bob", WIRE_CASES["dots"])
    module_env.deliver("carol", b"Subject: c\n\nhello carol\n")
    s = module_server(workers=1)
    # Map each case to its message number by UIDL order-independent RETR.
    with RawPOP3(s.host, s.port) as c:
        c.login("alice", PW["alice"])
        _, listing = c.multi("LIST")
        numbers = {}
        wires = {k: wire_form(v) for k, v in WIRE_CASES.items()}
        for line in listing.split(b"\r\n")[:-1]:
            n = int(line.split()[0])
            _, got = c.multi(f"RETR {n}")
            for k, w in wires.items():
                if got == w and k not in numbers:
                    numbers[k] = n
                    break
        c.cmd("QUIT")
    s.numbers = numbers
    return s


@pytest.mark.parametrize("case", list(WIRE_CASES))
def test_retr_exact(wsrv, case, raw):
    data = WIRE_CASES[case]
    want = wire_form(data)
    assert case in wsrv.numbers, f"no message RETRs as the wire form of {case!r}"
    n = wsrv.numbers[case]
    c = raw(wsrv)
    c.login("alice", PW["alice"])
    r = c.cmd(f"LIST {n}")
    assert r == b"+OK %d %d" % (n, len(want)), f"LIST {n} for {case}: {r!r}"
    st, got = c.multi(f"RETR {n}")
    assert st == b"+OK %d octets" % len(want), st
    assert got == want, f"RETR {case}: differs from the expected CRLF form"
    for k in (0, 2):
        st, got = c.multi(f"TOP {n} {k}")
        assert st.startswith(b"+OK"), st
        assert got == top_form(data, k), f"TOP {n} {k} for {case}: {got[:200]!r}"
    assert c.cmd("QUIT").startswith(b"+OK")


def test_list_total_matches_stat(wsrv, raw):
    c = raw(wsrv)
    c.login("alice", PW["alice"])
    st = c.cmd("STAT").split()
    want = sum(len(wire_form(d)) for d in WIRE_CASES.values())
    assert int(st[1]) == len(WIRE_CASES) and int(st[2]) == want, st


def test_pipelining_50_commands(wsrv, raw):
    c = raw(wsrv)
    n_dots = wsrv.numbers["dots"]
    n_lf = wsrv.numbers["lf"]
    cmds = ["USER alice", f"PASS {PW['alice']}"]
    while len(cmds) < 49:
        cmds += ["NOOP", "STAT", f"LIST {n_lf}", f"RETR {n_dots}", "UIDL",
                 f"TOP {n_lf} 1", "RETR 999", f"UIDL {n_dots}"]
    cmds = cmds[:49] + ["QUIT"]
    c.send("".join(x + "\r\n" for x in cmds).encode())
    multi = {"UIDL", "LIST", "RETR", "TOP"}
    for i, cmd in enumerate(cmds):
        st = c.readline()
        word = cmd.split()[0]
        if cmd == "RETR 999":
            assert st.startswith(b"-ERR"), f"#{i} {cmd}: {st!r}"
            continue
        assert st.startswith(b"+OK"), f"#{i} {cmd}: {st!r}"
        if word in multi and len(cmd.split()) == (1 if word in ("UIDL", "LIST") else
                                                  2 if word == "RETR" else 3):
            got = c.read_body()
            if cmd.startswith("RETR"):
                assert unstuff(got) == wire_form(WIRE_CASES["dots"]), f"#{i}"
            if cmd.startswith("TOP"):
                assert unstuff(got) == top_form(WIRE_CASES["lf"], 1), f"#{i}"
        if cmd == "QUIT":
            assert st.startswith(b"+OK popbox signing off"), st
    assert c.wait_closed(3)
    assert not c.buf, f"extra bytes after QUIT: {bytes(c.buf[:100])!r}"


def test_long_line_then_noop(wsrv, raw):
    c = raw(wsrv)
    c.login("carol", PW["carol"])
    c.send(b"A" * 100_000 + b"\r\nNOOP\r\n")
    r = c.readline()
    assert r.startswith(b"-ERR"), f"100 KB line: {r!r}"
    assert c.readline() == b"+OK", "NOOP after the long line"
    assert c.cmd("STAT").startswith(b"+OK 1 ")


@pytest.mark.parametrize("length", [511, 1000, 3000])
def test_over_long_line_does_not_swallow_next_command(wsrv, raw, length):
    """An over-long line and the command after it, in one send(): exactly one
    -ERR for the long line, then the next command is answered."""
    c = raw(wsrv, timeout=2)
    c.login("carol", PW["carol"])
    c.send(b"N" * length + b"\r\nNOOP\r\nSTAT\r\n")
    try:
        first = c.readline()
    except socket.timeout:
        pytest.fail(f"no reply at all to a {length}-byte line followed by "
                    f"NOOP and STAT in one send(): the server swallowed the "
                    f"commands after the over-long line")
    assert first.startswith(b"-ERR"), f"{length}-byte line: {first!r}"
    try:
        second = c.readline()
    except socket.timeout:
        pytest.fail(f"after a {length}-byte line the next command (NOOP) was "
                    f"swallowed: no reply")
    assert second == b"+OK", f"NOOP after a {length}-byte line: {second!r}"
    assert c.readline().startswith(b"+OK 1 "), "STAT"


def test_garbage_without_newline_bounded_memory(env, server, raw):
    # ASan's quarantine holds up to 256 MB of freed memory, which would
    # show up as RSS growth: keep it small for this server so VmRSS
    # measures what popboxd really keeps.
    opts = os.environ.get("ASAN_OPTIONS", "")
    wsrv = server(_env={"ASAN_OPTIONS": (opts + ":" if opts else "") +
                        "quarantine_size_mb=1"}, workers=1)
    c = raw(wsrv)
    c.login("carol", PW["carol"])
    before = server_rss_kb(wsrv)
    peak = before
    chunk = b"G" * (1 << 20)
    for i in range(50):
        c.send(chunk)
        if i % 5 == 4:
            peak = max(peak, server_rss_kb(wsrv))
    c.send(b"\r\nNOOP\r\n")
    r = c.readline()
    assert r.startswith(b"-ERR"), r
    assert c.readline() == b"+OK"
    peak = max(peak, server_rss_kb(wsrv))
    assert peak - before < 20 * 1024, \
        f"server RSS grew from {before} kB to {peak} kB on 50 MB without newline"
    assert c.cmd("STAT").startswith(b"+OK")


@pytest.mark.parametrize("line", [b"NO\x00OP", b"NOOP\x00", b"\x00", b"STAT\x1b",
                                  b"NO\rOP", b"LIST \x7f"])
def test_control_bytes_in_command(wsrv, raw, line):
    c = raw(wsrv)
    c.login("carol", PW["carol"])
    r = c.cmd(line)
    assert r.startswith(b"-ERR"), f"{line!r}: {r!r}"
    assert c.cmd("NOOP") == b"+OK"


def test_nul_in_user_name(wsrv, raw):
    c = raw(wsrv)
    r = c.cmd(b"USER car\x00ol")
    assert r.startswith(b"-ERR"), r


def test_bare_lf_command_terminator(wsrv, raw):
    c = raw(wsrv)
    c.send(b"USER carol\n")
    assert c.readline().startswith(b"+OK")
    c.send(f"PASS {PW['carol']}\n".encode())
    assert c.readline().startswith(b"+OK")
    c.send(b"NOOP\n")
    assert c.readline() == b"+OK"


def test_command_split_across_sends(wsrv, raw):
    c = raw(wsrv)
    c.login("carol", PW["carol"])
    for piece in (b"ST", b"A", b"T\r", b"\n"):
        c.send(piece)
        time.sleep(0.05)
    assert c.readline().startswith(b"+OK 1 ")


def test_slow_reader_does_not_block_others(wsrv, raw):
    """bob stops reading in the middle of a 5 MB RETR; on the same event loop
    (workers = 1) carol still logs in and fetches."""
    want = wire_form(WIRE_CASES["big"])
    slow = raw(wsrv, rcvbuf=65536)
    slow.login("bob", PW["bob"])
    _, listing = slow.multi("LIST")
    big_n = next(int(l.split()[0]) for l in listing.split(b"\r\n")[:-1]
                 if int(l.split()[1]) == len(want))
    slow.send(f"RETR {big_n}\r\n".encode())
    got = slow.sock.recv(1000)
    assert got.startswith(b"+OK"), got[:100]
    # bob reads nothing more now.
    t0 = time.monotonic()
    c = raw(wsrv, timeout=5)
    c.login("carol", PW["carol"])
    st, body = c.multi("RETR 1")
    assert st.startswith(b"+OK") and body == b"Subject: c\r\n\r\nhello carol\r\n"
    assert c.cmd("QUIT").startswith(b"+OK")
    assert time.monotonic() - t0 < 5, "other client was delayed by the slow reader"
    # bob can still finish his download, byte-exact.
    slow.buf += got
    status = slow.readline()
    assert status == b"+OK %d octets" % len(want)
    assert unstuff(slow.read_body()) == want
    assert slow.cmd("QUIT").startswith(b"+OK")


def test_half_close_after_pipelined_commands(wsrv):
    """A client may send all its commands, shut down its sending side
    (like `printf ... | nc -N`), and read the replies: TCP half-close is not
    the end of the session, and every pipelined command must be answered."""
    so = socket.create_connection((wsrv.host, wsrv.port), timeout=5)
    try:
        so.sendall(f"USER carol\r\nPASS {PW['carol']}\r\nSTAT\r\nNOOP\r\n"
                   f"QUIT\r\n".encode())
        so.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                d = so.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            out += d
    finally:
        so.close()
    lines = out.split(b"\r\n")
    assert len(lines) == 7 and lines[-1] == b"", \
        f"expected greeting + 5 replies, got {out!r}"
    assert lines[2].startswith(b"+OK maildrop has"), lines
    assert lines[3].startswith(b"+OK 1 "), lines
    assert lines[5].startswith(b"+OK popbox signing off"), lines


def test_output_backlog_is_bounded(env, server):
    """A client that pipelines many RETRs of a 5 MB message and reads
    nothing must cost bounded server memory (output stops being produced
    while the socket is full)."""
    env.deliver("bob", WIRE_CASES["big"])
    opts = os.environ.get("ASAN_OPTIONS", "")
    s = server(_env={"ASAN_OPTIONS": (opts + ":" if opts else "") +
                     "quarantine_size_mb=1"}, workers=1)
    c = RawPOP3(s.host, s.port, rcvbuf=65536)
    try:
        c.login("bob", PW["bob"])
        before = server_rss_kb(s)
        c.send(b"RETR 1\r\n" * 100)
        time.sleep(1.0)
        peak = server_rss_kb(s)
        assert peak - before < 20 * 1024, \
            f"RSS grew {before} -> {peak} kB with 100 unread RETRs pending"
        # Another client on the same loop is still served.
        with RawPOP3(s.host, s.port, timeout=5) as d:
            d.login("carol", PW["carol"])
            assert d.cmd("STAT") == b"+OK 0 0"
    finally:
        c.close()


CHUNK = 65536  # popboxd reads message files in pieces of this size


def boundary_cases():
    """Messages whose interesting bytes straddle a read-chunk boundary."""
    cases = {}
    for shift in (-2, -1, 0, 1):
        # The header/body separator "\r\n" (or "\n") split by the boundary.
        hdr = b"Subject: boundary\r\nX-Pad: "
        pad = CHUNK + shift - len(hdr) - 2  # so "\r\n\r\n" sits at the boundary
        cases[f"crlf_sep{shift}"] = hdr + b"p" * pad + b"\r\n\r\nbody1\r\nbody2\r\n.x\r\n"
        hdr = b"Subject: boundary\nX-Pad: "
        pad = CHUNK + shift - len(hdr) - 1
        cases[f"lf_sep{shift}"] = hdr + b"p" * pad + b"\n\nbody1\n.body2\nbody3\n"
        # A dot line and a CR LF pair split by the boundary, in the body.
        pre = b"Subject: dots\n\n"
        fill = CHUNK + shift - len(pre) - 1
        cases[f"dot{shift}"] = pre + b"d" * fill + b"\n.dot at boundary\r\n.\n.."
    return cases


BOUNDARY = boundary_cases()


@pytest.fixture(scope="module")
def bsrv(module_env, module_server):
    for data in BOUNDARY.values():
        module_env.deliver("dave", data)
    return module_server(workers=1)


def test_chunk_boundaries(bsrv, raw):
    c = raw(bsrv)
    c.login("dave", PW["dave"])
    want = {k: wire_form(v) for k, v in BOUNDARY.items()}
    _, listing = c.multi("LIST")
    found = {}
    for line in listing.split(b"\r\n")[:-1]:
        n = int(line.split()[0])
        st, got = c.multi(f"RETR {n}")
        keys = [k for k, w in want.items() if w == got and k not in found]
        assert keys, f"RETR {n} matches no boundary case (first bytes {got[:40]!r})"
        found[keys[0]] = n
        assert int(line.split()[1]) == len(got)
        for k in (0, 1, 2):
            st, top = c.multi(f"TOP {n} {k}")
            assert top == top_form(BOUNDARY[keys[0]], k), f"TOP {n} {k} for {keys[0]}"
    assert sorted(found) == sorted(BOUNDARY)
