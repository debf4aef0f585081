#!/usr/bin/env bash
# bigdrop.sh — one big maildrop (issue 7): BENCH_BIGDROP_MESSAGES messages
# (default 100,000) of about 4 KB in one Maildir's new/, as Postfix
# delivers them (names without ,S= or ,W=).  For popboxd and tuned
# Dovecot: the time from connect to STAT's reply (greeting, USER, PASS,
# STAT: the maildrop opened and listed), then a full UIDL and a full LIST,
# timed by Python's poplib (bench/bigdrop.sh's own helper; every listing's
# count checked against STAT).
#
#   bash bench/bigdrop.sh       (as root; from anywhere in the tree)
#
# Cases, each server in turn:
#   first login, page cache warm   popboxd's cache absent, Dovecot's index
#                                  absent (nobody logged in since delivery);
#                                  the messages' pages in the page cache
#   second login, page cache warm  the cache / index the first one wrote
#   first login, page cache cold   as the first, on a second copy of the
#                                  Maildir (hard links to the same files),
#                                  after `echo 3 > /proc/sys/vm/drop_caches`
#   second login, page cache cold  the second copy again, after another drop
# The cold rows need root and a writable drop_caches; when it cannot be
# written they are left out (said in the report).  One run of each case
# (BENCH_ROUNDS does not apply: a first login happens once per copy).
#
# Knobs: BENCH_BIGDROP_MESSAGES (100000), BENCH_BUILD (build/release),
# BENCH_BIGDROP_DOVECOT (1), BENCH_KEEP=1.  Result: bench/results/bigdrop-DATE.md.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${BENCH_BUILD:-build/release}
N=${BENCH_BIGDROP_MESSAGES:-100000}
WITH_DOVECOT=${BENCH_BIGDROP_DOVECOT:-1}
PASSWORD=bench-$RANDOM$RANDOM
POPBOXD=$top/$build/popboxd
PY=/usr/bin/python3

say() { printf 'bigdrop.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (popboxd and Dovecot drop privileges)"
make --no-print-directory "$build/popboxd" >&2
# shellcheck source=bench/dovecot.sh
. "$top/bench/dovecot.sh"
. "$top/bench/common.sh"
[ "$WITH_DOVECOT" = 1 ] && dovecot_install

WORK=$(mktemp -d /tmp/popbox-bigdrop.XXXXXX)
chmod 755 "$WORK"
STARTED=()


cleanup() {
	local e
	trap - EXIT INT TERM
	for e in "${STARTED[@]}"; do
		case $e in
		popboxd:*) stop_popboxd_tree "${e#*:}" ;;
		dovecot:*) dovecot_stop "${e#*:}" ;;
		esac
	done
	if [ "${BENCH_KEEP:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

# ---------------------------------------------------------------- corpus

say "writing $N messages of ~4 KB to $WORK/src"
T0=$(date +%s)
"$PY" - "$WORK/src" "$N" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
random.seed(7)
words = ("the of and to in is that for it as was with be by on not this are or from at which "
         "report server mailbox message delivery queue account retrieve protocol network client "
         "session password backup archive weekly invoice meeting agenda project budget review").split()
lines = [" ".join(random.choice(words) for _ in range(9 + k % 5)) for k in range(1000)]
for d in ("new", "cur", "tmp"):
    os.makedirs(root + "/" + d)
newdir = root + "/new/"
for j in range(n):
    head = ("Return-Path: <sender%d@lists.example.net>\nDelivered-To: big@example.org\n"
            "Received: from mx1.example.net (mx1.example.net [192.0.2.10])\n"
            "\tby mail.example.org (Postfix) with ESMTPS id 4Q%08X\n"
            "\tfor <big@example.org>; Tue, 14 Nov 2023 22:13:%02d +0000 (UTC)\n"
            "From: \"Sender %d\" <sender%d@lists.example.net>\nTo: big@example.org\n"
            "Subject: Notification %d\nDate: Tue, 14 Nov 2023 22:13:%02d +0000\n"
            "Message-ID: <%d.big@lists.example.net>\nMIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\n\n" % (j, j, j % 60, j, j, j, j % 60, j))
    target = 3200 + (j * 797) % 1700
    out, size, i = [head], len(head), (j * 31) % 1000
    while size < target:
        l = "." + lines[i] if i % 53 == 0 else lines[i]
        out.append(l + "\n"); size += len(l) + 1; i = (i + 1) % 1000
    fd = os.open("%s%d.V803I%xM%d.bench.example.org" % (newdir, 1700000000 + j, 4096 + j, j),
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, "".join(out).encode())
    os.close(fd)
EOF
CORPUS_BYTES=$(du -sb "$WORK/src" | awk '{ print $1 }')
say "corpus written in $(($(date +%s) - T0)) s: $N messages, $CORPUS_BYTES bytes"

# Copies: bigwarm (page cache warm cases) and bigcold (cold), hard links.
mkcopy() { # MAILROOT USER
	mkdir -p "$1/$2"
	cp -al "$WORK/src" "$1/$2/Maildir"
	# Directory times an hour back: delivery finished a while ago.
	find "$1/$2/Maildir" -mindepth 1 -maxdepth 1 -type d -exec touch -d '-1 hour' {} +
}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
	-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
	-keyout "$WORK/ecdsa.key" -out "$WORK/ecdsa.pem" 2>/dev/null
chmod 644 "$WORK/ecdsa.key" "$WORK/ecdsa.pem"


start_popboxd() { # MAILROOT PASSWD: sets SRV_PID SRV_PLAIN
	local dir=$WORK/popboxd keys tport
	mkdir -p "$dir"
	free_port; SRV_PLAIN=$FREE_PORT
	free_port; tport=$FREE_PORT
	cat > "$dir/popboxd.conf" <<EOF
# popboxd for bench/bigdrop.sh
listen = 127.0.0.1:$SRV_PLAIN
tls_listen = 127.0.0.1:$tport
tls_cert_file = $WORK/ecdsa.pem
tls_key_file = $WORK/ecdsa.key
passdb_file = $2
mail_location = $1/%u/Maildir
mail_user = nobody
EOF
	keys=$("$POPBOXD" -t -c "$dir/popboxd.conf" 2>&1) || { echo "$keys" >&2; die "popboxd: bad config"; }
	grep -q '^max_connections_per_address = ' <<<"$keys" &&
		echo "max_connections_per_address = 0" >> "$dir/popboxd.conf"
	local ok=1
	run_popboxd "$POPBOXD" "$dir/popboxd.conf" "$2" "$keys" || ok=0
	STARTED+=("popboxd:$SRV_PID")
	[ $ok = 1 ] || die "popboxd did not start"
}

start_dovecot() { # MAILROOT PASSWD
	local dir=$WORK/dovecot tport
	mkdir -p "$dir"
	free_port; SRV_PLAIN=$FREE_PORT
	free_port; tport=$FREE_PORT
	chown dovecot "$2"
	dovecot_write_conf "$dir" tuned 10 "$2" "$1" \
		"$WORK/ecdsa.pem" "$WORK/ecdsa.key" "$SRV_PLAIN" "$tport"
	dovecot_start "$dir" || die "dovecot did not start"
	SRV_PID=$DOVECOT_PID
	STARTED+=("dovecot:$SRV_PID")
}

# ---------------------------------------------------------------- servers

MACHINE=$(machine_line)
say "machine: $MACHINE"
CAN_DROP=0
if sync && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then CAN_DROP=1; else
	say "cannot write /proc/sys/vm/drop_caches: no cold-page-cache rows"; fi

LABELS=(popboxd) KINDS=(popboxd) PORTS=()
[ "$WITH_DOVECOT" = 1 ] && { LABELS+=("Dovecot tuned"); KINDS+=(dovecot); }
for k in "${!KINDS[@]}"; do
	root=$WORK/srv$k
	mkdir -p "$root"
	mkcopy "$root" bigwarm
	[ "$CAN_DROP" = 1 ] && mkcopy "$root" bigcold
	chown -R nobody:nogroup "$root"
	printf 'bigwarm:{PLAIN}%s::::::\nbigcold:{PLAIN}%s::::::\n' "$PASSWORD" "$PASSWORD" > "$root.passwd"
	chmod 600 "$root.passwd"
	if [ "${KINDS[$k]}" = dovecot ]; then
		start_dovecot "$root" "$root.passwd"
	else
		start_popboxd "$root" "$root.passwd"
	fi
	settle "$SRV_PID"
	PORTS+=("$SRV_PLAIN")
done

# timed USER PORT: prints "login_ms uidl_ms list_ms count"
timed() {
	"$PY" - 127.0.0.1 "$2" "$1" "$PASSWORD" <<'EOF'
import poplib, sys, time
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
t0 = time.monotonic()
p = poplib.POP3(host, port, timeout=900)
p.user(user); p.pass_(pw)
count, size = p.stat()
t1 = time.monotonic()
u = p.uidl()[1]
t2 = time.monotonic()
l = p.list()[1]
t3 = time.monotonic()
p.quit()
if len(u) != count or len(l) != count:
    sys.exit("listing of %d/%d lines, STAT said %d" % (len(u), len(l), count))
print("%.1f %.1f %.1f %d" % ((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, count))
EOF
}

RES=$WORK/res.tsv
: > "$RES"
measure() { # CASE LOGIN PAGECACHE USER
	local k out
	for k in "${!KINDS[@]}"; do
		if [ "$3" = cold ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
		out=$(timed "$4" "${PORTS[$k]}") || { say "${LABELS[$k]} $1: failed"; out="- - - -"; }
		say "${LABELS[$k]}, $2 login, page cache $3: login-to-STAT, UIDL, LIST ms, count: $out"
		printf '%s\t%s\t%s\t%s\n' "$2" "$3" "${LABELS[$k]}" "${out// /$'\t'}" >> "$RES"
	done
}
T_START=$(date +%s)
# Page cache warm: every message read once (drop_caches above emptied it).
find "$WORK/src" -type f -exec cat {} + > /dev/null
sync
measure a first warm bigwarm
measure b second warm bigwarm
if [ "$CAN_DROP" = 1 ]; then
	measure c first cold bigcold
	measure d second cold bigcold
fi
T_END=$(date +%s)

report() {
	echo "## Big maildrop: popboxd beside Dovecot ($(date -u +%Y-%m-%d))"
	echo
	echo "Machine: $MACHINE."
	echo
	echo "One Maildir, $N messages in new/ ($CORPUS_BYTES bytes; names without ,S= or ,W=),"
	echo "plain POP3 on 127.0.0.1, Python poplib.  Login to STAT: connect, greeting,"
	echo "USER, PASS, STAT's reply.  First login: popboxd's popbox.cache absent,"
	echo "Dovecot's index and dovecot-uidlist absent; second: what the first wrote."
	echo "Page cache warm: the files just written and read; cold: after"
	echo "\`echo 3 > /proc/sys/vm/drop_caches\` (dentries, inodes and pages)."
	[ "$CAN_DROP" = 1 ] || echo "drop_caches could not be written here: no cold rows."
	echo "One run per case.  Took $((T_END - T_START)) s."
	echo
	echo "| login | page cache | server | login to STAT (ms) | UIDL (ms) | LIST (ms) | messages |"
	echo "|---|---|---|---:|---:|---:|---:|"
	awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7 }' "$RES"
	echo
	if [ "$WITH_DOVECOT" = 1 ]; then
		echo "popboxd ÷ Dovecot tuned (below 1: popboxd is faster):"
		echo
		echo "| login | page cache | login to STAT | UIDL | LIST |"
		echo "|---|---|---:|---:|---:|"
		awk -F'\t' '{ k = $1 "\t" $2; v[k "\t" $3] = $4 "\t" $5 "\t" $6
			if (!(k in s)) { s[k] = 1; o[++n] = k } }
			END { for (i = 1; i <= n; i++) {
				split(v[o[i] "\tpopboxd"], a, "\t"); split(v[o[i] "\tDovecot tuned"], b, "\t")
				split(o[i], f, "\t")
				if (b[1] + 0 == 0 || b[2] + 0 == 0 || b[3] + 0 == 0) continue
				printf "| %s | %s | %.3f | %.3f | %.3f |\n", f[1], f[2], a[1] / b[1], a[2] / b[2], a[3] / b[3] } }' "$RES"
		echo
	fi
}

mkdir -p "$top/bench/results"
outfile=$top/bench/results/bigdrop-$(date -u +%Y%m%d-%H%M%S).md
report | tee "$outfile"
say "written to $outfile"
