#!/usr/bin/python3
"""corpus.py — the one corpus generator of the benchmarks in bench/
(docs/performance.md): fills Maildirs with realistic messages,
deterministic from a seed, so that every workload and both servers read the
same kind of mail, and a rerun writes the same bytes.

    /usr/bin/python3 bench/corpus.py --root DIR [options]

Writes DIR/USER/Maildir/{new,cur,tmp} for each user.  A message has the
headers a delivered message has (Return-Path, Delivered-To, two Received,
a DKIM-Signature, From, To, Subject — some RFC 2047-encoded — Date,
Message-ID, MIME-Version) and one of three bodies: text/plain in 8bit
UTF-8; multipart/alternative (the same text, and HTML in quoted-printable);
or multipart/mixed (text and a base64 attachment).  Text lines are up to
76 octets and hold 8-bit bytes (UTF-8 words, and in some messages a
Latin-1 byte that is not UTF-8).  Every third message has a line that
starts with a dot, every fourth one that starts with two, every fifth a
line that is a lone dot; every --no-newline-every'th message of a user ends
without a final newline.  Sizes: uniform in --size MIN-MAX octets (or one
fixed size), give or take a line.

Options:
  --root DIR             where the users' directories go (made if missing)
  --users N              users (1)
  --user-format FMT      user names, a printf pattern with the user's number
                         (u%05d); --user NAME instead names the only user
  --first N              number of the first user (0)
  --messages N           messages per user (20)
  --size MIN[-MAX]       octets per message on disk (3200-4900)
  --cur N                the first N messages of each user in cur/ with
                         ":2,S" (read), the rest in new/ (0)
  --names plain|S|W|SW   file names as Postfix writes them (plain, the
                         default: each server must size the message itself),
                         or with ,S=octets on disk and/or ,W=octets with
                         every LF as CRLF
  --no-newline-every K   the K-th, 2K-th, ... message of each user ends
                         without a final newline (20; 0: none)
  --seed N               the seed (7)
  --age SECONDS          set the times of new/, cur/ and tmp/ that far back
                         (3600: a maildrop nothing was delivered to lately;
                         popboxd trusts its cache only for directories not
                         touched in the last seconds); 0 leaves them
  --owner USER[:GROUP]   chown everything written (as root)

Prints one line: "corpus: users=N messages=N bytes=N min=N max=N
dot_lines=N lone_dots=N no_final_newline=N eight_bit=N".
"""
import argparse
import os
import random
import sys
import time

WORDS = ("the of and to in is that for it as was with be by on not this are or "
         "from at which have an they you were their one all we can her has there "
         "been if more when will would who so no time about report server mailbox "
         "message delivery queue account retrieve protocol network client session "
         "password backup archive weekly monthly invoice meeting agenda project "
         "budget review draft attached please thanks regards schedule update "
         "release notes change request").split()
# 8-bit words: UTF-8 (and the HTML part's quoted-printable of them).
WORDS8 = ["Grüße", "naïve", "Straße", "déjà", "señor", "Ærø", "łódź", "café",
          "€100", "Zürich", "smörgåsbord", "façade", "Привет", "日本語"]
B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def parse_args():
    ap = argparse.ArgumentParser(description="Maildir corpus for bench/")
    ap.add_argument("--root", required=True)
    ap.add_argument("--users", type=int, default=1)
    ap.add_argument("--user-format", default="u%05d")
    ap.add_argument("--user")
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--size", default="3200-4900")
    ap.add_argument("--cur", type=int, default=0)
    ap.add_argument("--names", choices=("plain", "S", "W", "SW"), default="plain")
    ap.add_argument("--no-newline-every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--age", type=int, default=3600)
    ap.add_argument("--owner")
    a = ap.parse_args()
    lo, _, hi = a.size.partition("-")
    a.size_min = int(lo)
    a.size_max = int(hi) if hi else a.size_min
    if a.size_min < 1 or a.size_max < a.size_min or a.users < 1 or a.messages < 0:
        ap.error("bad --size, --users or --messages")
    return a


class Pools:
    """Lines to draw bodies from, made once from the seed (fast: a body
    is a run of consecutive lines from a random start)."""

    def __init__(self, rng):
        self.text = []
        for k in range(4000):
            words = []
            n = 0
            limit = 58 + k % 17
            while n < limit:
                w = rng.choice(WORDS8) if rng.random() < 0.04 else rng.choice(WORDS)
                words.append(w)
                n += len(w.encode()) + 1
            line = " ".join(words).encode()
            while len(line) > 76:          # 8-bit words are longer in octets
                line = line.rsplit(b" ", 1)[0]
            # Paragraphs: an empty line now and then.
            self.text.append(b"" if k % 9 == 8 else line)
        self.b64 = [bytes(rng.choice(B64) for _ in range(76)) for _ in range(2000)]
        self.html = []
        for line in self.text[:2000]:
            qp = line.replace(b"=", b"=3D")
            qp = b"".join(bytes([c]) if c < 128 else b"=%02X" % c for c in qp)
            self.html.append(b"<p>" + qp[:66] + b"</p>")


def run(pool, start, need, rng):
    """Consecutive pool lines from start until about need octets."""
    out = []
    n = 0
    i = start
    while n < need:
        line = pool[i % len(pool)]
        out.append(line)
        n += len(line) + 1
        i += 1
    return out


def specials(lines, k, rng, stats):
    """Lines that test dot-stuffing and 8-bit handling, by message number."""
    if not lines:
        return
    if k % 3 == 0:
        lines[rng.randrange(len(lines))] = b".signature follows the dot-stuffing rule"
        stats["dot_lines"] += 1
    if k % 4 == 1:
        lines[rng.randrange(len(lines))] = b"..two dots at the start of this line"
        stats["dot_lines"] += 1
    if k % 5 == 2:
        lines[rng.randrange(len(lines))] = b"."
        stats["lone_dots"] += 1
    if k % 7 == 3:
        # A Latin-1 byte, not UTF-8: servers must pass bytes through.
        lines[rng.randrange(len(lines))] = b"caf\xe9 cr\xe8me br\xfbl\xe9e, in ISO-8859-1"


def headers(user, k, t, rng, subject):
    mx = k % 3 + 1
    ss = "%02d" % (t % 60)
    date = time.strftime("%a, %d %b %Y %H:%M:", time.gmtime(t)) + ss + " +0000"
    b = lambda n: bytes(rng.choice(B64) for _ in range(n)).decode()
    return ("Return-Path: <sender%d@lists.example.net>\n"
            "Delivered-To: %s@example.org\n"
            "Received: from mx%d.example.net (mx%d.example.net [192.0.2.%d])\n"
            "\tby mail.example.org (Postfix) with ESMTPS id 4Q%08X\n"
            "\tfor <%s@example.org>; %s (UTC)\n"
            "Received: from [10.0.0.%d] (unknown [198.51.100.%d])\n"
            "\tby mx%d.example.net (Postfix) with ESMTPSA id %08X;\n"
            "\t%s (UTC)\n"
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net;\n"
            "\ts=sel2023; t=%d; h=from:to:subject:date:message-id;\n"
            "\tbh=%s;\n"
            "\tb=%s\n\t %s\n\t %s\n"
            "From: \"Sender %d\" <sender%d@lists.example.net>\n"
            "To: %s@example.org\n"
            "Subject: %s\n"
            "Date: %s\n"
            "Message-ID: <%d.%d.%s@lists.example.net>\n"
            "MIME-Version: 1.0\n"
            % (k, user, mx, mx, k % 250 + 1, t & 0xFFFFFFFF, user, date,
               k % 250 + 1, k % 250 + 1, mx, (t * 3) & 0xFFFFFFFF, date, t,
               b(44), b(70), b(70), b(52), k, k, user, subject, date, t, k,
               user)).encode()


def message(pools, rng, user, k, target, stats):
    t = 1700000000 + k * 3607 + rng.randrange(3600)
    if k % 6 == 1:
        subject = "=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_Z=C3=BCrich,_report_%d?=" % k
    else:
        subject = "Weekly report %d for %s" % (k, user)
    head = headers(user, k, t, rng, subject)
    kind = rng.random()
    body_need = max(target - len(head), 60)
    if kind < 0.5:
        head += (b"Content-Type: text/plain; charset=utf-8; format=flowed\n"
                 b"Content-Transfer-Encoding: 8bit\n\n")
        lines = run(pools.text, rng.randrange(4000), body_need - 60, rng)
        specials(lines, k, rng, stats)
        body = b"\n".join(lines) + b"\n"
    else:
        boundary = b"=_bench_%d_%d" % (k, rng.randrange(1 << 30))
        alt = kind < 0.8
        head += (b"Content-Type: multipart/%s; boundary=\"%s\"\n\n"
                 % (b"alternative" if alt else b"mixed", boundary))
        text_need = (body_need - 400) // 2 if alt else min(600, body_need // 4)
        text = run(pools.text, rng.randrange(4000), max(text_need, 40), rng)
        specials(text, k, rng, stats)
        parts = [b"This is a multi-part message in MIME format.\n",
                 b"--" + boundary + b"\n"
                 b"Content-Type: text/plain; charset=utf-8\n"
                 b"Content-Transfer-Encoding: 8bit\n\n" + b"\n".join(text) + b"\n"]
        done = len(head) + sum(len(p) for p in parts) + 200
        rest = max(target - done, 40)
        if alt:
            html = run(pools.html, rng.randrange(2000), rest, rng)
            parts.append(b"--" + boundary + b"\n"
                         b"Content-Type: text/html; charset=utf-8\n"
                         b"Content-Transfer-Encoding: quoted-printable\n\n"
                         b"<html><body>\n" + b"\n".join(html) + b"\n</body></html>\n")
        else:
            data = run(pools.b64, rng.randrange(2000), rest, rng)
            parts.append(b"--" + boundary + b"\n"
                         b"Content-Type: application/pdf; name=\"report-%d.pdf\"\n"
                         b"Content-Disposition: attachment; filename=\"report-%d.pdf\"\n"
                         b"Content-Transfer-Encoding: base64\n\n" % (k, k)
                         + b"\n".join(data) + b"\n")
        body = b"".join(parts) + b"--" + boundary + b"--\n"
    msg = head + body
    return msg


def main():
    a = parse_args()
    rng = random.Random(a.seed)
    pools = Pools(rng)
    stats = {"dot_lines": 0, "lone_dots": 0, "no_final_newline": 0, "eight_bit": 0}
    total = 0
    smin = None
    smax = 0
    count = 0
    users = [a.user] if a.user else [a.user_format % (a.first + i) for i in range(a.users)]
    os.makedirs(a.root, exist_ok=True)
    owner = None
    if a.owner:
        import grp
        import pwd
        u, _, g = a.owner.partition(":")
        pw = pwd.getpwnam(u)
        owner = (pw.pw_uid, grp.getgrnam(g).gr_gid if g else pw.pw_gid)
    for ui, user in enumerate(users):
        md = os.path.join(a.root, user, "Maildir")
        for d in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(md, d), exist_ok=True)
        for j in range(1, a.messages + 1):
            k = j + ui * 7       # message number: varies the specials per user
            target = rng.randint(a.size_min, a.size_max)
            msg = message(pools, rng, user, k, target, stats)
            if a.no_newline_every and j % a.no_newline_every == 0:
                msg = msg + b"-- \nno newline at the end of this message"
                stats["no_final_newline"] += 1
            if not msg.isascii():
                stats["eight_bit"] += 1
            base = "%d.M%dP%d.bench.example.org" % (1700000000 + j * 61 + ui,
                                                    100000 + j, 4096 + ui)
            if "S" in a.names:
                base += ",S=%d" % len(msg)
            if "W" in a.names:
                base += ",W=%d" % (len(msg) + msg.count(b"\n"))
            if j <= a.cur:
                path = os.path.join(md, "cur", base + ":2,S")
            else:
                path = os.path.join(md, "new", base)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, msg)
            os.close(fd)
            total += len(msg)
            count += 1
            smin = len(msg) if smin is None else min(smin, len(msg))
            smax = max(smax, len(msg))
        if a.age:
            then = time.time() - a.age
            for d in ("new", "cur", "tmp"):
                os.utime(os.path.join(md, d), (then, then))
    if owner:
        for dirpath, dirnames, filenames in os.walk(a.root):
            os.chown(dirpath, *owner)
            for f in filenames:
                os.chown(os.path.join(dirpath, f), *owner)
    print("corpus: users=%d messages=%d bytes=%d min=%d max=%d dot_lines=%d "
          "lone_dots=%d no_final_newline=%d eight_bit=%d"
          % (len(users), count, total, smin or 0, smax, stats["dot_lines"],
             stats["lone_dots"], stats["no_final_newline"], stats["eight_bit"]))


if __name__ == "__main__":
    sys.exit(main())
