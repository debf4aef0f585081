#!/usr/bin/env bash
# dovecot.sh — Dovecot as the comparison server for the benchmarks in bench/
# (sourced by bench/tls.sh; see docs/performance.md).
#
#   dovecot_install                   apt-get install dovecot-pop3d if missing;
#                                     the package's own service is stopped and
#                                     disabled when this installed it
#   dovecot_write_conf DIR MODE CONNS PASSWD MAILROOT CERT KEY POP3_PORT POP3S_PORT
#                                     a throwaway config in DIR/dovecot.conf
#   dovecot_start DIR                 runs `dovecot -F` with it in the background;
#                                     sets DOVECOT_PID (the master)
#   dovecot_stop PID                  stops that master and so its children;
#                                     any child left behind is killed by PID
#   proc_tree PID                     PID and all its descendants, one a line
#
# MODE is "default" (Dovecot's default login model: one pop3-login process
# per connection, service_count = 1; with TLS that process stays for the
# whole session, proxying the decrypted stream to the pop3 process) or
# "tuned" (the documented high-performance mode: pop3-login service_count = 0,
# a few login processes with many clients each, process_min_avail = cores;
# pop3 service_count = 100, process_min_avail = cores).  In both modes each
# logged-in POP3 session is its own pop3 process.
#
# The instance runs on 127.0.0.1 only, on the ports given, with its own
# base_dir, state_dir and log file under DIR; it never touches /etc/dovecot,
# /run/dovecot or a system Dovecot that may be running.  Mail processes run
# as nobody:nogroup (as popboxd does in the bench), users come from the same
# passwd-file ({PLAIN} passwords), mail from the same Maildirs.

DOVECOT_PID=

dovecot_install() {
	if command -v dovecot >/dev/null 2>&1 && [ -x /usr/lib/dovecot/pop3 ]; then
		return 0
	fi
	echo "dovecot.sh: installing dovecot-pop3d (Debian)" >&2
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q \
		--no-install-recommends dovecot-pop3d >&2
	# The package starts the system service unless policy-rc.d forbids it
	# (as in containers).  That service is ours (we just installed it): stop
	# and disable it, so nothing of it stays running or starts at boot.
	if [ -s /run/dovecot/master.pid ] &&
	   kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
		"${sudo[@]}" systemctl stop dovecot.service dovecot.socket 2>/dev/null ||
			"${sudo[@]}" service dovecot stop 2>/dev/null || true
	fi
	"${sudo[@]}" systemctl disable dovecot.service dovecot.socket >/dev/null 2>&1 || true
	"${sudo[@]}" update-rc.d dovecot disable >/dev/null 2>&1 || true
}

dovecot_version() {
	dovecot --version 2>/dev/null | awk '{ print $1 }'
}

dovecot_write_conf() { # DIR MODE CONNS PASSWD MAILROOT CERT KEY POP3_PORT POP3S_PORT
	local dir=$1 mode=$2 conns=$3 passwd=$4 mailroot=$5 cert=$6 key=$7
	local port=$8 sport=$9
	local cores; cores=$(nproc)
	# Room for every held connection plus the bench's own slack.
	local procs=$((conns + 200))
	local clients=$((2 * conns + 1000))
	local login
	mkdir -p "$dir/state"
	if [ "$mode" = tuned ]; then
		login="  service_count = 0
  client_limit = $clients
  process_min_avail = $cores
  process_limit = $((cores * 4))
  vsz_limit = 2G"
	else
		login="  service_count = 1
  process_limit = $procs"
	fi
	local pop3="  process_limit = $procs"
	[ "$mode" = tuned ] && pop3="$pop3
  service_count = 100
  process_min_avail = $cores"
	cat > "$dir/dovecot.conf" <<EOF
# Throwaway Dovecot configuration written by bench/dovecot.sh ($mode mode).
instance_name = popbox-bench-$$-$mode
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <$cert
ssl_key = <$key
disable_plaintext_auth = no
auth_mechanisms = plain scram-sha-256
passdb {
  driver = passwd-file
  args = scheme=PLAIN $passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$mailroot/%u
}
mail_location = maildir:$mailroot/%u/Maildir
default_process_limit = $procs
default_client_limit = $clients
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $port
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $sport
    ssl = yes
  }
$login
}
service pop3 {
$pop3
}
EOF
}

proc_tree() { # PID: prints PID and every descendant, one a line
	ps -e -o pid=,ppid= | awk -v root="$1" '
		{ kids[$2] = kids[$2] " " $1 }
		END {
			n = 1; q[1] = root
			for (i = 1; i <= n; i++) {
				print q[i]
				m = split(kids[q[i]], k, " ")
				for (j = 1; j <= m; j++) q[++n] = k[j]
			}
		}'
}

dovecot_start() { # DIR: runs DIR/dovecot.conf in the foreground, in the background
	local dir=$1
	DOVECOT_PID=
	dovecot -F -c "$dir/dovecot.conf" >>"$dir/dovecot.stderr" 2>&1 &
	local pid=$!
	local port; port=$(sed -n '/inet_listener pop3 {/,/}/s/^ *port = //p' "$dir/dovecot.conf")
	local i
	for i in $(seq 1 150); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "dovecot.sh: dovecot exited at start:" >&2
			cat "$dir/dovecot.stderr" "$dir/dovecot.log" >&2 2>/dev/null
			return 1
		fi
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			DOVECOT_PID=$pid
			return 0
		fi
		sleep 0.1
	done
	echo "dovecot.sh: dovecot did not listen on $port within 15 s" >&2
	kill -TERM "$pid" 2>/dev/null || true
	return 1
}

dovecot_stop() { # PID of a master that dovecot_start started
	local pid=$1 i kids
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kids=$(proc_tree "$pid" | tail -n +2)
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 600); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "dovecot.sh: dovecot $pid did not stop in 60 s: killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	# Children the master left behind (it was killed): ours, by PID, and
	# only if they still are Dovecot processes.
	for i in $kids; do
		if { tr '\0' ' ' < "/proc/$i/cmdline"; } 2>/dev/null | grep -q '^dovecot'; then
			kill -KILL "$i" 2>/dev/null || true
		fi
	done
}
