#!/usr/bin/env bash
# bigdrop.sh — one big maildrop (issue 7): BENCH_BIGDROP_MESSAGES messages
# (default 100,000) of 3.2-4.9 KB (bench/corpus.py, seed 7) in one
# Maildir's new/, as Postfix delivers them (names without ,S= or ,W=).  For popboxd and tuned
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
# written they are left out (said in the report).  BENCH_ROUNDS rounds (3),
# each on its own copies (a first login happens once per copy), servers in
# turn; medians and spread.
#
# Knobs: BENCH_BIGDROP_MESSAGES (100000), BENCH_ROUNDS (3), BENCH_BUILD (build/release),
# BENCH_BIGDROP_DOVECOT (1), BENCH_POPBOXD (a popboxd binary to measure
# instead of BENCH_BUILD's), BENCH_NO_MAKE=1 (build nothing), BENCH_KEEP=1.
# Result: bench/results/bigdrop-DATE.md.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${BENCH_BUILD:-build/release}
N=${BENCH_BIGDROP_MESSAGES:-100000}
ROUNDS=${BENCH_ROUNDS:-3}
WITH_DOVECOT=${BENCH_BIGDROP_DOVECOT:-1}
PASSWORD=bench-$RANDOM$RANDOM
POPBOXD=${BENCH_POPBOXD:-$top/$build/popboxd}
PY=/usr/bin/python3

say() { printf 'bigdrop.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (popboxd and Dovecot drop privileges)"
[ "${BENCH_NO_MAKE:-0}" = 1 ] || make --no-print-directory "$build/popboxd" >&2
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
# bench/corpus.py (seed 7), all in new/; then src is that Maildir.
CORPUS_LINE=$("$PY" "$top/bench/corpus.py" --root "$WORK/corpus" --user big --messages "$N" \
	--size 3200-4900 --seed 7 --age 0) || die "bench/corpus.py failed"
CORPUS_LINE=${CORPUS_LINE#corpus: }
mv "$WORK/corpus/big/Maildir" "$WORK/src"
CORPUS_BYTES=$(kv bytes <<<" $CORPUS_LINE")
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
	: > "$root.passwd"
	for ((r = 1; r <= ROUNDS; r++)); do
		mkcopy "$root" "bigwarm$r"
		[ "$CAN_DROP" = 1 ] && mkcopy "$root" "bigcold$r"
		printf 'bigwarm%d:{PLAIN}%s::::::\nbigcold%d:{PLAIN}%s::::::\n' "$r" "$PASSWORD" "$r" "$PASSWORD" >> "$root.passwd"
	done
	chown -R nobody:nogroup "$root"
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
# measure LOGIN PAGECACHE USER ROUND: each server in turn (the order
# rotates each round); appends to res.tsv: login cache label round
# login_ms uidl_ms list_ms count load_before load_after
measure() {
	local i k out la0 la1
	for ((i = 0; i < ${#KINDS[@]}; i++)); do
		k=$(((i + $4 - 1) % ${#KINDS[@]}))
		if [ "$2" = cold ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
		la0=$(loadavg)
		out=$(timed "$3" "${PORTS[$k]}") || { say "${LABELS[$k]} $1 $2: failed"; out="- - - -"; }
		la1=$(loadavg)
		say "round $4, ${LABELS[$k]}, $1 login, page cache $2: login-to-STAT, UIDL, LIST ms, count: $out"
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "${LABELS[$k]}" "$4" "${out// /$'\t'}" \
			"$la0" "$la1" >> "$RES"
	done
}
T_START=$(date +%s)
for ((r = 1; r <= ROUNDS; r++)); do
	# Page cache warm: every message read once through the copies about
	# to be measured (drop_caches may have emptied it).
	find "$WORK"/srv*/"bigwarm$r" -type f -exec cat {} + > /dev/null
	sync
	measure first warm "bigwarm$r" "$r"
	measure second warm "bigwarm$r" "$r"
	if [ "$CAN_DROP" = 1 ]; then
		measure first cold "bigcold$r" "$r"
		measure second cold "bigcold$r" "$r"
	fi
done
T_END=$(date +%s)

report() {
	echo "## Big maildrop: popboxd beside Dovecot ($(date -u +%Y-%m-%d))"
	echo
	echo "Machine: $MACHINE."
	echo
	echo "One Maildir, $N messages in new/ ($CORPUS_BYTES bytes; bench/corpus.py, seed 7:"
	echo "$CORPUS_LINE; names without ,S= or ,W=),"
	echo "plain POP3 on 127.0.0.1, Python poplib.  Login to STAT: connect, greeting,"
	echo "USER, PASS, STAT's reply.  First login: popboxd's popbox.cache absent,"
	echo "Dovecot's index and dovecot-uidlist absent; second: what the first wrote."
	echo "Page cache warm: every file just read; cold: after"
	echo "\`echo 3 > /proc/sys/vm/drop_caches\` (dentries, inodes and pages)."
	[ "$CAN_DROP" = 1 ] || echo "drop_caches could not be written here: no cold rows."
	echo "$ROUNDS rounds, each on fresh copies (hard links), servers in turn; every figure"
	echo "is the median of the rounds and in brackets their spread"
	echo "($(awk "$AWK_CELL"'BEGIN { print spread_name('"$ROUNDS"') }')).  Load average (1/5/15 min) before the first case"
	echo "$(head -n 1 "$RES" | cut -f9), after the last $(tail -n 1 "$RES" | cut -f10).  Took $((T_END - T_START)) s."
	echo
	echo "| login | page cache | server | login to STAT (ms) | UIDL (ms) | LIST (ms) | messages |"
	echo "|---|---|---|---:|---:|---:|---:|"
	awk -F'\t' -v OFS='\t' '{ print $1, $2, $3, $5, $6, $7 }' "$RES" | spread 3 > "$WORK/spread.tsv"
	awk -F'\t' "$AWK_CELL"'NR == FNR { c[$1 "\t" $2 "\t" $3] = $8; next }
		{ printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, cell($5, $6, $7, 1),
			cell($8, $9, $10, 1), cell($11, $12, $13, 1), c[$1 "\t" $2 "\t" $3] }' "$RES" "$WORK/spread.tsv"
	echo
	if [ "$WITH_DOVECOT" = 1 ]; then
		echo "popboxd ÷ Dovecot tuned (below 1: popboxd is faster): the ratio of the"
		echo "medians, and in brackets the spread of the per-round ratios."
		echo
		echo "| login | page cache | login to STAT | UIDL | LIST |"
		echo "|---|---|---:|---:|---:|"
		awk -F'\t' '
		function sortv(n,   i, j, t) { for (i = 2; i <= n; i++) { t = x[i]
			for (j = i - 1; j >= 1 && x[j] > t; j--) x[j + 1] = x[j]; x[j + 1] = t } }
		function spr(list,   n, i, parts) {
			n = split(list, parts, " "); if (n == 0) return "-"
			for (i = 1; i <= n; i++) x[i] = parts[i] + 0
			sortv(n)
			if (n <= 3) return sprintf("%.2f–%.2f", x[1], x[n])
			return sprintf("%.2f–%.2f", x[int(0.25 * (n - 1) + 0.5) + 1], x[int(0.75 * (n - 1) + 0.5) + 1])
		}
		NR == FNR { k = $1 "\t" $2; for (m = 0; m < 3; m++) med[k "\t" $3, m] = $(5 + 3 * m)
			if (!(k in s)) { s[k] = 1; o[++n] = k }; next }
		{ k = $1 "\t" $2 "\t" $4; for (m = 0; m < 3; m++) v[k "\t" $3, m] = $(5 + m) }
		END {
			for (i = 1; i <= n; i++) {
				line = ""
				for (m = 0; m < 3; m++) {
					a = med[o[i] "\tpopboxd", m]; b = med[o[i] "\tDovecot tuned", m]
					if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) { line = line " | -"; continue }
					l = ""
					for (r = 1; r <= 1000; r++) {
						pa = v[o[i] "\t" r "\tpopboxd", m]; pb = v[o[i] "\t" r "\tDovecot tuned", m]
						if (pa == "" && pb == "") break
						if (pa != "" && pb != "" && pa != "-" && pb != "-" && pb + 0 > 0) l = l " " pa / pb
					}
					line = line sprintf(" | %.2f (%s)", a / b, spr(l))
				}
				split(o[i], f, "\t")
				printf "| %s | %s%s |\n", f[1], f[2], line
			}
		}' "$WORK/spread.tsv" "$RES"
		echo
	fi
	echo "<details><summary>Every run</summary>"
	echo
	echo "| login | page cache | server | round | login to STAT (ms) | UIDL (ms) | LIST (ms) | messages | load avg before → after |"
	echo "|---|---|---|---:|---:|---:|---:|---:|---|"
	awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s → %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }' "$RES"
	echo
	echo "</details>"
}

mkdir -p "$top/bench/results"
outfile=$top/bench/results/bigdrop-$(date -u +%Y%m%d-%H%M%S).md
report | tee "$outfile"
say "written to $outfile"
