#!/usr/bin/env bash
# fetch.sh — fetching (issue 6): the time to download BENCH_FETCH_MESSAGES
# (2,000) messages of about 4-10 KB from popboxd through a link with
# 20 ms of latency each way, and delete them, popbox-fetch beside mpop and
# fetchmail, each storing one file per message in a local Maildir.
#
#   bash bench/fetch.sh         (as root; from anywhere in the tree)
#
# The server: popboxd (BENCH_BUILD's), one user whose maildrop is refilled
# before every run with the same messages (bench/corpus.py, seed 7; hard
# links of the corpus files, popboxd's cache removed).  Between client and
# server: bench/latency-proxy.py, which holds every chunk of bytes 20 ms in
# each direction (BENCH_FETCH_DELAY_MS), so each round trip costs 40 ms
# more, as on a long-distance link, while bandwidth stays loopback's.
# Transports: plain POP3 and implicit TLS (the certificate verified by each
# client against the self-signed certificate made here).  Every client logs
# in with USER/PASS, fetches every message (no state from a previous run),
# deletes them on the server, and QUITs:
#   popbox-fetch  -c CONF: auth = user, deliver = maildir:DEST, keep = no
#                 (a file per message: tmp/, fsync, rename into new/, fsync
#                 of new/; the UIDL record fdatasynced before each DELE)
#   mpop          --auth=user --delivery=maildir,DEST --keep=off
#                 --only-new=off --received-header=off (PIPELINING as the
#                 server offers it: its default, auto)
#   fetchmail     --all --nokeep --sslproto '' (plain: no STLS) with an MDA,
#                 since it has no Maildir delivery of its own: a small sh
#                 script that writes stdin to DEST/tmp/, fsyncs the file
#                 (coreutils sync FILE) and renames it into DEST/new/ (no
#                 fsync of the directory): one file per message, durable, as
#                 near to the others as an external MDA gets; its processes
#                 (sh, date, cat, sync, mv per message) are in fetchmail's
#                 CPU.  fetchmail does not pipeline: a round trip per RETR
#                 and per DELE.
# Each run is checked: BENCH_FETCH_MESSAGES files in DEST, none left on
# the server; a run that fails the check is counted in "errors" and left
# out of the figures.
#
# Where the clients store: every run's DEST and its state directory (the
# client's config, popbox-fetch's uidl_file, mpop's uidls file,
# fetchmail's idfile and pidfile, HOME) are new directories on a file
# system of the bench's own: by default a fresh ext4 with a journal in a
# sparse image file in the temp dir, loop-mounted (bench/common.sh
# mail_fs_setup, as bench/deliver.sh does), so that no deletions, ours or
# other work's, make creating files cost more (on this VM's root file
# system, an ext4 without a journal, they cost popbox-fetch half its CPU
# in the kernel); nothing is deleted on it until the end.  The result
# names the file system.  The server's maildrop, the clients' output and
# their times stay in the temp dir.
#
# Figures per client and transport over BENCH_ROUNDS rounds (3; clients in
# turn, the order rotating each round): wall time (median, and min–max),
# messages per second (of the median), client CPU (user+system of the
# client and every process it waited for, from GNU time), and the ratios
# popbox-fetch ÷ mpop and popbox-fetch ÷ fetchmail of the median wall
# times (below 1: popbox-fetch is faster), with the spread of the
# per-round ratios.  The load average before and after every run is
# recorded: the machine may be shared.
#
# Knobs: BENCH_FETCH_MESSAGES (2000), BENCH_FETCH_SIZE (4000-10000 octets),
# BENCH_FETCH_DELAY_MS (20), BENCH_FETCH_TRANSPORTS ("plain tls"),
# BENCH_FETCH_CLIENTS ("popbox-fetch mpop fetchmail"), BENCH_ROUNDS (3),
# BENCH_FETCH_FS (else BENCH_FS): "loop" (default) or "tmp" (the clients
# store in the temp dir's own file system), BENCH_FETCH_FS_MB (else
# BENCH_FS_MB): the image's size (4096, sparse; more when the runs need
# it), BENCH_BUILD (build/release), BENCH_NO_MAKE=1 (build nothing),
# BENCH_KEEP=1 (keep the temp dir, the file system still mounted: umount
# it by hand).  Needs root (mount).  Installs fetchmail with apt-get if it
# is missing (mpop comes with scripts/install-deps.sh).  Results:
# bench/results/fetch-DATE.md and fetch-DATE.tsv (every run).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${BENCH_BUILD:-build/release}
case $build in /*) ;; *) build=$top/$build ;; esac
NMSG=${BENCH_FETCH_MESSAGES:-2000}
SIZE=${BENCH_FETCH_SIZE:-4000-10000}
DELAY=${BENCH_FETCH_DELAY_MS:-20}
TRANSPORTS=${BENCH_FETCH_TRANSPORTS:-plain tls}
CLIENTS=${BENCH_FETCH_CLIENTS:-popbox-fetch mpop fetchmail}
ROUNDS=${BENCH_ROUNDS:-3}
PASSWORD=bench-$RANDOM$RANDOM
POPBOXD=$build/popboxd
FETCH=$build/popbox-fetch
PY=/usr/bin/python3
BUSER=fetchbench

say() { printf 'fetch.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (popboxd drops privileges; fetchmail may be installed)"
WANT_FETCH=0
case " $CLIENTS " in *" popbox-fetch "*) WANT_FETCH=1 ;; esac
if [ "${BENCH_NO_MAKE:-0}" != 1 ]; then
	rel=${build#"$top"/}
	targets=("$rel/popboxd")
	[ $WANT_FETCH = 1 ] && targets+=("$rel/popbox-fetch")
	make --no-print-directory BUILD="$rel" "${targets[@]}" >&2
fi
[ $WANT_FETCH = 0 ] || [ -x "$FETCH" ] || die "$FETCH missing (tools/popbox-fetch.c not built)"
# shellcheck source=bench/dovecot.sh
. "$top/bench/dovecot.sh"    # proc_tree, for common.sh
# shellcheck source=bench/common.sh
. "$top/bench/common.sh"
for c in $CLIENTS; do
	case $c in
	popbox-fetch) ;;
	mpop) command -v mpop >/dev/null || die "mpop missing (scripts/install-deps.sh)" ;;
	fetchmail)
		if ! command -v fetchmail >/dev/null; then
			say "installing fetchmail (Debian)"
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				--no-install-recommends fetchmail >&2
		fi ;;
	*) die "unknown client $c (BENCH_FETCH_CLIENTS: popbox-fetch mpop fetchmail)" ;;
	esac
done
[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) missing: apt-get install time"

WORK=$(mktemp -d /tmp/popbox-fetchbench.XXXXXX)
chmod 755 "$WORK"
STARTED=()

cleanup() {
	local e
	trap - EXIT INT TERM
	for e in "${STARTED[@]}"; do
		case $e in
		popboxd:*) stop_popboxd_tree "${e#*:}" ;;
		proxy:*) wait_stop "${e#*:}" 5 ;;
		esac
	done
	remove_work_dir "$WORK"
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

# ---------------------------------------------------------------- corpus, server

say "making $NMSG messages of $SIZE octets in $WORK"
CORPUS_LINE=$("$PY" "$top/bench/corpus.py" --root "$WORK/corpus" --user src \
	--messages "$NMSG" --size "$SIZE" --seed 7 --age 0) || die "bench/corpus.py failed"
CORPUS_LINE=${CORPUS_LINE#corpus: }
CORPUS_BYTES=$(kv bytes <<<" $CORPUS_LINE")
SRC=$WORK/corpus/src/Maildir/new
MAILDROP=$WORK/mail/$BUSER/Maildir

# The clients' file system (bench/common.sh mail_fs_setup): by default a
# fresh journalled ext4 of its own, loop-mounted in the temp dir, holding
# every run's Maildir and client state (nothing is deleted on it: each run
# gets new directories).  On this VM's root file system, an ext4 without
# a journal, creating files after many deletions (ours and other work's)
# cost popbox-fetch half its CPU in the kernel (recently_deleted()).  The
# server's maildrop stays in the temp dir.  A message takes whole 4 KiB
# blocks: its size and 4 KiB more is plenty.
read -r -a CL <<<"$CLIENTS"
FS_RUNS=$((1 + $(wc -w <<<"$TRANSPORTS") * ROUNDS * ${#CL[@]}))
need=$(awk -v r="$FS_RUNS" -v b="$CORPUS_BYTES" -v n="$NMSG" \
	'BEGIN { printf "%d", r * (b + 4096 * n) * 1.1 / 1048576 + 512 }')
mail_fs_setup "$WORK" "$need" $((FS_RUNS * (NMSG + 20))) BENCH_FETCH
say "client Maildirs on: $MAIL_FS_LINE"

refill() { # the maildrop: exactly the corpus, in new/, nothing cached
	rm -rf "$MAILDROP"
	mkdir -p "$MAILDROP/new" "$MAILDROP/cur" "$MAILDROP/tmp"
	find "$SRC" -maxdepth 1 -type f -exec ln -t "$MAILDROP/new/" {} +
	chown -R nobody:nogroup "$WORK/mail"
}

mkdir -p "$WORK/tls" "$WORK/popboxd"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
	-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
	-keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null
chmod 600 "$WORK/tls/key.pem"
chmod 644 "$WORK/tls/cert.pem"
printf '%s:{PLAIN}%s::::::\n' "$BUSER" "$PASSWORD" > "$WORK/passwd"
chmod 600 "$WORK/passwd"
refill

free_port; SRV_PLAIN=$FREE_PORT
free_port; SRV_TLS=$FREE_PORT
cat > "$WORK/popboxd/popboxd.conf" <<EOF
# popboxd for bench/fetch.sh
listen = 127.0.0.1:$SRV_PLAIN
tls_listen = 127.0.0.1:$SRV_TLS
tls_cert_file = $WORK/tls/cert.pem
tls_key_file = $WORK/tls/key.pem
passdb_file = $WORK/passwd
mail_location = $WORK/mail/%u/Maildir
mail_user = nobody
EOF
KEYS=$("$POPBOXD" -t -c "$WORK/popboxd/popboxd.conf" 2>&1) || { echo "$KEYS" >&2; die "popboxd: bad config"; }
ok=1
run_popboxd "$POPBOXD" "$WORK/popboxd/popboxd.conf" "$WORK/passwd" "$KEYS" || ok=0
STARTED+=("popboxd:$SRV_PID")
[ $ok = 1 ] || die "popboxd did not start"
POPBOXD_PID=$SRV_PID

start_proxy() { # TARGET_PORT: sets PROXY_PORT
	local out=$WORK/proxy-$1.out pid i
	"$PY" "$top/bench/latency-proxy.py" 0 "127.0.0.1:$1" "$DELAY" >"$out" 2>&1 &
	pid=$!
	STARTED+=("proxy:$pid")
	for i in $(seq 1 100); do
		PROXY_PORT=$(sed -n 's/^port //p' "$out")
		[ -n "$PROXY_PORT" ] && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	cat "$out" >&2
	die "latency-proxy.py did not start"
}
start_proxy "$SRV_PLAIN"; PROXY_PLAIN=$PROXY_PORT
start_proxy "$SRV_TLS"; PROXY_TLS=$PROXY_PORT
say "popboxd on $SRV_PLAIN (plain) and $SRV_TLS (TLS); proxies (+$DELAY ms each way) on $PROXY_PLAIN and $PROXY_TLS"

# fetchmail's MDA: one message on stdin -> one durable file in the Maildir $1.
cat > "$WORK/mda.sh" <<'EOF'
#!/bin/sh
f=$1/tmp/$(date +%s.%N).$$
cat > "$f" && sync "$f" && mv "$f" "$1/new/"
EOF
chmod 755 "$WORK/mda.sh"

# ---------------------------------------------------------------- one run

client_cmd() { # CLIENT TRANSPORT DEST STATE: sets CMD
	local c=$1 tr=$2 dest=$3 state=$4 port host
	if [ "$tr" = tls ]; then port=$PROXY_TLS; host=localhost; else port=$PROXY_PLAIN; host=127.0.0.1; fi
	case $c in
	popbox-fetch)
		{
			echo "[account bench]"
			echo "host = $host"
			echo "port = $port"
			if [ "$tr" = tls ]; then
				echo "tls = implicit"
				echo "ca_file = $WORK/tls/cert.pem"
			else
				echo "tls = none"
			fi
			echo "user = $BUSER"
			echo "password = $PASSWORD"
			echo "auth = user"
			echo "deliver = maildir:$dest"
			echo "keep = no"
			echo "uidl_file = $state/uidl"
		} > "$state/popbox-fetch.conf"
		chmod 600 "$state/popbox-fetch.conf"
		CMD=("$FETCH" -c "$state/popbox-fetch.conf")
		;;
	mpop)
		CMD=(mpop --host="$host" --port="$port" --auth=user --user="$BUSER"
			--passwordeval="echo $PASSWORD" --uidls-file="$state/uidls"
			--delivery="maildir,$dest" --keep=off --only-new=off
			--received-header=off)
		if [ "$tr" = tls ]; then
			CMD+=(--tls=on --tls-starttls=off --tls-trust-file="$WORK/tls/cert.pem")
		else
			CMD+=(--tls=off)
		fi
		;;
	fetchmail)
		{
			echo "set no bouncemail"
			echo "set no syslog"
			printf 'poll %s protocol pop3 port %s auth password\n' "$host" "$port"
			printf '  user "%s" there with password "%s" is root here\n' "$BUSER" "$PASSWORD"
			printf '  fetchall nokeep no rewrite mda "%s %s"\n' "$WORK/mda.sh" "$dest"
			if [ "$tr" = tls ]; then
				printf '  ssl sslcertck sslcertfile "%s"\n' "$WORK/tls/cert.pem"
			else
				echo "  sslproto ''"
			fi
		} > "$state/fetchmailrc"
		chmod 600 "$state/fetchmailrc"
		CMD=(fetchmail -f "$state/fetchmailrc" --idfile "$state/fetchids"
			--pidfile "$state/fetchmail.pid" --nodetach)
		;;
	esac
}

count_files() { # DIR...: regular files directly in each
	find "$@" -maxdepth 1 -type f 2>/dev/null | wc -l
}

RES=$WORK/results
mkdir -p "$RES" "$WORK/log"
: > "$RES/runs.tsv"
RUN_NO=0
# run_once CLIENT TRANSPORT ROUND [warmup]: one run into a new Maildir
# (DEST) and state directory (the client's config, UIDL/id file, HOME) on
# the clients' file system; its output and times in the temp dir's log/.
run_once() { # CLIENT TRANSPORT ROUND [warmup]
	local c=$1 tr=$2 round=$3 dest state log rc=0
	local t0 t1 wall cpu la0 la1 got left errs=0
	RUN_NO=$((RUN_NO + 1))
	dest=$MAIL_FS/run$RUN_NO/dest
	state=$MAIL_FS/run$RUN_NO/state
	log=$WORK/log/run$RUN_NO
	refill
	mkdir -p "$dest/new" "$dest/cur" "$dest/tmp" "$state"
	chmod 700 "$state"
	client_cmd "$c" "$tr" "$dest" "$state"
	sync
	sleep 0.5
	la0=$(loadavg)
	t0=$(date +%s.%N)
	HOME=$state /usr/bin/time -f '%U %S' -o "$log.time" "${CMD[@]}" \
		</dev/null >"$log.out" 2>&1 || rc=$?
	t1=$(date +%s.%N)
	la1=$(loadavg)
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	cpu=$(tail -n 1 "$log.time" | awk '{ printf "%.2f", $1 + $2 }')
	got=$(count_files "$dest/new" "$dest/cur")
	left=$(count_files "$MAILDROP/new" "$MAILDROP/cur")
	if [ "$rc" -ne 0 ] || [ "$got" -ne "$NMSG" ] || [ "$left" -ne 0 ]; then
		errs=1
		say "$tr $c round $round: FAILED (exit $rc, $got stored, $left left on the server):"
		tail -n 5 "$log.out" | sed 's/^/fetch.sh:   /' >&2
	fi
	say "$tr round $round $c: ${wall} s, client CPU ${cpu} s, $got stored, $left left, exit $rc (load $la0 -> $la1)"
	[ "${4:-}" = warmup ] && return 0
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tr" "$c" "$round" "$wall" "$cpu" \
		"$errs" "$la0" "$la1" >> "$RES/runs.tsv"
}

MACHINE=$(machine_line)
say "machine: $MACHINE"
T_START=$(date +%s)
LOAD_START=$(loadavg)
# One warm-up run (page cache, popboxd's processes), not counted.
first_tr=${TRANSPORTS%% *}
run_once "${CL[0]}" "$first_tr" 0 warmup
for tr in $TRANSPORTS; do
	for ((r = 1; r <= ROUNDS; r++)); do
		for ((i = 0; i < ${#CL[@]}; i++)); do
			run_once "${CL[$(((i + r - 1) % ${#CL[@]}))]}" "$tr" "$r"
		done
	done
done
T_END=$(date +%s)
LOAD_END=$(loadavg)

# ---------------------------------------------------------------- report

# Per transport and client, over the runs without errors: median, min and
# max of wall and CPU.
summary() {
	awk -F'\t' -v OFS='\t' '$6 == 0 { print $1, $2, $4, $5 }' "$RES/runs.tsv" | spread 2
}

ratio_rows() { # transport client(popbox-fetch) other: median ratio (min–max of per-round)
	awk -F'\t' -v n="$NMSG" '
	function sortv(k,   i, j, t) { for (i = 2; i <= k; i++) { t = x[i]
		for (j = i - 1; j >= 1 && x[j] > t; j--) x[j + 1] = x[j]; x[j + 1] = t } }
	NR == FNR { if ($2 != "popbox-fetch") med[$1 "\t" $2] = $4; else pf[$1] = $4; next }
	$6 == 0 { w[$1 "\t" $2 "\t" $3] = $4; tr[$1] = 1; cl[$2] = 1 }
	END {
		for (t in tr) for (c in cl) {
			if (c == "popbox-fetch" || !((t "\t" c) in med) || !(t in pf)) continue
			k = 0
			for (key in w) {
				split(key, f, "\t")
				if (f[1] != t || f[2] != "popbox-fetch") continue
				o = t "\t" c "\t" f[3]
				if (o in w && w[o] > 0) x[++k] = w[key] / w[o]
			}
			sortv(k)
			s = !k ? "-" : sprintf("%.3f", x[1]) == sprintf("%.3f", x[k]) ? sprintf("%.3f", x[1]) : sprintf("%.3f–%.3f", x[1], x[k])
			printf "| %s | popbox-fetch ÷ %s | %.3f (%s) |\n", t, c, pf[t] / med[t "\t" c], s
		}
	}' "$RES/summary.tsv" "$RES/runs.tsv" | sort
}

client_versions() {
	local c v out=()
	for c in $CLIENTS; do
		case $c in
		popbox-fetch) v="popbox-fetch ($(basename "$build"))" ;;
		mpop) v=$(mpop --version 2>/dev/null | head -n 1 | sed 's/ version / /') ;;
		fetchmail) v="fetchmail $(fetchmail --version 2>/dev/null | sed -n 's/^This is fetchmail release \([^+ ]*\).*/\1/p' | head -n 1)" ;;
		esac
		out+=("$v")
	done
	local IFS=,
	local joined="${out[*]}"
	echo "${joined//,/, }"
}

summary > "$RES/summary.tsv"
report() {
	echo "## Fetching $NMSG messages through $DELAY ms each way ($(date -u +%Y-%m-%d))"
	echo
	echo "Machine: $MACHINE; clients: $(client_versions)."
	echo
	echo "$NMSG messages, $CORPUS_BYTES bytes (about $((CORPUS_BYTES / NMSG)) each; bench/corpus.py,"
	echo "seed 7: $CORPUS_LINE) in one popboxd maildrop, refilled before every run;"
	echo "each client logs in (USER/PASS), downloads all of them into a local Maildir"
	echo "(one file per message), deletes them on the server and QUITs, through"
	echo "bench/latency-proxy.py ($DELAY ms each way).  popbox-fetch and mpop store"
	echo "through their own Maildir delivery; fetchmail through a small sh MDA (file"
	echo "fsynced, renamed into new/; its processes count in fetchmail's CPU)."
	echo "The clients' Maildirs and state (a new directory each run) on: $MAIL_FS_LINE."
	echo "$ROUNDS rounds, clients in turn (order rotating); median and in brackets"
	echo "min–max of the rounds.  Client CPU: user+system of the client and the"
	echo "processes it waited for.  Load average (1/5/15 min) $LOAD_START at the"
	echo "start, $LOAD_END at the end (every run's below).  Took $((T_END - T_START)) s."
	echo
	echo "| transport | client | wall time (s) | messages/s | client CPU (s) | runs | failed runs |"
	echo "|---|---|---:|---:|---:|---:|---:|"
	awk -F'\t' -v n="$NMSG" "$AWK_CELL"'
	NR == FNR { if ($6 != 0) bad[$1 "\t" $2]++; next }
	{ printf "| %s | %s | %s | %.0f | %s | %d | %d |\n", $1, $2, cell($4, $5, $6, 2),
		n / $4, cell($7, $8, $9, 2), $3, bad[$1 "\t" $2] + 0 }' "$RES/runs.tsv" "$RES/summary.tsv"
	echo
	echo "Ratios of the median wall times (below 1: popbox-fetch is faster), and"
	echo "in brackets the min–max of the per-round ratios:"
	echo
	echo "| transport | ratio | wall time |"
	echo "|---|---|---:|"
	ratio_rows
	echo
	echo "<details><summary>Every run</summary>"
	echo
	echo "| transport | client | round | wall (s) | client CPU (s) | failed | load avg before → after |"
	echo "|---|---|---:|---:|---:|---:|---|"
	awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s → %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }' "$RES/runs.tsv"
	echo
	echo "</details>"
}

mkdir -p "$top/bench/results"
stamp=$(date -u +%Y%m%d-%H%M%S)
outfile=$top/bench/results/fetch-$stamp.md
report | tee "$outfile"
{
	printf '# transport\tclient\tround\twall_s\tclient_cpu_s\tfailed\tload_before\tload_after\n'
	cat "$RES/runs.tsv"
} > "$top/bench/results/fetch-$stamp.tsv"
say "written to $outfile"
say "popboxd $POPBOXD_PID stopped at exit"
