#!/usr/bin/env bash
# deliver.sh — delivery (issue 7, workload 6): messages per second into
# maildrops, and CPU per message, through the delivery agent (one process
# per message) and through LMTP, popboxd beside Dovecot's LDA and LMTP.
#
#   bash bench/deliver.sh       (as root; from anywhere in the tree)
#
# Workloads, each on messages of about 4 KB and of about 100 KB (bench/
# corpus.py, seed 7: delivered-mail headers, MIME, 8-bit lines, lines that
# start with a dot, every 20th without a final newline):
#   lda   W workers (1, and 4 at once), each delivering its share of the
#         messages to its own user, one process per message, the message
#         written into a pipe on its standard input (as Postfix's pipe(8)
#         does), run as the mail user (nobody):
#           popbox-deliver -c popboxd.conf -f SENDER USER
#             (the passwd-file belongs to popbox-auth, so it asks the
#             running popboxd's auth process over userdb_socket)
#           dovecot-lda -c dovecot.conf -d USER -f SENDER
#             (asks Dovecot's auth process over its auth-userdb socket)
#   lmtp  C connections at once (1 and 4) to the server's LMTP listener on
#         127.0.0.1, each with its own user: LHLO, then per message MAIL,
#         RCPT and DATA pipelined, the message, the final reply; QUIT.
# bench/deliver-load.py drives both and checks the result: every message
# reported delivered is in the user's new/ or cur/ exactly once, ending
# with the bytes sent (matched by Message-ID), nothing else is there.
# Every run starts from empty Maildirs (new/, cur/, tmp/ made, owned by
# nobody) and a `sync` of the file system (by default a fresh ext4 of its
# own, loop-mounted: BENCH_DELIVER_FS); BENCH_ROUNDS rounds (3), servers
# in turn (the order rotating each round); a run stops starting messages
# after BENCH_DELIVER_SECONDS.  Medians and spread (min-max of up to 3
# rounds, p25-p75 of more), ratios popboxd / Dovecot (of the medians, and
# the spread of the per-round ratios).
#
# CPU per message: the server's is user+system of all its processes from
# /proc (bench/common.sh cpu_ticks: reaped children included; clock ticks
# of 10 ms, so about 5 µs per message at 2,000 messages), after minus
# before; the delivery agents' is their own rusage (wait4: each process
# and what it waited for, so Dovecot's LDA with the doveconf it execs).
# For lda the figure that counts is the sum, agent + server.  The load
# generator's own CPU and the rest of the machine's busy time ("other",
# in % of all cores) are reported beside it; the load average before and
# after every run too.
#
# Durability: popbox fsyncs each message file, renames it into new/ and
# fsyncs new/ before it reports success.  Dovecot's default mail_fsync =
# optimized does the same for a Maildir delivery (fsync of the file,
# rename, fdatasync of new/, and of dovecot-uidlist; checked with strace),
# so it runs at its default; BENCH_DELIVER_DOVECOT_FSYNC="optimized always"
# runs it a second time with `always` (index files fdatasynced as well).
# Dovecot: protocols pop3 and lmtp (a POP3 listener as popboxd has one),
# ssl off, passdb and userdb passwd-file (the same file, uid/gid/home from
# default_fields: nobody), auth_username_format = %Ln (LMTP recipients
# are user@example.org), auth-userdb socket for nobody, stats-writer
# socket 0666 (else every LDA run as nobody logs a permission error), its
# default lmtp service (a process per connection, reused) and
# lmtp_add_received_header = yes.  Dovecot's indexes are on (its default).
#
# Knobs (environment):
#   BENCH_DELIVER_MESSAGES       messages of ~4 KB per run (2000)
#   BENCH_DELIVER_BIG_MESSAGES   messages of ~100 KB per run (500; 0: none)
#   BENCH_DELIVER_LDA_WORKERS    "1 4"
#   BENCH_DELIVER_LMTP_CONNECTIONS  "1 4"
#   BENCH_DELIVER_PATHS          "lda lmtp"
#   BENCH_DELIVER_SECONDS        no message is started after this (30)
#   BENCH_ROUNDS                 rounds (3)
#   BENCH_DELIVER_DOVECOT        1 (default) runs Dovecot too; 0 does not
#   BENCH_DELIVER_DOVECOT_FSYNC  Dovecot's mail_fsync values to run ("optimized")
#   BENCH_DELIVER_FS             where the Maildirs are: "loop" (default: a
#                                fresh ext4 image, loop-mounted in the temp
#                                dir; see "file system" below and
#                                bench/common.sh) or "tmp"; else BENCH_FS
#   BENCH_DELIVER_FS_MB          that image's size (4096, sparse; more when
#                                the runs need it); else BENCH_FS_MB
#   BENCH_BUILD                  build dir (build/release)
#   BENCH_POPBOXD                the popboxd to measure (BENCH_BUILD/popboxd)
#   BENCH_DELIVER_AGENT          the popbox-deliver to measure (beside
#                                BENCH_POPBOXD, else BENCH_BUILD's)
#   BENCH_NO_MAKE=1              build nothing
#   BENCH_KEEP=1                 keep the temp dir (logs, configs)
# Results: bench/results/deliver-DATE.md.  Everything listens on 127.0.0.1
# on ports free at run time; nothing outside a temp dir is written except
# bench/results/; every wait is bounded; on exit only the processes this
# script started are stopped.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${BENCH_BUILD:-build/release}
NSMALL=${BENCH_DELIVER_MESSAGES:-2000}
NBIG=${BENCH_DELIVER_BIG_MESSAGES:-500}
LDA_WORKERS=${BENCH_DELIVER_LDA_WORKERS:-1 4}
LMTP_CONNS=${BENCH_DELIVER_LMTP_CONNECTIONS:-1 4}
PATHS=${BENCH_DELIVER_PATHS:-lda lmtp}
SECS=${BENCH_DELIVER_SECONDS:-30}
ROUNDS=${BENCH_ROUNDS:-3}
WITH_DOVECOT=${BENCH_DELIVER_DOVECOT:-1}
DOVECOT_FSYNCS=${BENCH_DELIVER_DOVECOT_FSYNC:-optimized}
POPBOXD=${BENCH_POPBOXD:-$top/$build/popboxd}
if [ -n "${BENCH_DELIVER_AGENT:-}" ]; then
	AGENT=$BENCH_DELIVER_AGENT
elif [ -n "${BENCH_POPBOXD:-}" ]; then
	AGENT=$(dirname "$BENCH_POPBOXD")/popbox-deliver
else
	AGENT=$top/$build/popbox-deliver
fi
DOVECOT_LDA=/usr/lib/dovecot/dovecot-lda
SENDER=sender@lists.example.net
PY=/usr/bin/python3
LOAD=$top/bench/deliver-load.py
CLK_TCK=$(getconf CLK_TCK)
MAIL_USER=nobody

say() { printf 'deliver.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (popboxd and Dovecot drop privileges)"
for p in $PATHS; do case $p in lda | lmtp) ;; *) die "BENCH_DELIVER_PATHS: lda or lmtp, not $p" ;; esac; done
for f in $DOVECOT_FSYNCS; do case $f in optimized | always) ;; *) die "BENCH_DELIVER_DOVECOT_FSYNC: optimized or always, not $f" ;; esac; done
if [ -z "${BENCH_POPBOXD:-}" ] && [ "${BENCH_NO_MAKE:-0}" != 1 ]; then
	make --no-print-directory "$build/popboxd" "$build/popbox-deliver" >&2
fi
[ -x "$POPBOXD" ] || die "no popboxd at $POPBOXD"
[ -x "$AGENT" ] || die "no popbox-deliver at $AGENT"
# shellcheck source=bench/dovecot.sh
. "$top/bench/dovecot.sh"
# shellcheck source=bench/common.sh
. "$top/bench/common.sh"

# Dovecot's LDA comes with dovecot-core (there with dovecot-pop3d), its
# LMTP server with dovecot-lmtpd: installed like dovecot.sh installs
# dovecot-pop3d, the package's own service stopped and disabled.
dovecot_lmtp_install() {
	dovecot_install
	[ -x /usr/lib/dovecot/lmtp ] && return 0
	say "installing dovecot-lmtpd (Debian)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dovecot-lmtpd >&2
	if [ -s /run/dovecot/master.pid ] &&
	   kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
		systemctl stop dovecot.service dovecot.socket 2>/dev/null ||
			service dovecot stop 2>/dev/null || true
	fi
	systemctl disable dovecot.service dovecot.socket >/dev/null 2>&1 || true
	update-rc.d dovecot disable >/dev/null 2>&1 || true
}
if [ "$WITH_DOVECOT" = 1 ]; then
	dovecot_lmtp_install
	[ -x "$DOVECOT_LDA" ] || die "no $DOVECOT_LDA (dovecot-core)"
fi

ulimit -Sn "$(ulimit -Hn)"

# ---------------------------------------------------------------- clean-up

WORK=$(mktemp -d /tmp/popbox-deliver.XXXXXX)
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
	remove_work_dir "$WORK"
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

# ---------------------------------------------------------------- corpus

# The messages to deliver: one directory of files per size, readable by
# the load generator (it reads them before it becomes the mail user).
SIZES=(small)
[ "$NBIG" -gt 0 ] && SIZES+=(big)
declare -A NMSG=([small]=$NSMALL [big]=$NBIG) RANGE=([small]=3200-4900 [big]=98000-102000)
declare -A SIZE_LABEL=([small]="4 KB" [big]="100 KB") CORPUS_LINE=()
for s in "${SIZES[@]}"; do
	line=$("$PY" "$top/bench/corpus.py" --root "$WORK/corpus-$s" --user src \
		--messages "${NMSG[$s]}" --size "${RANGE[$s]}" --age 0 --seed 7) ||
		die "bench/corpus.py failed"
	CORPUS_LINE[$s]=${line#corpus: }
	say "corpus $s: ${CORPUS_LINE[$s]}"
done

# ---------------------------------------------------------------- file system

# The Maildirs' file system (bench/common.sh mail_fs_setup): by default a
# fresh journalled ext4 of its own, loop-mounted in the temp dir, so that
# no other work's file deletions cost us CPU (measured: popboxd's CPU per
# LMTP message 0.5-1.2 ms on this VM's root file system, an ext4 without
# a journal, from run to run, 0.31-0.35 ms on the loop one).
# BENCH_DELIVER_FS (else BENCH_FS) "tmp": the temp dir's file system.
nfsruns=0
for p in $PATHS; do
	if [ "$p" = lda ]; then w=$LDA_WORKERS; else w=$LMTP_CONNS; fi
	nfsruns=$((nfsruns + $(wc -w <<<"$w")))
done
# Every run's messages stay on it (see fresh_maildirs); a message takes
# whole 4 KiB blocks: twice its size is plenty for ~4 KB ones.
fsruns=$((nfsruns * (ROUNDS + 1) * (1 + $(wc -w <<<"$DOVECOT_FSYNCS"))))
need=$(awk -v r="$fsruns" \
	-v s="$(kv bytes <<<" ${CORPUS_LINE[small]}")" -v b="$(kv bytes <<<" ${CORPUS_LINE[big]:-bytes=0}")" \
	'BEGIN { printf "%d", r * (2 * s + 1.1 * b) / 1048576 + 512 }')
mail_fs_setup "$WORK" "$need" $((fsruns * (NSMALL + NBIG))) BENCH_DELIVER
FS_ROOT=$MAIL_FS
FS_LINE=$MAIL_FS_LINE
say "Maildirs on: $FS_LINE"

maxw=1
for w in $LDA_WORKERS $LMTP_CONNS; do [ "$w" -gt "$maxw" ] && maxw=$w; done
NUSERS=$maxw
mkpasswd() { # FILE
	local i
	for ((i = 0; i < NUSERS; i++)); do
		printf 'u%05d:{PLAIN}bench-%s::::::\n' "$i" "$RANDOM$RANDOM"
	done > "$1"
	chmod 600 "$1"
}

# Empty Maildirs for every user, then the file system synced: each run
# starts alike, with no other run's writes still being flushed.  The last
# run's Maildirs are moved aside, not deleted (they go with the temp dir
# at the end): deleting thousands of files just before a run makes the
# file system's work in it differ (see "file system" above).
USED=0
fresh_maildirs() { # MAILROOT
	local i
	if [ -e "$1" ]; then
		USED=$((USED + 1))
		mv "$1" "$1.used$USED"
	fi
	for ((i = 0; i < NUSERS; i++)); do
		mkdir -p "$1/$(printf u%05d "$i")/Maildir/"{new,cur,tmp}
	done
	chown -R "$MAIL_USER:" "$1"
	sync -f "$1"
}

# ---------------------------------------------------------------- servers

# popboxd: POP3 on a free port (unused), LMTP on another, userdb_socket
# in its run dir; the passwd-file goes to auth_user (run_popboxd), so
# popbox-deliver, as nobody, must ask the auth process.
start_popboxd() { # DIR MAILROOT PASSWD: sets SRV_PID SRV_LMTP SRV_CONF
	local dir=$1 keys
	mkdir -p "$dir"
	free_port; local pop3=$FREE_PORT
	free_port; SRV_LMTP=$FREE_PORT
	SRV_CONF=$dir/popboxd.conf
	cat > "$SRV_CONF" <<EOF
# popboxd for bench/deliver.sh
listen = 127.0.0.1:$pop3
lmtp_listen = 127.0.0.1:$SRV_LMTP
userdb_socket = $dir/run/userdb
passdb_file = $3
mail_location = $2/%u/Maildir
mail_user = $MAIL_USER
EOF
	chmod 644 "$SRV_CONF"
	keys=$("$POPBOXD" -t -c "$SRV_CONF" 2>&1) || { echo "$keys" >&2; die "popboxd: bad config"; }
	local ok=1
	run_popboxd "$POPBOXD" "$SRV_CONF" "$3" "$keys" || ok=0
	STARTED+=("popboxd:$SRV_PID")
	[ $ok = 1 ] || die "popboxd did not start"
	for _ in $(seq 1 50); do [ -S "$dir/run/userdb" ] && break; sleep 0.1; done
	[ -S "$dir/run/userdb" ] || die "popboxd made no userdb socket"
}

dovecot_write_deliver_conf() { # DIR MAILROOT PASSWD POP3_PORT LMTP_PORT FSYNC
	local dir=$1
	mkdir -p "$dir/state"
	cat > "$dir/dovecot.conf" <<EOF
# Throwaway Dovecot configuration written by bench/deliver.sh.
instance_name = popbox-bench-deliver-$$-$6
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
protocols = pop3 lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
mail_fsync = $6
auth_username_format = %Ln
passdb {
  driver = passwd-file
  args = scheme=PLAIN $3
}
userdb {
  driver = passwd-file
  args = $3
  default_fields = uid=$MAIL_USER gid=nogroup home=$2/%u
}
mail_location = maildir:$2/%u/Maildir
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $4
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $5
  }
}
service auth {
  unix_listener auth-userdb {
    mode = 0600
    user = $MAIL_USER
    group = nogroup
  }
}
service stats {
  unix_listener stats-writer {
    mode = 0666
  }
}
EOF
	chmod 644 "$dir/dovecot.conf"
	# dovecot-lda, run as the mail user, writes its log lines itself.
	touch "$dir/dovecot.log"
	chown "$MAIL_USER" "$dir/dovecot.log"
}

start_dovecot() { # DIR MAILROOT PASSWD FSYNC: sets SRV_PID SRV_LMTP SRV_CONF
	local dir=$1
	free_port; local pop3=$FREE_PORT
	free_port; SRV_LMTP=$FREE_PORT
	chown dovecot "$3"
	dovecot_write_deliver_conf "$dir" "$2" "$3" "$pop3" "$SRV_LMTP" "$4"
	SRV_CONF=$dir/dovecot.conf
	dovecot_start "$dir" || die "dovecot did not start"
	SRV_PID=$DOVECOT_PID
	STARTED+=("dovecot:$SRV_PID")
}

LABELS=(popboxd) KINDS=(popboxd) PIDS=() LMTPS=() CONFS=() ROOTS=()
if [ "$WITH_DOVECOT" = 1 ]; then
	for f in $DOVECOT_FSYNCS; do
		if [ "$f" = optimized ]; then LABELS+=(Dovecot); else LABELS+=("Dovecot fsync=$f"); fi
		KINDS+=("dovecot:$f")
	done
fi
for k in "${!KINDS[@]}"; do
	sdir=$WORK/srv$k
	mroot=$FS_ROOT/srv$k/mail
	mkdir -p "$sdir" "$FS_ROOT/srv$k"
	chmod 755 "$sdir" "$FS_ROOT/srv$k"
	mkpasswd "$sdir/passwd"
	fresh_maildirs "$mroot"
	case ${KINDS[$k]} in
	popboxd) start_popboxd "$sdir/popboxd" "$mroot" "$sdir/passwd" ;;
	dovecot:*) start_dovecot "$sdir/dovecot" "$mroot" "$sdir/passwd" "${KINDS[$k]#dovecot:}" ;;
	esac
	PIDS+=("$SRV_PID"); LMTPS+=("$SRV_LMTP"); CONFS+=("$SRV_CONF"); ROOTS+=("$mroot")
done
for p in "${PIDS[@]}"; do settle "$p"; done

# ---------------------------------------------------------------- runs

MACHINE=$(machine_line)
say "machine: $MACHINE"
RES=$WORK/results
mkdir -p "$RES"
: > "$RES/deliver.tsv"

busy_ticks() { # the whole machine's: all but idle and iowait
	awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# The agent's command line for server K (deliver-load.py puts the user in).
agent_cmd() { # K
	case ${KINDS[$1]} in
	popboxd) echo "$AGENT" -c "${CONFS[$1]}" -f "$SENDER" '{user}' ;;
	*) echo "$DOVECOT_LDA" -c "${CONFS[$1]}" -d '{user}' -f "$SENDER" ;;
	esac
}

# deliver_run K SIZE PATH CONC ROUND [COUNT]: one run, appended to
# deliver.tsv (ROUND 0: a warm-up, not recorded): size path conc label
# round rate server_us agent_us total_us driver_us p50 p99 errors
# delivered stored other_pct load_before load_after
deliver_run() {
	local k=$1 size=$2 path=$3 conc=$4 round=$5 count=${6:-${NMSG[$2]}}
	local label=${LABELS[$k]} root=${ROOTS[$k]} out line args=() cmd=()
	out=$WORK/run-$k-$size-$path-$conc-$round.out
	fresh_maildirs "$root"
	args=("$path" --messages "$WORK/corpus-$size/src/Maildir/new" --count "$count"
		--workers "$conc" --seconds "$SECS" --timeout 60 --sender "$SENDER"
		--as-user "$MAIL_USER" --verify "$root" --log "$out.agent-stderr")
	if [ "$path" = lmtp ]; then
		args+=(--port "${LMTPS[$k]}")
	else
		read -ra cmd <<<"$(agent_cmd "$k")"
		args+=(-- "${cmd[@]}")
	fi
	local c0 c1 b0 b1 la0 la1 t0 t1
	sleep 0.5
	la0=$(loadavg)
	t0=$(date +%s.%N)
	b0=$(busy_ticks)
	c0=$(cpu_ticks "${PIDS[$k]}")
	timeout $((SECS + 120)) "$PY" "$LOAD" "${args[@]}" </dev/null >"$out" 2>&1 || true
	c1=$(cpu_ticks "${PIDS[$k]}")
	b1=$(busy_ticks)
	t1=$(date +%s.%N)
	la1=$(loadavg)
	line=$(grep '^deliver-load: mode=' "$out" || true)
	if [ -z "$line" ]; then
		cat "$out" >&2
		say "$label $size $path c=$conc: no result"
		return 0
	fi
	local n rate agent driver p50 p99 errs bad srv total other stored agent_s driver_s
	n=$(kv delivered <<<"$line"); rate=$(kv rate <<<"$line")
	agent=$(kv agent_cpu_us_per_msg <<<"$line"); driver=$(kv driver_cpu_us_per_msg <<<"$line")
	p50=$(kv p50_ms <<<"$line"); p99=$(kv p99_ms <<<"$line")
	errs=$(kv errors <<<"$line"); bad=$(kv bad <<<"$line")
	agent_s=$(kv agent_cpu_s <<<"$line"); driver_s=$(kv driver_cpu_s_all <<<"$line")
	stored=$(find "$root" -mindepth 4 -maxdepth 4 -type f \( -path '*/Maildir/new/*' -o -path '*/Maildir/cur/*' \) | wc -l)
	srv=$(awk -v a="$c0" -v b="$c1" -v n="$n" -v hz="$CLK_TCK" \
		'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / hz / n; else print "-" }')
	total=$(awk -v s="$srv" -v a="$agent" 'BEGIN { if (s == "-" || a == "-") print "-"; else printf "%.1f", s + a }')
	# The rest of the machine's busy time while the load generator ran
	# (start-up and checks included): neither the server, nor the agents,
	# nor the load generator; in % of all cores.
	other=$(awk -v b0="$b0" -v b1="$b1" -v s0="$c0" -v s1="$c1" -v a="$agent_s" -v d="$driver_s" \
		-v hz="$CLK_TCK" -v el="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" -v cores="$(nproc)" \
		'BEGIN { if (el <= 0) { print "-"; exit }
			 o = ((b1 - b0) - (s1 - s0)) / hz - a - d; if (o < 0) o = 0
			 printf "%.0f", 100 * o / (el * cores) }')
	errs=$((errs + bad))
	[ "$stored" -eq "$n" ] || { say "$label: $stored messages stored, $n reported delivered"; errs=$((errs + 1)); }
	if [ "$errs" -gt 0 ]; then
		grep '^deliver-load: failure' "$out" | sed 's/^/deliver.sh:   /' >&2 || true
		head -n 5 "$out.agent-stderr" 2>/dev/null | sed 's/^/deliver.sh:   agent: /' >&2 || true
	fi
	[ "$round" = 0 ] && return 0
	say "$size $path c=$conc round $round $label: $rate msg/s, server $srv + agent $agent = $total µs/msg, driver $driver µs/msg, p50 $p50 ms, p99 $p99 ms, $n delivered, $stored stored, errors $errs, other CPU $other %"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
		"$size" "$path" "$conc" "$label" "$round" "$rate" "$srv" "$agent" "$total" \
		"$driver" "$p50" "$p99" "$errs" "$n" "$stored" "$other" "$la0" "$la1" >> "$RES/deliver.tsv"
}

concs_of() { if [ "$1" = lda ]; then echo "$LDA_WORKERS"; else echo "$LMTP_CONNS"; fi; }

T_START=$(date +%s)
# Warm-up: a few deliveries each way on every server (binaries and
# passwd-file in the page cache, Dovecot's lmtp processes forked).
for k in "${!KINDS[@]}"; do
	for path in $PATHS; do deliver_run "$k" small "$path" "$maxw" 0 $((maxw * 25)); done
done
for s in "${SIZES[@]}"; do
	for path in $PATHS; do
		for conc in $(concs_of "$path"); do
			for ((r = 1; r <= ROUNDS; r++)); do
				for ((i = 0; i < ${#KINDS[@]}; i++)); do
					deliver_run $(((i + r - 1) % ${#KINDS[@]})) "$s" "$path" "$conc" "$r"
				done
			done
		done
	done
done
T_END=$(date +%s)

# ---------------------------------------------------------------- report

# spread.tsv: size path conc label runs, then median lo hi of rate, server,
# agent, total, driver, p50, p99 (columns 6-26).
awk -F'\t' -v OFS='\t' '{ print $1, $2, $3, $4, $6, $7, $8, $9, $10, $11, $12 }' "$RES/deliver.tsv" |
	spread 4 > "$RES/spread.tsv"

# popboxd ÷ each Dovecot per workload: the ratio of the medians, and the
# spread of the per-round ratios, for messages/s and total CPU per message.
ratio_rows() { # DOVECOT_LABEL
	awk -F'\t' -v dl="$1" '
	function sortv(n,   i, j, t) { for (i = 2; i <= n; i++) { t = x[i]
		for (j = i - 1; j >= 1 && x[j] > t; j--) x[j + 1] = x[j]; x[j + 1] = t } }
	function spr(list,   n, i, parts) {
		n = split(list, parts, " "); if (n == 0) return "-"
		for (i = 1; i <= n; i++) x[i] = parts[i] + 0
		sortv(n)
		if (n <= 3) return sprintf("%.2f–%.2f", x[1], x[n])
		return sprintf("%.2f–%.2f", x[int(0.25 * (n - 1) + 0.5) + 1], x[int(0.75 * (n - 1) + 0.5) + 1])
	}
	NR == FNR { k = $1 "\t" $2 "\t" $3; r[k "\t" $4] = $6; c[k "\t" $4] = $15
		if (!(k in seen)) { seen[k] = 1; o[++n] = k }; next }
	{ k = $1 "\t" $2 "\t" $3 "\t" $5
	  if ($4 == "popboxd") { pr[k] = $6; pc[k] = $9 } else if ($4 == dl) { dr[k] = $6; dc[k] = $9 } }
	END {
		for (k in pr) if ((k in dr) && dr[k] > 0 && dc[k] > 0) {
			split(k, f, "\t"); g = f[1] "\t" f[2] "\t" f[3]
			lr[g] = lr[g] " " pr[k] / dr[k]; lc[g] = lc[g] " " pc[k] / dc[k]
		}
		for (i = 1; i <= n; i++) { a = o[i] "\tpopboxd"; b = o[i] "\t" dl
			if (!(a in r) || !(b in r) || r[b] == 0 || c[b] == 0) continue
			split(o[i], f, "\t")
			printf "| %s | %s | %s | %.2f (%s) | %.2f (%s) |\n", f[1] == "small" ? "4 KB" : "100 KB",
				f[2] == "lda" ? "LDA" : "LMTP", f[3], r[a] / r[b], spr(lr[o[i]]), c[a] / c[b], spr(lc[o[i]])
		}
	}' "$RES/spread.tsv" "$RES/deliver.tsv"
}

report() {
	local s
	echo "## Delivery: popboxd beside Dovecot ($(date -u +%Y-%m-%d))"
	echo
	echo "Machine: $MACHINE."
	echo
	echo "Messages (bench/corpus.py, seed 7):"
	for s in "${SIZES[@]}"; do echo "- ${SIZE_LABEL[$s]}: ${CORPUS_LINE[$s]}"; done
	echo
	echo "Each run delivers the messages (at most $SECS s of starting them) into"
	echo "empty Maildirs, one user per worker or connection, and checks that every"
	echo "one is stored once, whole.  LDA: one process per message, the message in a"
	echo "pipe on its standard input, run as $MAIL_USER: \`popbox-deliver -c CONF -f SENDER USER\`"
	echo "(asks popboxd's auth process over userdb_socket) or \`dovecot-lda -c CONF -d USER"
	echo "-f SENDER\` (asks Dovecot's auth over auth-userdb; it execs doveconf to read"
	echo "its config).  LMTP: persistent connections to the server on 127.0.0.1, MAIL,"
	echo "RCPT, DATA pipelined, one recipient per message.  Dovecot's mail_fsync:"
	echo "$DOVECOT_FSYNCS (optimized, its default, fsyncs the file and new/ as popbox"
	echo "does).  Maildirs on: $FS_LINE."
	echo
	echo "$ROUNDS rounds, servers in turn; every figure is the median of the rounds and"
	echo "in brackets their spread ($(awk "$AWK_CELL"'BEGIN { print spread_name('"$ROUNDS"') }'); none when they agree at the"
	echo "precision shown).  CPU per message in µs: server = all the server's"
	echo "processes (/proc), agent = the delivery processes (wait4 rusage), total ="
	echo "both; load = the load generator (bench/deliver-load.py).  Load average"
	echo "(1/5/15 min) before the first run $(head -n 1 "$RES/deliver.tsv" | cut -f17), after the last"
	echo "$(tail -n 1 "$RES/deliver.tsv" | cut -f18); every run's below.  Other CPU (the machine's busy"
	echo "time that was neither the server, the agents nor the load generator, in %"
	echo "of all cores): up to $(cut -f16 "$RES/deliver.tsv" | sort -n | tail -n 1) % in a run.  Took $((T_END - T_START)) s."
	echo
	echo "| size | path | at once | server | messages/s | total CPU (µs/msg) | server CPU | agent CPU | load CPU | p50 (ms) | p99 (ms) | errors |"
	echo "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	awk -F'\t' 'NR == FNR { e[$1 "\t" $2 "\t" $3 "\t" $4] += $13; next }
		{ print $0 "\t" e[$1 "\t" $2 "\t" $3 "\t" $4] + 0 }' "$RES/deliver.tsv" "$RES/spread.tsv" |
	awk -F'\t' "$AWK_CELL"'{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n",
		$1 == "small" ? "4 KB" : "100 KB", $2 == "lda" ? "LDA" : "LMTP", $3, $4,
		cell($6, $7, $8, 1), cell($15, $16, $17, 0), cell($9, $10, $11, 0),
		cell($12, $13, $14, 0), cell($18, $19, $20, 0), cell($21, $22, $23, 2),
		cell($24, $25, $26, 2), $27 }'
	echo
	local l
	for l in "${LABELS[@]}"; do
		[ "$l" = popboxd ] && continue
		echo "popboxd ÷ $l per workload: the ratio of the medians, and in brackets the"
		echo "spread of the per-round ratios; messages/s (above 1: popboxd delivers"
		echo "more), total CPU per message (below 1: popboxd needs less)."
		echo
		echo "| size | path | at once | messages/s | total CPU per message |"
		echo "|---|---|---:|---:|---:|"
		ratio_rows "$l"
		echo
	done
	echo "<details><summary>Every run</summary>"
	echo
	echo "| size | path | at once | server | round | messages/s | server CPU (µs/msg) | agent CPU | total CPU | load CPU | p50 (ms) | p99 (ms) | errors | delivered | stored | other CPU (%) | load avg before → after |"
	echo "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
	# In the order of the workloads, each one's rows by server, then round.
	awk -F'\t' -v OFS='\t' '{ k = $1 FS $2 FS $3; if (k != last) { b++; last = k }; print b, $0 }' \
		"$RES/deliver.tsv" | sort -t$'\t' -s -k1,1n -k5,5 -k6,6n | cut -f2- |
	awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s → %s |\n",
		$1 == "small" ? "4 KB" : "100 KB", $2 == "lda" ? "LDA" : "LMTP", $3, $4, $5, $6, $7, $8, $9,
		$10, $11, $12, $13, $14, $15, $16, $17, $18 }'
	echo
	echo "</details>"
}

mkdir -p "$top/bench/results"
outfile=$top/bench/results/deliver-$(date -u +%Y%m%d-%H%M%S).md
report | tee "$outfile"
say "written to $outfile"
