#!/usr/bin/env bash
# shellcheck disable=SC2034  # the variables set here are for the scripts that source it
# common.sh — shell helpers shared by the bench scripts (churn, tls, bulk,
# bigdrop, deliver, fetch; sourced after bench/dovecot.sh, whose proc_tree
# they use; they call the script's say and die):
#   cpu_ticks ROOT     user+system clock ticks of ROOT and its descendants,
#                      reaped children included
#   popboxd_up LOG     true once popboxd's master and all its children
#                      have logged event=started
#   settle ROOT        waits (at most 10 s) until ROOT's process count stops
#                      moving (Dovecot's process_min_avail forks)
#   machine_line       one line naming the machine and the versions measured
#                      (popbox: BENCH_POPBOX_REV, else git describe of the tree)
#   free_port          a free loopback port not handed out before, in FREE_PORT
#                      (below the ephemeral range; calls the script's die)
#   kv KEY             the value of KEY=value in the text on stdin
#   wait_stop PID [S]  SIGTERM, wait S seconds (30), SIGKILL; reaps it
#   stop_popboxd_tree PID  stops a popboxd master, then any child of it left
#   run_popboxd BIN CONF PASSWD KEYS  starts a popboxd (see below)
#   loadavg            the 1-, 5- and 15-minute load averages, "a/b/c"
#   spread K           summary of a TSV on stdin (see below)
#   AWK_CELL           awk functions for report cells: cell(median, lo, hi,
#                      decimals) prints "median (lo–hi)", or the median
#                      alone when lo = hi; spread_name(n) says what lo–hi is
#   mail_fs_setup DIR NEED_MB NEED_FILES [PREFIX]  the Maildirs' file
#                      system: a fresh journalled ext4 loop-mounted in DIR
#                      (BENCH_FS, BENCH_FS_MB; see below), in MAIL_FS
#   mail_fs_line PATH  PATH's file system, mount options, journal
#   mail_fs_unmount    unmounts it; false if it stays mounted
#   remove_work_dir DIR  at exit: the temp dir goes, the file system
#                      unmounted first (BENCH_KEEP=1: both stay)

cpu_ticks() { # ROOT
	proc_tree "$1" | sed 's|.*|/proc/&/stat|' | xargs cat 2>/dev/null |
		awk '{ sub(/^.*\) /, ""); t += $12 + $13 + $14 + $15 }
		     END { print t + 0 }' || true
}

popboxd_up() { # LOG
	local line w
	line=$(grep -m 1 'event=started' "$1" 2>/dev/null) || return 1
	case $line in *role=master*) ;; *) return 0 ;; esac
	w=$(sed -n 's/.*role=master workers=\([0-9]*\).*/\1/p' <<<"$line")
	[ "$(grep -c 'event=started role=auth' "$1")" -ge 1 ] &&
		[ "$(grep -c 'event=started role=login' "$1")" -ge "${w:-1}" ] &&
		[ "$(grep -c 'event=started role=mail' "$1")" -ge "${w:-1}" ]
}

settle() { # ROOT
	local last=-1 now
	sleep 1
	for _ in $(seq 1 10); do
		now=$(proc_tree "$1" | wc -l)
		[ "$now" = "$last" ] && return 0
		last=$now
		sleep 1
	done
}

# shellcheck disable=SC2154  # top: set by the script that sources this file
machine_line() {
	local cpu
	cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
	printf '%s\n' "$(nproc) cores ($cpu), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r), $(openssl version | awk '{ print $1, $2 }'), libevent $(pkg-config --modversion libevent 2>/dev/null), Dovecot $(dovecot_version 2>/dev/null || echo none), popbox ${BENCH_POPBOX_REV:-$(git -C "$top" describe --always --dirty 2>/dev/null || echo '?')}${BENCH_POPBOXD:+; popboxd measured: ${BENCH_POPBOXD_LABEL:+$BENCH_POPBOXD_LABEL, }$BENCH_POPBOXD}"
}

read -r PORT_LO _ < /proc/sys/net/ipv4/ip_local_port_range
USED_PORTS=" "
free_port() {
	local p
	for _ in $(seq 1 200); do
		p=$((10000 + RANDOM % (PORT_LO - 10000)))
		case $USED_PORTS in *" $p "*) continue ;; esac
		if [ -z "$(ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null)" ]; then
			USED_PORTS="$USED_PORTS$p "
			FREE_PORT=$p
			return 0
		fi
	done
	die "no free port found"
}

kv() { # KEY
	sed -n "s/.*[ ]$1=\\([^ ]*\\).*/\\1/p" | head -n 1
}

wait_stop() { # PID [SECONDS]
	local pid=$1
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 $((${2:-30} * 10))); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

stop_popboxd_tree() { # PID
	local kids p
	kids=$(proc_tree "$1" | tail -n +2)
	wait_stop "$1"
	for p in $kids; do
		if { tr '\0' ' ' < "/proc/$p/cmdline"; } 2>/dev/null | grep -q popboxd; then
			kill -KILL "$p" 2>/dev/null || true
		fi
	done
}

# run_popboxd BIN CONF PASSWD KEYS: gives PASSWD to the user that reads it
# (auth_user in KEYS, the output of `popboxd -t`, in builds with an auth
# process; else nobody, the mail_user a single-process build drops to),
# starts BIN on CONF in the background (log: popboxd.log beside CONF), sets
# SRV_PID, and waits until all its processes have started; false (the log
# printed) if it did not.
run_popboxd() {
	local reader log
	log=$(dirname "$2")/popboxd.log
	reader=$(sed -n 's/^auth_user *= *//p' <<<"$4")
	chown "${reader:-nobody}" "$3"
	"$1" -c "$2" </dev/null >/dev/null 2>>"$log" &
	SRV_PID=$!
	for _ in $(seq 1 150); do
		popboxd_up "$log" && return 0
		kill -0 "$SRV_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$log" >&2
	return 1
}

loadavg() {
	awk '{ print $1 "/" $2 "/" $3 }' /proc/loadavg
}

# spread K: rows of a TSV on stdin grouped by their first K columns (groups
# in the order they first appear); for every later column, over the
# group's rows: the median, then the spread: min and max of up to 3
# values, the 25th and 75th percentiles (nearest rank) of more.  "-" and
# empty cells are left out.  Prints per group: the K key columns, the row
# count, then "median lo hi" for each later column ("- - -" when none).
spread() { # K
	awk -F'\t' -v OFS='\t' -v k="$1" '
	function sortv(n,   i, j, t) {
		for (i = 2; i <= n; i++) {
			t = a[i]
			for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]
			a[j + 1] = t
		}
	}
	{
		key = $1
		for (i = 2; i <= k; i++) key = key OFS $i
		if (!(key in cnt)) { order[++nk] = key; cnt[key] = 0 }
		cnt[key]++
		if (NF > nf) nf = NF
		for (i = k + 1; i <= NF; i++)
			if ($i != "-" && $i != "") { n = ++nv[key, i]; v[key, i, n] = $i + 0 }
	}
	END {
		for (o = 1; o <= nk; o++) {
			key = order[o]; line = key OFS cnt[key]
			for (i = k + 1; i <= nf; i++) {
				n = nv[key, i] + 0
				if (n == 0) { line = line OFS "-" OFS "-" OFS "-"; continue }
				for (j = 1; j <= n; j++) a[j] = v[key, i, j]
				sortv(n)
				med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
				if (n <= 3) { lo = a[1]; hi = a[n] }
				else { lo = a[int(0.25 * (n - 1) + 0.5) + 1]; hi = a[int(0.75 * (n - 1) + 0.5) + 1] }
				line = line OFS med OFS lo OFS hi
			}
			print line
		}
	}'
}

# shellcheck disable=SC2016
AWK_CELL='
function cell(m, lo, hi, d,   f) {
	if (m == "-" || m == "") return "-"
	f = "%." d "f"
	if (sprintf(f, lo) == sprintf(f, hi)) return sprintf(f, m)
	return sprintf(f " (" f "–" f ")", m, lo, hi)
}
function spread_name(n) { return n > 3 ? "p25–p75" : "min–max" }
'

# ---------------------------------------------------------------- mail file system

# Where a bench's Maildirs go (deliver.sh's servers', fetch.sh's clients').
# "loop" (the default): a fresh ext4 (mkfs defaults: 4 KiB blocks, a
# journal, data=ordered, an inode per 16 KiB) in a sparse image file in the
# temp dir, loop-mounted: nothing but the bench creates or deletes files on
# it.  On a shared file system other work's deletions cost us CPU: ext4
# without a journal (this VM's root file system) allocates a new inode past
# every inode freed in the last 60-360 s (recently_deleted()), and the
# compilers running beside us create and delete temp files all the time.
# Every fsync reaches the disk below (the loop device flushes its image
# file).  "tmp": the temp dir's own file system.
#
# mail_fs_setup DIR NEED_MB NEED_FILES [PREFIX]: the kind from PREFIX_FS,
# else BENCH_FS ("loop" or "tmp"; loop when neither is set); the image's
# size in MB from PREFIX_FS_MB, else BENCH_FS_MB, else 4096, raised to
# NEED_MB and to what NEED_FILES files need in inodes.  The image is
# DIR/mail.img, mounted on DIR/fs.  Sets MAIL_FS (the directory to put the
# Maildirs in), MAIL_FS_MB, MAIL_FS_MOUNT (the mount point, while it may be
# mounted) and MAIL_FS_LINE (what it is, for the report).  Calls die.
MAIL_FS_MOUNT=
mail_fs_setup() { # DIR NEED_MB NEED_FILES [PREFIX]
	local dir=$1 kvar=BENCH_FS mvar=BENCH_FS_MB kind inode_mb
	local pk=${4:-BENCH}_FS pm=${4:-BENCH}_FS_MB
	[ -n "${!pk:-}" ] && kvar=$pk
	[ -n "${!pm:-}" ] && mvar=$pm
	kind=${!kvar:-loop}
	case $kind in
	loop) ;;
	tmp)
		MAIL_FS=$dir
		MAIL_FS_LINE=$(mail_fs_line "$MAIL_FS")
		return 0 ;;
	*) die "$kvar: loop or tmp, not $kind" ;;
	esac
	MAIL_FS_MB=${!mvar:-4096}
	case $MAIL_FS_MB in '' | *[!0-9]*) die "$mvar: a size in MB, not $MAIL_FS_MB" ;; esac
	# mkfs.ext4 makes an inode per 16 KiB; 10 % and 512 MB to spare.
	inode_mb=$(awk -v f="$3" 'BEGIN { printf "%d", f * 16384 * 1.1 / 1048576 + 512 }')
	[ "$MAIL_FS_MB" -ge "$2" ] || MAIL_FS_MB=$2
	[ "$MAIL_FS_MB" -ge "$inode_mb" ] || MAIL_FS_MB=$inode_mb
	truncate -s "${MAIL_FS_MB}M" "$dir/mail.img"
	mkfs.ext4 -q -F -L popbox-bench "$dir/mail.img" || die "mkfs.ext4 failed"
	mkdir "$dir/fs"
	# Set before mounting: an interrupt right after the mount still
	# finds it (mail_fs_unmount asks mountpoint).
	MAIL_FS_MOUNT=$dir/fs
	mount -o loop "$dir/mail.img" "$dir/fs" ||
		die "mount -o loop failed ($kvar=tmp uses the temp dir's file system)"
	chmod 755 "$dir/fs"
	MAIL_FS=$dir/fs
	MAIL_FS_LINE=$(mail_fs_line "$MAIL_FS")
}

mail_fs_line() { # PATH: the file system, its mount options, whether it journals
	local src type opts journal=
	read -r src type opts < <(findmnt -no SOURCE,FSTYPE,OPTIONS -T "$1")
	if [ "${type:-}" = ext4 ]; then
		if dumpe2fs -h "$src" 2>/dev/null | grep -q 'features:.*has_journal'; then
			journal=", with a journal"
		else
			journal=", without a journal"
		fi
	fi
	echo "$type ($opts)$journal on $src${MAIL_FS_MOUNT:+, a ${MAIL_FS_MB} MB sparse image file on $(findmnt -no FSTYPE,SOURCE -T "$(dirname "$MAIL_FS_MOUNT")" | awk '{ print $1, $2 }'), loop-mounted}"
}

# mail_fs_unmount: unmounts MAIL_FS_MOUNT if mounted (the loop device goes
# with it: mount -o loop sets autoclear), retrying for 5 s while it is busy
# (a process that was using it still exiting); false if it stays mounted.
mail_fs_unmount() {
	[ -n "$MAIL_FS_MOUNT" ] || return 0
	for _ in $(seq 1 50); do
		if ! mountpoint -q "$MAIL_FS_MOUNT"; then
			MAIL_FS_MOUNT=
			return 0
		fi
		umount "$MAIL_FS_MOUNT" 2>/dev/null && continue
		sleep 0.1
	done
	umount "$MAIL_FS_MOUNT" && { MAIL_FS_MOUNT=; return 0; }
	say "could not unmount $MAIL_FS_MOUNT"
	return 1
}

# remove_work_dir DIR: at exit, after the processes are stopped: DIR (the
# temp dir) and the mail file system in it go, unless BENCH_KEEP=1 (then
# both stay, mounted); if it cannot be unmounted, DIR stays too.
remove_work_dir() { # DIR
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		say "kept $1"
		[ -z "$MAIL_FS_MOUNT" ] || ! mountpoint -q "$MAIL_FS_MOUNT" ||
			say "the Maildir file system is still mounted on $MAIL_FS_MOUNT: umount it"
	elif mail_fs_unmount; then
		rm -rf "$1"
	else
		say "$1 left in place"
	fi
}
