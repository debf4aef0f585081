#!/usr/bin/env bash
# tls.sh — the TLS benchmark of issue 4: popboxd beside Dovecot on the same
# users, Maildirs and certificates (docs/performance.md has the figures).
#
#   bash bench/tls.sh            (as root; from anywhere in the tree)
#
# 1. Memory per idle connection: each server alone, freshly started, then
#    BENCH_IDLE_CONNS connections logged in with USER/PASS (implicit TLS,
#    then plain) held idle by bench/tlsload; PSS summed over all the
#    server's processes (/proc/PID/smaps_rollup), per connection =
#    (PSS held - PSS before) / logged-in connections.  Also the growth of
#    the kernel's stacks and page tables (/proc/meminfo, machine-wide),
#    which a process per connection costs and PSS does not show.
# 2. Full TLS handshakes per second (no resumption), ECDSA P-256 and
#    RSA-2048 certificates, each concurrency in BENCH_CONCURRENCY, for
#    BENCH_SECONDS, BENCH_ROUNDS rounds with the servers in turn; medians.
#    Server CPU per handshake from /proc/PID/stat (all its processes,
#    reaped children included) and the load generator's own CPU.
#
# Dovecot (Debian's, installed when missing by bench/dovecot.sh) runs in
# its default mode (a login process per connection) and its tuned
# high-performance mode; see bench/dovecot.sh.  Everything listens on
# 127.0.0.1, on ports free at run time; nothing outside a temp dir is
# written except bench/results/.  Every wait is bounded; on exit (also on
# Ctrl-C) only the processes this script started are stopped.
#
# Knobs (environment):
#   BENCH_IDLE_CONNS    connections held per server (10000); capped where
#                       the open-files hard limit or the PID space cannot
#                       take it (the table says the count used)
#   BENCH_DOVECOT_DEFAULT_CONNS  cap for Dovecot's default mode, two
#                       processes per TLS session (2000)
#   BENCH_SECONDS       seconds per handshake run (10)
#   BENCH_ROUNDS        rounds of handshake runs (3)
#   BENCH_CONCURRENCY   handshake concurrencies ("8 32")
#   BENCH_DOVECOT_MODES "default tuned" (either or both, or "none")
#   BENCH_PARTS         "idle handshake" (either or both)
#   BENCH_BUILD         build dir (build/release)
#   BENCH_POPBOXD       the popboxd binary to measure (BENCH_BUILD/popboxd),
#                       e.g. an older build; its settings are detected;
#                       BENCH_POPBOXD_LABEL says what it is in the report
#   BENCH_POPBOXD_WORKERS  `workers` for a popboxd with login and mail
#                       processes, in the idle part (16).  A logged-in
#                       session held 5 descriptors in a mail process in
#                       0df98f1 (3 since 132f8c3), and hand-overs are not
#                       shared out evenly (the busiest of 4 mail processes
#                       took about half of them), so 10,000 sessions under
#                       a 20,000 open-files limit per process needed more
#                       mail processes than the 3 an even spread would
#   BENCH_POPBOXD_HS_WORKERS  `workers` in the handshake part (default:
#                       popboxd's own, one per core)
#   BENCH_NO_MAKE=1     build nothing: use the binaries as they are
#   BENCH_KEEP=1        keep the temp dir (logs, configs) for a look
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${BENCH_BUILD:-build/release}
N=${BENCH_IDLE_CONNS:-10000}
DOVECOT_DEFAULT_CAP=${BENCH_DOVECOT_DEFAULT_CONNS:-2000}
SECS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CONCS=${BENCH_CONCURRENCY:-8 32}
DMODES=${BENCH_DOVECOT_MODES:-default tuned}
[ "$DMODES" = none ] && DMODES=
PARTS=${BENCH_PARTS:-idle handshake}
PASSWORD=bench-$RANDOM$RANDOM
TLSLOAD=$top/$build/bench/tlsload
POPBOXD=${BENCH_POPBOXD:-$top/$build/popboxd}
POPBOXD_WORKERS=${BENCH_POPBOXD_WORKERS:-16}
CLK_TCK=$(getconf CLK_TCK)

say() { printf 'tls.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (Dovecot and popboxd drop to nobody)"

if [ -z "${BENCH_POPBOXD:-}" ]; then
	[ "${BENCH_NO_MAKE:-0}" = 1 ] || make --no-print-directory "$build/popboxd" "$build/bench/tlsload" >&2
else
	[ "${BENCH_NO_MAKE:-0}" = 1 ] || make --no-print-directory "$build/bench/tlsload" >&2
fi
# shellcheck source=bench/dovecot.sh
. "$top/bench/dovecot.sh"
. "$top/bench/common.sh"
[ -n "$DMODES" ] && dovecot_install

# ---------------------------------------------------------------- limits

# Open files: as many as we may.  Raising the hard limit needs
# CAP_SYS_RESOURCE, which a container may not give.
FD_HARD=$(ulimit -Hn)
[ "$FD_HARD" = unlimited ] && FD_HARD=1048576
FD_WANT=$((N * 6 + 1000))
if [ "$FD_HARD" -lt "$FD_WANT" ]; then
	ulimit -Hn "$FD_WANT" 2>/dev/null || true
	FD_HARD=$(ulimit -Hn)
	[ "$FD_HARD" = unlimited ] && FD_HARD=1048576
fi
ulimit -Sn "$FD_HARD"
PID_MAX=$(cat /proc/sys/kernel/pid_max)
read -r PORT_LO PORT_HI < /proc/sys/net/ipv4/ip_local_port_range
[ $((PORT_HI - PORT_LO)) -gt $((N + 1000)) ] ||
	say "warning: only $((PORT_HI - PORT_LO)) local ports for $N connections (net.ipv4.ip_local_port_range)"

# ---------------------------------------------------------------- clean-up

WORK=$(mktemp -d /tmp/popbox-tlsbench.XXXXXX)
chmod 755 "$WORK"
STARTED_POPBOXD=()
STARTED_DOVECOT=()
STARTED_LOAD=()

# A PID once stopped (and reaped) may soon belong to someone else: this
# run forks thousands of Dovecot processes, and PIDs wrap.  So a stopped
# PID leaves the lists at once and is never signalled again.
forget() { # PID
	local p keep=()
	for p in "${STARTED_LOAD[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	STARTED_LOAD=("${keep[@]}")
	keep=()
	for p in "${STARTED_POPBOXD[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	STARTED_POPBOXD=("${keep[@]}")
	keep=()
	for p in "${STARTED_DOVECOT[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	STARTED_DOVECOT=("${keep[@]}")
}


stop_pid() { wait_stop "$@"; forget "$1"; }
stop_popboxd() { stop_popboxd_tree "$1"; forget "$1"; }

cleanup() {
	local p
	trap - EXIT INT TERM
	for p in "${STARTED_LOAD[@]}"; do stop_pid "$p"; done
	for p in "${STARTED_POPBOXD[@]}"; do stop_popboxd "$p"; done
	for p in "${STARTED_DOVECOT[@]}"; do dovecot_stop "$p"; done
	STARTED_DOVECOT=()
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		say "kept $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

# ---------------------------------------------------------------- the corpus

NUSERS=$N
say "making $NUSERS users with one message each, and the certificates in $WORK"
mkdir -p "$WORK/mail" "$WORK/tls"
{
	for ((i = 0; i < NUSERS; i++)); do
		printf 'u%05d:{PLAIN}%s::::::\n' "$i" "$PASSWORD"
	done
} > "$WORK/passwd"
# One message of 1.5-2 KB each (bench/corpus.py, seed 7): an idle session
# has a small maildrop open.
/usr/bin/python3 "$top/bench/corpus.py" --root "$WORK/mail" --users "$NUSERS" --messages 1 \
	--size 1500-2000 --seed 7 --owner nobody:nogroup >/dev/null || die "bench/corpus.py failed"
# Each server reads its own copy of the same passwd-file, readable only by
# the user that reads it: Dovecot's auth process runs as "dovecot";
# popboxd's reader is found when it starts (start_popboxd).
cp "$WORK/passwd" "$WORK/passwd.dovecot"
cp "$WORK/passwd" "$WORK/passwd.popboxd"
chmod 600 "$WORK/passwd" "$WORK/passwd.dovecot" "$WORK/passwd.popboxd"
if getent passwd dovecot >/dev/null; then
	chown dovecot "$WORK/passwd.dovecot"
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
	-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
	-keyout "$WORK/tls/ecdsa.key" -out "$WORK/tls/ecdsa.pem" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
	-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
	-keyout "$WORK/tls/rsa.key" -out "$WORK/tls/rsa.pem" 2>/dev/null
chmod 644 "$WORK/tls/"*

# ---------------------------------------------------------------- helpers

# FREE_PORT: a free TCP port on 127.0.0.1 below the ephemeral range (so
# no client connection can be using it), not handed out before in this run.
FREE_PORT=

# PSS in KiB summed over the processes given.
pss_kb() {
	printf '/proc/%s/smaps_rollup\n' "$@" | xargs cat 2>/dev/null |
		awk '/^Pss:/ { s += $2 } END { print s + 0 }' || true
}

# Kernel stacks + page tables, KiB, machine-wide.
kmem_kb() {
	awk '/^(KernelStack|PageTables):/ { s += $2 } END { print s + 0 }' /proc/meminfo
}


# "PID descriptors" for every process of the tree.
fd_counts() { # ROOT
	local p
	for p in $(proc_tree "$1"); do
		echo "$p $(ls "/proc/$p/fd" 2>/dev/null | wc -l)"
	done
}



# Servers: each start sets SRV_PID, SRV_PLAIN, SRV_TLS.
# WORKERS: `workers` for a split build ("": its default, one per core).
start_popboxd() { # NAME CERT KEY [WORKERS]
	local name=$1 dir=$WORK/$1 i
	mkdir -p "$dir"
	free_port; SRV_PLAIN=$FREE_PORT
	free_port; SRV_TLS=$FREE_PORT
	cat > "$dir/popboxd.conf" <<EOF
# popboxd for bench/tls.sh
listen = 127.0.0.1:$SRV_PLAIN
tls_listen = 127.0.0.1:$SRV_TLS
tls_cert_file = $2
tls_key_file = $3
passdb_file = $WORK/passwd.popboxd
mail_location = $WORK/mail/%u/Maildir
mail_user = nobody
login_timeout = 3600
idle_timeout = 86400
EOF
	local keys
	keys=$("$POPBOXD" -t -c "$dir/popboxd.conf" 2>&1) || { echo "$keys" >&2; die "popboxd: bad config"; }
	# A build with login and mail processes (privilege separation): the
	# load comes from one address and may hold every connection before
	# login at once, however the login processes share them out.
	if grep -q '^auth_user = ' <<<"$keys"; then
		[ -n "${4:-}" ] && echo "workers = $4" >> "$dir/popboxd.conf"
		cat >> "$dir/popboxd.conf" <<EOF
max_connections_per_address = 0
max_preauth_connections = $((N * POPBOXD_WORKERS + 1000 > 1000000 ? 1000000 : N * POPBOXD_WORKERS + 1000))
EOF
		POPBOXD_SPLIT=1
	else
		POPBOXD_SPLIT=0
	fi
	local ok=1
	run_popboxd "$POPBOXD" "$dir/popboxd.conf" "$WORK/passwd.popboxd" "$keys" || ok=0
	STARTED_POPBOXD+=("$SRV_PID")
	[ $ok = 1 ] || die "popboxd did not start"
}

start_dovecot() { # NAME MODE CONNS CERT KEY
	local name=$1 dir=$WORK/$1
	mkdir -p "$dir"
	free_port; SRV_PLAIN=$FREE_PORT
	free_port; SRV_TLS=$FREE_PORT
	dovecot_write_conf "$dir" "$2" "$3" "$WORK/passwd.dovecot" "$WORK/mail" "$4" "$5" \
		"$SRV_PLAIN" "$SRV_TLS"
	dovecot_start "$dir" || die "dovecot ($2) did not start"
	SRV_PID=$DOVECOT_PID
	STARTED_DOVECOT+=("$SRV_PID")
}


stop_server() { # NAME PID
	case $1 in
	popboxd*) stop_popboxd "$2" ;;
	*) dovecot_stop "$2"; forget "$2" ;;
	esac
}


# ---------------------------------------------------------------- machine

MACHINE=$(machine_line)
# (machine_line names the popboxd measured when it is not this tree's
# build: BENCH_POPBOXD.)
say "machine: $MACHINE"
say "open files hard limit $FD_HARD, pid_max $PID_MAX, ports $PORT_LO-$PORT_HI"

RES=$WORK/results
mkdir -p "$RES"
: > "$RES/idle.tsv"
: > "$RES/hs.tsv"

# ---------------------------------------------------------------- idle memory

# hold_run LABEL ROOT PORT COUNT MODE: MODE is tls, plain or prelogin
# (implicit TLS, greeting read, nobody logged in).  Appends one
# line to idle.tsv: label mode count ok pss0 pss1 per_conn_kb procs0
# procs1 kmem_per_conn_kb load_cpu_s secs failures
hold_run() {
	local label=$1 root=$2 port=$3 count=$4 mode=$5
	local out=$WORK/$label-$mode.hold flags=() i pss0 pss1 k0 k1 np0 np1 la0 la1
	la0=$(loadavg)
	[ "$mode" = plain ] && flags=(--plain)
	[ "$mode" = prelogin ] && flags=(--no-login)
	settle "$root"
	[ "$label" = popboxd ] && role_pss "$root" "$WORK/$label-$mode.roles0"
	pss0=$(pss_kb $(proc_tree "$root"))
	k0=$(kmem_kb)
	np0=$(proc_tree "$root" | wc -l)
	say "$label $mode: holding $count connections (PSS before $((pss0 / 1024)) MiB, $np0 processes)"
	"$TLSLOAD" hold -n "$count" -c 200 -p "$PASSWORD" --timeout 120 "${flags[@]}" \
		127.0.0.1 "$port" </dev/null >"$out" 2>&1 &
	local lpid=$!
	STARTED_LOAD+=("$lpid")
	# Set-up may take a while (Dovecot forks a process per session).
	local limit=$((count / 10 + 300))
	for ((i = 0; i < limit * 2; i++)); do
		grep -q '^tlsload: ready' "$out" && break
		kill -0 "$lpid" 2>/dev/null || break
		sleep 0.5
	done
	if ! grep -q '^tlsload: ready' "$out"; then
		cat "$out" >&2
		stop_pid "$lpid" 300
		say "$label $mode: tlsload never got ready"
		printf '%s\t%s\t%s\t0\t%s\t0\t-\t%s\t0\t-\t-\t-\tnot-ready\t%s\t%s\n' \
			"$label" "$mode" "$count" "$pss0" "$np0" "$la0" "$(loadavg)" >> "$RES/idle.tsv"
		return 0
	fi
	sleep 3
	[ "$label" = popboxd ] && role_pss "$root" "$WORK/$label-$mode.roles1"
	pss1=$(pss_kb $(proc_tree "$root"))
	k1=$(kmem_kb)
	np1=$(proc_tree "$root" | wc -l)
	local ready ok secs fails
	ready=$(grep '^tlsload: ready ' "$out")
	ok=$(kv ok <<<"$ready")
	secs=$(kv secs <<<"$ready")
	fails=$(grep '^tlsload: failures' "$out" | sed 's/^tlsload: failures //; s/ /,/g' || true)
	stop_pid "$lpid" 300   # SIGTERM: QUIT on every connection
	local cpu; cpu=$(grep '^tlsload: cpu ' "$out" | kv cpu_s || true)
	grep '^tlsload: \(done\|failure\)' "$out" | sed "s/^/tls.sh: $label $mode: /" >&2 || true
	local per="-" kper="-"
	if [ "${ok:-0}" -gt 0 ]; then
		per=$(awk -v a="$pss0" -v b="$pss1" -v n="$ok" 'BEGIN { printf "%.1f", (b - a) / n }')
		kper=$(awk -v a="$k0" -v b="$k1" -v n="$ok" 'BEGIN { printf "%.1f", (b - a) / n }')
	fi
	say "$label $mode: $ok logged in, PSS $((pss0 / 1024)) -> $((pss1 / 1024)) MiB, $per KiB per connection, $np1 processes"
	la1=$(loadavg)
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
		"$label" "$mode" "$count" "${ok:-0}" "$pss0" "$pss1" "$per" "$np0" "$np1" \
		"$kper" "${cpu:--}" "${secs:--}" "${fails:-none}" "$la0" "$la1" >> "$RES/idle.tsv"
	if [ "$label" = popboxd ] && [ "$POPBOXD_SPLIT" = 1 ]; then
		# By role: master (root), auth, login, mail (mail_user).
		awk -F'\t' -v mode="$mode" '
			NR == FNR { p0[$1] += $2; next }
			{ p1[$1] += $2; if ($3 > f[$1]) f[$1] = $3 }
			END {
				printf "%s", mode
				n = split("root popbox-auth popbox-login nobody", r, " ")
				for (i = 1; i <= n; i++) printf "\t%.1f", (p1[r[i]] - p0[r[i]]) / 1024
				printf "\t%d\t%d\n", f["popbox-login"], f["nobody"]
			}' "$WORK/$label-$mode.roles0" "$WORK/$label-$mode.roles1" >> "$RES/roles.tsv"
	fi
}

# "user PSS-KiB descriptors" for every process of the tree.
role_pss() { # ROOT FILE
	local p
	for p in $(proc_tree "$1"); do
		printf '%s\t%s\t%s\n' "$(stat -c %U "/proc/$p" 2>/dev/null || echo gone)" \
			"$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)" \
			"$(ls "/proc/$p/fd" 2>/dev/null | wc -l)"
	done > "$2"
}

# How many logged-in popboxd sessions fit under the open-files limit:
# PROBE plain sessions are logged in; FDS is the descriptors they add to
# the whole tree per session (socket, Maildir, lock; new/ and cur/ too
# before 132f8c3).  A
# single-process build: POPBOX_CAP is the count at which its one process
# reaches the limit.  A split build: the count at which its mail processes
# would, were the sessions spread evenly (they are not quite: the report
# shows the busiest process's descriptors, and failures if one ran out).
popbox_fds_per_session() {
	local probe=$((N < 200 ? N : 200))
	start_popboxd popboxd-probe "$WORK/tls/ecdsa.pem" "$WORK/tls/ecdsa.key" "$POPBOXD_WORKERS"
	local root=$SRV_PID out=$WORK/probe.hold i most total
	fd_counts "$root" > "$WORK/probe.fd0"
	"$TLSLOAD" hold -n "$probe" -p "$PASSWORD" --timeout 20 --plain 127.0.0.1 "$SRV_PLAIN" \
		</dev/null >"$out" 2>&1 &
	local lpid=$!
	STARTED_LOAD+=("$lpid")
	for i in $(seq 1 300); do
		grep -q '^tlsload: ready' "$out" && break
		sleep 0.1
	done
	sleep 0.5
	fd_counts "$root" > "$WORK/probe.fd1"
	stop_pid "$lpid"
	stop_popboxd "$root"
	read -r most total < <(awk 'NR == FNR { before[$1] = $2; next }
		    { d = $2 - before[$1]; if (d > m) m = d; if (d > 0) t += d }
		    END { print m + 0, t + 0 }' "$WORK/probe.fd0" "$WORK/probe.fd1")
	[ "$most" -ge 1 ] || most=1
	FDS=$(((total + probe / 2) / probe))
	if [ "$POPBOXD_SPLIT" = 1 ]; then
		POPBOX_CAP=$(((FD_HARD - 200) * POPBOXD_WORKERS / FDS))
	else
		POPBOX_CAP=$(((FD_HARD - 200) * probe / most))
	fi
	POPBOX_SHARE=$(awk -v m="$most" -v t="$total" 'BEGIN { printf "%.0f", 100 * m / t }')
	say "popboxd: $FDS descriptors per logged-in session; the busiest process held $POPBOX_SHARE % of them ($probe sessions): $POPBOX_CAP sessions at most under the open-files limit of $FD_HARD per process"
}

if [[ " $PARTS " == *" idle "* ]]; then
	popbox_fds_per_session
	[ "$FDS" -ge 1 ] || FDS=1
	COUNT=$N
	if [ "$COUNT" -gt "$POPBOX_CAP" ]; then
		say "popboxd can hold $POPBOX_CAP logged-in sessions here (open-files hard limit $FD_HARD): all servers are measured at that count"
		COUNT=$POPBOX_CAP
	fi
	# Dovecot: a process per session (two with TLS in the default mode);
	# stay well inside the PID space, which the machine shares.
	PROCS_NOW=$(ps -e --no-headers | wc -l)
	PID_BUDGET=$(((PID_MAX / 2) - PROCS_NOW))
	echo "$COUNT $FDS $FD_HARD $POPBOX_SHARE $POPBOXD_SPLIT $POPBOXD_WORKERS" > "$RES/idle-count"

	start_popboxd popboxd "$WORK/tls/ecdsa.pem" "$WORK/tls/ecdsa.key" "$POPBOXD_WORKERS"
	hold_run popboxd "$SRV_PID" "$SRV_TLS" "$COUNT" tls
	stop_server popboxd "$SRV_PID"
	start_popboxd popboxd "$WORK/tls/ecdsa.pem" "$WORK/tls/ecdsa.key" "$POPBOXD_WORKERS"
	hold_run popboxd "$SRV_PID" "$SRV_PLAIN" "$COUNT" plain
	stop_server popboxd "$SRV_PID"
	if [ "${BENCH_PRELOGIN:-1}" = 1 ]; then
		# Only TLS, nobody logged in: one descriptor a connection, so the
		# full count fits even in a single-process build.
		start_popboxd popboxd "$WORK/tls/ecdsa.pem" "$WORK/tls/ecdsa.key" "$POPBOXD_WORKERS"
		hold_run popboxd "$SRV_PID" "$SRV_TLS" "$N" prelogin
		stop_server popboxd "$SRV_PID"
	fi
	for m in $DMODES; do
		modes="tls plain"
		# Default mode, before login: a login process per connection.
		[ "$m" = tuned ] && [ "${BENCH_PRELOGIN:-1}" = 1 ] && modes="$modes prelogin"
		for mode in $modes; do
			c=$COUNT
			per=1
			[ "$mode" = prelogin ] && c=$N
			[ "$m" = default ] && [ "$mode" = tls ] && per=2
			[ "$m" = default ] && [ "$c" -gt "$DOVECOT_DEFAULT_CAP" ] && c=$DOVECOT_DEFAULT_CAP
			if [ $((c * per)) -gt "$PID_BUDGET" ]; then
				c=$((PID_BUDGET / per))
				say "dovecot-$m $mode: capped at $c connections (pid_max $PID_MAX is shared)"
			fi
			start_dovecot "dovecot-$m" "$m" "$c" "$WORK/tls/ecdsa.pem" "$WORK/tls/ecdsa.key"
			if [ "$mode" = plain ]; then port=$SRV_PLAIN; else port=$SRV_TLS; fi
			hold_run "dovecot-$m" "$SRV_PID" "$port" "$c" "$mode"
			stop_server dovecot "$SRV_PID"
		done
	done
fi

# ---------------------------------------------------------------- handshakes

# hs_run LABEL ROOT PORT CERT CONC ROUND: appends to hs.tsv: cert conc
# label round rate server_us_per_hs client_us_per_hs errors p50 p99
# load_before load_after
hs_run() {
	local label=$1 root=$2 port=$3 cert=$4 conc=$5 round=$6
	local c0 c1 out line la0 la1
	out=$WORK/$label-$cert-$conc-$round.hs
	la0=$(loadavg)
	c0=$(cpu_ticks "$root")
	timeout $((SECS + 120)) "$TLSLOAD" handshake -c "$conc" -t "$SECS" --timeout 10 \
		127.0.0.1 "$port" </dev/null >"$out" 2>&1 || true
	c1=$(cpu_ticks "$root")
	la1=$(loadavg)
	line=$(grep '^tlsload: handshake ' "$out" || true)
	if [ -z "$line" ]; then
		cat "$out" >&2
		say "$label: no result"
		return 0
	fi
	local ok rate cli errs p50 p99 srv
	ok=$(kv ok <<<"$line"); rate=$(kv rate <<<"$line")
	cli=$(kv client_cpu_us_per_hs <<<"$line"); errs=$(kv errors <<<"$line")
	p50=$(kv p50_ms <<<"$line"); p99=$(kv p99_ms <<<"$line")
	srv=$(awk -v a="$c0" -v b="$c1" -v n="$ok" -v hz="$CLK_TCK" \
		'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / hz / n; else print "-" }')
	say "$cert c=$conc round $round $label: $rate/s, server ${srv} us/hs, client ${cli} us/hs, errors $errs ($(kv tls <<<"$line") $(kv cert <<<"$line"))"
	[ "$errs" = 0 ] || grep '^tlsload: failure' "$out" | sed "s/^/tls.sh:   /" >&2 || true
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cert" "$conc" "$label" \
		"$round" "$rate" "$srv" "$cli" "$errs" "$p50" "$p99" "$la0" "$la1" >> "$RES/hs.tsv"
}

if [[ " $PARTS " == *" handshake "* ]]; then
	for cert in ecdsa rsa; do
		names=() pids=() ports=()
		start_popboxd "popboxd-$cert" "$WORK/tls/$cert.pem" "$WORK/tls/$cert.key" \
			"${BENCH_POPBOXD_HS_WORKERS:-}"
		names+=(popboxd); pids+=("$SRV_PID"); ports+=("$SRV_TLS")
		for m in $DMODES; do
			start_dovecot "dovecot-$m-$cert" "$m" 200 "$WORK/tls/$cert.pem" "$WORK/tls/$cert.key"
			names+=("dovecot-$m"); pids+=("$SRV_PID"); ports+=("$SRV_TLS")
		done
		for p in "${pids[@]}"; do settle "$p"; done
		for conc in $CONCS; do
			for ((r = 1; r <= ROUNDS; r++)); do
				# The servers in turn, starting one further each round.
				for ((k = 0; k < ${#names[@]}; k++)); do
					j=$(((k + r - 1) % ${#names[@]}))
					hs_run "${names[$j]}" "${pids[$j]}" "${ports[$j]}" "$cert" "$conc" "$r"
				done
			done
		done
		for ((j = 0; j < ${#names[@]}; j++)); do
			stop_server "${names[$j]}" "${pids[$j]}"
		done
	done
fi

# ---------------------------------------------------------------- report

report() {
	echo "## TLS benchmark: popboxd beside Dovecot ($(date -u +%Y-%m-%d))"
	echo
	echo "Machine: $MACHINE."
	echo
	if [ -s "$RES/idle.tsv" ]; then
		read -r count fds fdh share split workers < "$RES/idle-count"
		echo "### Memory per idle connection"
		echo
		echo "PSS summed over all the server's processes, (held - before) / logged in."
		echo "Kernel: growth of kernel stacks + page tables (machine-wide) per connection."
		if [ "$split" = 1 ]; then
			echo "popboxd ran with workers = $workers (login and mail processes each),"
			echo "max_connections_per_address = 0 and the pre-auth pool raised above the"
			echo "count.  A logged-in session holds $fds descriptors in its mail process"
			echo "(open-files hard limit here: $fdh per process); $count logged-in sessions"
			echo "were held.  By process role (user), PSS growth and the descriptors of the"
			echo "busiest process of each role, when held:"
			echo
			echo "| connection | master | auth | login processes | mail processes | busiest login process (fds) | busiest mail process (fds) |"
			echo "|---|---:|---:|---:|---:|---:|---:|"
			awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7 }' "$RES/roles.tsv" 2>/dev/null
			echo
			echo "(PSS growth in MiB from before to held.)"
		else
			echo "popboxd (one process) holds $fds descriptors per logged-in session; with"
			echo "the open-files hard limit of $fdh here, $count logged-in sessions were held."
		fi
		echo
		echo "One run per row (a hold of thousands of connections takes minutes): no"
		echo "spread here; memory per connection varied by a few percent between runs"
		echo "on other days.  Load average (1/5/15 min) at the start and end of each hold"
		echo "in the last column."
		echo
		echo "| server | connection | held | PSS before (MiB) | PSS held (MiB) | PSS per connection (KiB) | kernel per connection (KiB) | processes | set-up (s) | failures | load avg before → after |"
		echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
		awk -F'\t' '{
			printf "| %s | %s | %s of %s | %.1f | %.1f | %s | %s | %s -> %s | %s | %s | %s → %s |\n",
				$1, ($2 == "tls" ? "implicit TLS" : $2 == "plain" ? "plain" : "implicit TLS, not logged in"), $4, $3,
				$5 / 1024, $6 / 1024, $7, $10, $8, $9, $12, $13, $14, $15
		}' "$RES/idle.tsv"
		echo
		awk -F'\t' '
			$1 == "popboxd" { p[$2] = $7 }
			$1 != "popboxd" { d[$1 "\t" $2] = $7 }
			END {
				for (k in d) {
					split(k, a, "\t")
					if (p[a[2]] > 0 && d[k] > 0)
						printf "- %s, %s: popboxd uses %.3f of %s'"'"'s memory per connection (%.1fx less).\n",
							a[1], a[2], p[a[2]] / d[k], a[1], d[k] / p[a[2]]
				}
			}' "$RES/idle.tsv" | sort
		echo
	fi
	if [ -s "$RES/hs.tsv" ]; then
		echo "### Full TLS handshakes per second (loopback, no resumption)"
		echo
		echo "Each run: $SECS s; median of $ROUNDS rounds, servers in turn.  Server CPU:"
		echo "user+system of all its processes per handshake.  The load generator"
		echo "shares the same $(nproc) cores; its own CPU per handshake is shown too."
		[ "${POPBOXD_SPLIT:-0}" = 1 ] &&
			echo "popboxd: workers = ${BENCH_POPBOXD_HS_WORKERS:-its default, one per core ($(nproc) login and $(nproc) mail processes)}."
		echo
		echo "Every figure: the median of the rounds and in brackets their spread"
		echo "($(awk "$AWK_CELL"'BEGIN { print spread_name('"$ROUNDS"') }')).  Load average (1/5/15 min) before the first run"
		echo "$(head -n 1 "$RES/hs.tsv" | cut -f11), after the last $(tail -n 1 "$RES/hs.tsv" | cut -f12); every run's below."
		echo
		echo "| certificate | concurrency | server | handshakes/s | server CPU (µs/handshake) | client CPU (µs/handshake) | p50 latency (ms) | p99 latency (ms) | errors |"
		echo "|---|---:|---|---:|---:|---:|---:|---:|---:|"
		sort -t$'\t' -k1,1 -k2,2n -k3,3 -k4,4n "$RES/hs.tsv" |
			awk -F'\t' -v OFS='\t' '{ print $1, $2, $3, $5, $6, $7, $9, $10 }' | spread 3 > "$RES/hs-spread.tsv"
		awk -F'\t' "$AWK_CELL"'
			NR == FNR { e[$1 "\t" $2 "\t" $3] += $8; next }
			{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %d |\n",
				($1 == "ecdsa" ? "ECDSA P-256" : "RSA-2048"), $2, $3, cell($5, $6, $7, 0),
				cell($8, $9, $10, 0), cell($11, $12, $13, 0), cell($14, $15, $16, 2),
				cell($17, $18, $19, 2), e[$1 "\t" $2 "\t" $3] }' "$RES/hs.tsv" "$RES/hs-spread.tsv"
		echo
		echo "popboxd ÷ each Dovecot mode: the ratio of the medians, and in brackets the"
		echo "spread of the per-round ratios; handshakes/s (above 1: popboxd does more),"
		echo "server CPU per handshake (below 1: popboxd needs less)."
		echo
		echo "| certificate | concurrency | popboxd ÷ | handshakes/s | server CPU per handshake |"
		echo "|---|---:|---|---:|---:|"
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
			NR == FNR { k = $1 "\t" $2; mr[k "\t" $3] = $5; mc[k "\t" $3] = $8
				if ($3 != "popboxd" && !((k "\t" $3) in seen)) { seen[k "\t" $3] = 1; o[++n] = k "\t" $3 }; next }
			{ rr[$1 "\t" $2 "\t" $3 "\t" $4] = $5; rc[$1 "\t" $2 "\t" $3 "\t" $4] = $6; if ($4 > maxr) maxr = $4 }
			END {
				for (i = 1; i <= n; i++) {
					split(o[i], f, "\t"); p = f[1] "\t" f[2] "\tpopboxd"
					if (!(p in mr) || mr[o[i]] == 0 || mc[o[i]] == 0 || mc[p] == "-") continue
					lr = ""; lc = ""
					for (r = 1; r <= maxr; r++) {
						a = f[1] "\t" f[2] "\tpopboxd\t" r; b = o[i] "\t" r
						if ((a in rr) && (b in rr) && rr[b] > 0) lr = lr " " rr[a] / rr[b]
						if ((a in rc) && (b in rc) && rc[b] > 0 && rc[a] != "-") lc = lc " " rc[a] / rc[b]
					}
					printf "| %s | %s | %s | %.2f (%s) | %.2f (%s) |\n", (f[1] == "ecdsa" ? "ECDSA P-256" : "RSA-2048"),
						f[2], f[3], mr[p] / mr[o[i]], spr(lr), mc[p] / mc[o[i]], spr(lc)
				}
			}' "$RES/hs-spread.tsv" "$RES/hs.tsv"
		echo
		echo "<details><summary>Every handshake run</summary>"
		echo
		echo "| certificate | concurrency | server | round | handshakes/s | server CPU (µs/handshake) | client CPU (µs/handshake) | errors | p50 (ms) | p99 (ms) | load avg before → after |"
		echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"
		sort -t$'\t' -k1,1 -k2,2n -k3,3 -k4,4n "$RES/hs.tsv" | awk -F'\t' '{
			printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s → %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 }'
		echo
		echo "</details>"
	fi
}

mkdir -p "$top/bench/results"
outfile=$top/bench/results/tls-$(date -u +%Y%m%d-%H%M%S).md
report | tee "$outfile"
say "written to $outfile"
