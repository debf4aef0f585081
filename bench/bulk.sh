#!/usr/bin/env bash
# bulk.sh — bulk download (issue 7): RETR of BENCH_BULK_MB megabytes
# (default 200) in messages of about 100 KB, plain POP3 and implicit TLS,
# over 1 and 4 connections; MB/s and server CPU per MB, popboxd beside
# tuned Dovecot, and beside them the machine's limits measured in the
# same run (openssl speed -evp aes-128-gcm, 16 KB blocks; raw loopback TCP
# throughput with a Python sender/receiver pair).
#
#   bash bench/bulk.sh          (as root; from anywhere in the tree)
#
# Each connection (bench/tlsload bulk) logs in as its own user, RETRs all
# its messages, checks each RETR's octets after un-stuffing against LIST's
# size, QUITs.  With 1 connection user b1 holds the whole download; with 4,
# users b40..b43 hold a quarter each (the same files, hard-linked).  Bytes
# are the un-stuffed message octets; MB = 10^6 bytes.  Every case runs
# BENCH_ROUNDS times (default 3), servers in turn; medians and spread.  One warm-up
# download per server before (popboxd writes its cache, Dovecot its
# indexes; the page cache holds the messages): the figures are warm.
#
# Server CPU: user+system of all the server's processes (exited children
# included), after minus before (bench/common.sh cpu_ticks), per MB.
# CPU is counted in clock ticks (10 ms): with a small BENCH_BULK_MB the
# CPU per MB is coarse (a run under a tick shows 0).
#
# Knobs: BENCH_BULK_MB (200), BENCH_ROUNDS (3), BENCH_BUILD (build/release),
# BENCH_BULK_DOVECOT (1: run tuned Dovecot too), BENCH_POPBOXD (a popboxd
# binary to measure instead of BENCH_BUILD's), BENCH_NO_MAKE=1 (build
# nothing), BENCH_KEEP=1 (keep the
# temp dir).  Results: bench/results/bulk-DATE.md and bulk-DATE.tsv (the
# medians and spread, for bench/plot.sh).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${BENCH_BUILD:-build/release}
MB=${BENCH_BULK_MB:-200}
ROUNDS=${BENCH_ROUNDS:-3}
WITH_DOVECOT=${BENCH_BULK_DOVECOT:-1}
PASSWORD=bench-$RANDOM$RANDOM
TLSLOAD=$top/$build/bench/tlsload
POPBOXD=${BENCH_POPBOXD:-$top/$build/popboxd}
CLK_TCK=$(getconf CLK_TCK)
PY=/usr/bin/python3

say() { printf 'bulk.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (popboxd and Dovecot drop privileges)"
[ "${BENCH_NO_MAKE:-0}" = 1 ] || make --no-print-directory "$build/popboxd" "$build/bench/tlsload" >&2
# shellcheck source=bench/dovecot.sh
. "$top/bench/dovecot.sh"
. "$top/bench/common.sh"
[ "$WITH_DOVECOT" = 1 ] && dovecot_install
ulimit -Sn "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/popbox-bulk.XXXXXX)
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

NMSG=$((MB * 10))       # messages of ~100 KB
[ $((NMSG % 4)) -eq 0 ] || NMSG=$(((NMSG / 4 + 1) * 4))
say "making $NMSG messages of ~100 KB in $WORK"
mkdir -p "$WORK/tls"
# bench/corpus.py (seed 7): one user's worth, all read (cur/, :2,S).
CORPUS_LINE=$("$PY" "$top/bench/corpus.py" --root "$WORK/corpus" --user src --messages "$NMSG" \
	--size 98000-102000 --cur "$NMSG" --seed 7) || die "bench/corpus.py failed"
CORPUS_LINE=${CORPUS_LINE#corpus: }
CORPUS_BYTES=$(kv bytes <<<" $CORPUS_LINE")
say "corpus: $NMSG messages, $CORPUS_BYTES bytes"

# Users: b1 (all), b40..b43 (a quarter each); hard links, no copies.
mkusers() { # MAILROOT
	local root=$1 i=0 f q
	for u in b1 b40 b41 b42 b43; do mkdir -p "$root/$u/Maildir/new" "$root/$u/Maildir/cur" "$root/$u/Maildir/tmp"; done
	for f in "$WORK"/corpus/src/Maildir/cur/*; do
		ln "$f" "$root/b1/Maildir/cur/"
		q=$((i * 4 / NMSG))
		ln "$f" "$root/b4$q/Maildir/cur/"
		i=$((i + 1))
	done
	find "$root" -mindepth 3 -maxdepth 3 -type d -exec touch -d '-1 hour' {} +
	chown -R nobody:nogroup "$root"
}
mkpasswd() { # FILE
	local u
	for u in b1 b40 b41 b42 b43; do printf '%s:{PLAIN}%s::::::\n' "$u" "$PASSWORD"; done > "$1"
	chmod 600 "$1"
}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
	-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
	-keyout "$WORK/tls/ecdsa.key" -out "$WORK/tls/ecdsa.pem" 2>/dev/null
chmod 644 "$WORK/tls/"*


start_popboxd() { # MAILROOT PASSWD: sets SRV_PID SRV_PLAIN SRV_TLS
	local dir=$WORK/popboxd keys
	mkdir -p "$dir"
	free_port; SRV_PLAIN=$FREE_PORT
	free_port; SRV_TLS=$FREE_PORT
	cat > "$dir/popboxd.conf" <<EOF
# popboxd for bench/bulk.sh
listen = 127.0.0.1:$SRV_PLAIN
tls_listen = 127.0.0.1:$SRV_TLS
tls_cert_file = $WORK/tls/ecdsa.pem
tls_key_file = $WORK/tls/ecdsa.key
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
	local dir=$WORK/dovecot
	mkdir -p "$dir"
	free_port; SRV_PLAIN=$FREE_PORT
	free_port; SRV_TLS=$FREE_PORT
	chown dovecot "$2"
	dovecot_write_conf "$dir" tuned 100 "$2" "$1" \
		"$WORK/tls/ecdsa.pem" "$WORK/tls/ecdsa.key" "$SRV_PLAIN" "$SRV_TLS"
	dovecot_start "$dir" || die "dovecot did not start"
	SRV_PID=$DOVECOT_PID
	STARTED+=("dovecot:$SRV_PID")
}

# ---------------------------------------------------------------- machine limits

MACHINE=$(machine_line)
say "machine: $MACHINE"
RES=$WORK/results
mkdir -p "$RES"

say "openssl speed -evp aes-128-gcm -seconds 3"
AES16K=$(openssl speed -evp aes-128-gcm -seconds 3 2>/dev/null |
	awk '/^(AES-128-GCM|aes-128-gcm)/ { v = $NF; sub(/k$/, "", v); printf "%.0f", v * 1000 / 1e6 }')
say "AES-128-GCM, 16 KB blocks, one core: $AES16K MB/s"

loopback() { # STREAMS: MB/s of raw TCP over 127.0.0.1, 1 GB per stream
	"$PY" - "$1" <<'EOF'
import socket, sys, threading, time
streams = int(sys.argv[1]); total = 1 << 30
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(16)
port = srv.getsockname()[1]
def sink(c):
    buf = bytearray(1 << 20); v = memoryview(buf); n = 0
    while True:
        k = c.recv_into(v)
        if not k: break
        n += k
    c.close()
def accept():
    for _ in range(streams):
        c, _a = srv.accept(); threading.Thread(target=sink, args=(c,)).start()
threading.Thread(target=accept).start()
import multiprocessing
def send(_):
    s = socket.create_connection(("127.0.0.1", port)); b = b"x" * (1 << 20)
    for _ in range(total >> 20): s.sendall(b)
    s.close()
t0 = time.time()
# Senders in processes (the receivers are threads: recv_into releases the GIL).
ps = [multiprocessing.Process(target=send, args=(i,)) for i in range(streams)]
for p in ps: p.start()
for p in ps: p.join()
for t in threading.enumerate():
    if t is not threading.current_thread(): t.join()
print("%.0f" % (streams * total / (time.time() - t0) / 1e6))
EOF
}
say "loopback TCP"
LOOP1=$(loopback 1)
LOOP4=$(loopback 4)
say "loopback TCP: $LOOP1 MB/s (1 stream), $LOOP4 MB/s (4 streams)"

# ---------------------------------------------------------------- servers

LABELS=(popboxd) KINDS=(popboxd) PIDS=() PLAINS=() TLSS=()
[ "$WITH_DOVECOT" = 1 ] && { LABELS+=("Dovecot tuned"); KINDS+=(dovecot); }
for k in "${!KINDS[@]}"; do
	sdir=$WORK/srv$k
	mkdir -p "$sdir"
	mkusers "$sdir/mail"
	mkpasswd "$sdir/passwd"
	if [ "${KINDS[$k]}" = dovecot ]; then
		start_dovecot "$sdir/mail" "$sdir/passwd"
	else
		start_popboxd "$sdir/mail" "$sdir/passwd"
	fi
	PIDS+=("$SRV_PID"); PLAINS+=("$SRV_PLAIN"); TLSS+=("$SRV_TLS")
done
for p in "${PIDS[@]}"; do settle "$p"; done


# bulk_run K TRANSPORT CONC ROUND [warmup]
: > "$RES/bulk.tsv"
bulk_run() {
	local k=$1 tr=$2 conc=$3 round=$4 port flags=() out line c0 c1 la0 la1
	local label=${LABELS[$k]}
	if [ "$tr" = tls ]; then port=${TLSS[$k]}; flags=(--tls); else port=${PLAINS[$k]}; fi
	[ "${KINDS[$k]}" = dovecot ] && flags+=(--allow-added-crlf)
	if [ "$conc" = 1 ]; then flags+=(-u "b%d" -f 1); else flags+=(-u "b4%d" -f 0); fi
	out=$WORK/run-$k-$tr-$conc-$round.out
	sleep 0.5
	la0=$(loadavg)
	c0=$(cpu_ticks "${PIDS[$k]}")
	"$TLSLOAD" bulk -c "$conc" -t 600 --timeout 60 -p "$PASSWORD" "${flags[@]}" \
		127.0.0.1 "$port" </dev/null >"$out" 2>&1 || true
	c1=$(cpu_ticks "${PIDS[$k]}")
	la1=$(loadavg)
	[ "${5:-}" = warmup ] && return 0
	line=$(grep '^tlsload: bulk ' "$out" || true)
	if [ -z "$line" ]; then cat "$out" >&2; say "$label: no result"; return 0; fi
	local bytes mbs errs cli srv
	bytes=$(kv bytes <<<"$line"); mbs=$(kv mb_per_s <<<"$line")
	errs=$(kv errors <<<"$line"); cli=$(kv client_cpu_s <<<"$line")
	srv=$(awk -v a="$c0" -v b="$c1" -v n="$bytes" -v hz="$CLK_TCK" \
		'BEGIN { if (n > 0) printf "%.2f", (b - a) * 1e3 / hz / (n / 1e6); else print "-" }')
	cli=$(awk -v c="$cli" -v n="$bytes" 'BEGIN { if (n > 0) printf "%.2f", c * 1e3 / (n / 1e6); else print "-" }')
	say "$tr c=$conc round $round $label: $mbs MB/s, server $srv ms/MB, client $cli ms/MB, $bytes bytes, errors $errs"
	[ "$errs" = 0 ] || grep '^tlsload: failure' "$out" | sed 's/^/bulk.sh:   /' >&2 || true
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tr" "$conc" "$label" "$round" \
		"$mbs" "$srv" "$cli" "$errs" "$bytes" "$la0" "$la1" >> "$RES/bulk.tsv"
}

T_START=$(date +%s)
for k in "${!KINDS[@]}"; do
	bulk_run "$k" plain 1 0 warmup
	bulk_run "$k" plain 4 0 warmup
done
for tr in plain tls; do
	for conc in 1 4; do
		for ((r = 1; r <= ROUNDS; r++)); do
			for ((i = 0; i < ${#KINDS[@]}; i++)); do
				bulk_run $(((i + r - 1) % ${#KINDS[@]})) "$tr" "$conc" "$r"
			done
		done
	done
done
T_END=$(date +%s)

# Medians and spread, each figure on its own: spread.tsv: tr conc label
# runs, then median lo hi of mbs srv cli (columns 5-13).  medians.tsv
# (for bench/plot.sh): tr conc label mbs srv cli errs(sum) runs, then the
# lo and hi of mbs, srv and cli.
sort -t$'\t' -k1,1 -k2,2n -k3,3 -k4,4n "$RES/bulk.tsv" |
	awk -F'\t' -v OFS='\t' '{ print $1, $2, $3, $5, $6, $7 }' | spread 3 > "$RES/spread.tsv"
awk -F'\t' -v OFS='\t' 'NR == FNR { e[$1 "\t" $2 "\t" $3] += $8; next }
	{ print $1, $2, $3, $5, $8, $11, e[$1 "\t" $2 "\t" $3] + 0, $4, $6, $7, $9, $10, $12, $13 }' \
	"$RES/bulk.tsv" "$RES/spread.tsv" > "$RES/medians.tsv"

# popboxd ÷ Dovecot tuned per workload: ratio of the medians, and the
# spread of the per-round ratios, for MB/s and server CPU per MB.
ratio_rows() {
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
	NR == FNR { k = $1 "\t" $2; r[k "\t" $3] = $4; c[k "\t" $3] = $5
		if (!(k in seen)) { seen[k] = 1; o[++n] = k }; next }
	{ k = $1 "\t" $2 "\t" $4; if ($3 == "popboxd") { pr[k] = $5; pc[k] = $6 } else { dr[k] = $5; dc[k] = $6 } }
	END {
		for (k in pr) if ((k in dr) && dr[k] > 0 && dc[k] > 0) {
			split(k, f, "\t"); g = f[1] "\t" f[2]
			lr[g] = lr[g] " " pr[k] / dr[k]; lc[g] = lc[g] " " pc[k] / dc[k]
		}
		for (i = 1; i <= n; i++) { a = o[i] "\tpopboxd"; b = o[i] "\tDovecot tuned"
			if (!(a in r) || !(b in r) || r[b] == 0 || c[b] == 0) continue
			split(o[i], f, "\t")
			printf "| %s | %s | %.2f (%s) | %.2f (%s) |\n", f[1], f[2], r[a] / r[b], spr(lr[o[i]]), c[a] / c[b], spr(lc[o[i]])
		}
	}' "$RES/medians.tsv" "$RES/bulk.tsv"
}

report() {
	echo "## Bulk download: popboxd beside Dovecot ($(date -u +%Y-%m-%d))"
	echo
	echo "Machine: $MACHINE."
	echo
	echo "$NMSG messages, $CORPUS_BYTES bytes (about $((CORPUS_BYTES / NMSG)) each; bench/corpus.py, seed 7:"
	echo "$CORPUS_LINE), RETRed whole:"
	echo "1 connection (one user with all of them) or 4 (four users with a quarter"
	echo "each).  Warm: page cache, popboxd's cache and Dovecot's indexes made by a"
	echo "warm-up download.  $ROUNDS rounds, servers in turn; every figure is the median"
	echo "of the rounds and in brackets their spread ($(awk "$AWK_CELL"'BEGIN { print spread_name('"$ROUNDS"') }'); none when they agree"
	echo "at the precision shown).  MB = 10^6 bytes of un-stuffed message octets;"
	echo "server CPU is user+system of all its processes per MB; client CPU the load"
	echo "generator's.  Load average (1/5/15 min) before the first run"
	echo "$(head -n 1 "$RES/bulk.tsv" | cut -f10), after the last $(tail -n 1 "$RES/bulk.tsv" | cut -f11); every run's below: other work"
	echo "on the machine disturbs MB/s more than CPU per MB.  Took $((T_END - T_START)) s."
	echo
	echo "Machine limits, measured in this run: AES-128-GCM (openssl speed -evp, 16 KB"
	echo "blocks, one core) **$AES16K MB/s**; raw loopback TCP (Python sender and receiver,"
	echo "1 GB per stream) **$LOOP1 MB/s** with 1 stream, **$LOOP4 MB/s** with 4."
	echo
	echo "| transport | connections | server | MB/s | server CPU (ms/MB) | client CPU (ms/MB) | errors |"
	echo "|---|---:|---|---:|---:|---:|---:|"
	awk -F'\t' "$AWK_CELL"'{ printf "| %s | %s | %s | %s | %s | %s | %d |\n", $1, $2, $3,
		cell($4, $9, $10, 1), cell($5, $11, $12, 2), cell($6, $13, $14, 2), $7 }' "$RES/medians.tsv"
	echo
	if [ "$WITH_DOVECOT" = 1 ]; then
		echo "popboxd ÷ Dovecot tuned per workload: the ratio of the medians, and in"
		echo "brackets the spread of the per-round ratios; MB/s (above 1: popboxd moves"
		echo "more), server CPU per MB (below 1: popboxd needs less)."
		echo
		echo "| transport | connections | MB/s | server CPU per MB |"
		echo "|---|---:|---:|---:|"
		ratio_rows
		echo
	fi
	echo "<details><summary>Every run</summary>"
	echo
	echo "| transport | connections | server | round | MB/s | server CPU (ms/MB) | client CPU (ms/MB) | errors | bytes | load avg before → after |"
	echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"
	sort -t$'\t' -k1,1 -k2,2n -k3,3 -k4,4n "$RES/bulk.tsv" | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s → %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 }'
	echo
	echo "</details>"
}

mkdir -p "$top/bench/results"
stamp=$(date -u +%Y%m%d-%H%M%S)
outfile=$top/bench/results/bulk-$stamp.md
report | tee "$outfile"
{
	printf '# transport\tconnections\tserver\tmb_per_s\tserver_ms_per_mb\tclient_ms_per_mb\terrors\truns\tmb_lo\tmb_hi\tsrv_lo\tsrv_hi\tcli_lo\tcli_hi\n'
	cat "$RES/medians.tsv"
	printf '# limits\taes128gcm_16k_mb_per_s=%s\tloopback_1=%s\tloopback_4=%s\n' "$AES16K" "$LOOP1" "$LOOP4"
} > "$top/bench/results/bulk-$stamp.tsv"
say "written to $outfile"
