#!/usr/bin/env bash
# run-demo.sh BUILD_DIR — what `make run` does after building: creates ./run/
# (a config, a passwd-file with the user "demo", its password, a Maildir with
# sample messages) unless it exists, refills the demo Maildir when it is
# empty, prints how to fetch the mail, and runs popboxd in the foreground.
set -euo pipefail
build=${1:-build/release}
top=$(pwd)
run=$top/run
port=${POPBOX_DEMO_PORT:-1110}
# Implicit TLS (POP3S) port; 0 (any free port) when the plain one is 0.
tls_port=${POPBOX_DEMO_TLS_PORT:-$([ "$port" = 0 ] && echo 0 || echo 1995)}
maildir=$run/mail/demo/Maildir

make_password() {
	# 96 random bits as letters and digits.
	head -c 12 /dev/urandom | base64 | tr -d '/+='
}

write_sample() { # NAME: message text on stdin goes to new/NAME
	cat > "$maildir/tmp/$1"
	mv "$maildir/tmp/$1" "$maildir/new/$1"
}

fill_maildir() {
	mkdir -p "$maildir/new" "$maildir/cur" "$maildir/tmp"
	local now; now=$(date +%s)
	local date; date=$(date -R)
	write_sample "$now.M1P$$.popbox-demo" <<MSG
From: popbox <postmaster@localhost>
To: demo@localhost
Subject: Welcome to popbox
Date: $date
Message-ID: <$now.1@popbox-demo>

Hello!

This message was fetched from popboxd, the popbox POP3 server.
Messages stay on the server until your client sends DELE and QUIT.
MSG
	write_sample "$now.M2P$$.popbox-demo" <<MSG
From: popbox <postmaster@localhost>
To: demo@localhost
Subject: A line that starts with a dot
Date: $date
Message-ID: <$now.2@popbox-demo>

The next line starts with a dot, so POP3 byte-stuffs it on the wire:
.hidden? No: your client un-stuffs it.
.
That line above was a single dot.
MSG
	# Bare LF line ends, 8-bit text and no final newline: sent as CRLF.
	printf 'From: popbox <postmaster@localhost>\nTo: demo@localhost\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\nDate: %s\nMessage-ID: <%s.3@popbox-demo>\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGrüße aus popbox. No newline at the end of this line.' \
		"$date" "$now" | write_sample "$now.M3P$$.popbox-demo"
}

make_certificate() {
	# A self-signed ECDSA P-256 certificate for localhost and 127.0.0.1.
	mkdir -p "$run/tls"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-days 825 -subj /CN=localhost \
		-addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
		-keyout "$run/tls/key.pem" -out "$run/tls/cert.pem" 2>/dev/null
	chmod 600 "$run/tls/key.pem"
	chmod 644 "$run/tls/cert.pem"
	echo "run-demo: made a self-signed certificate in $run/tls/"
}

if [ ! -f "$run/popboxd.conf" ]; then
	mkdir -p "$run"
	chmod 755 "$run"
	password=$(make_password)
	printf '%s\n' "$password" > "$run/demo.password"
	chmod 600 "$run/demo.password"
	hash=$(printf '%s\n' "$password" | "$build/popbox" passwd)
	printf 'demo:%s::::::\n' "$hash" > "$run/passwd"
	chmod 600 "$run/passwd"
	{
		echo "# popboxd demo configuration, written by 'make run'."
		echo "# Every setting is described in docs/configuration.md."
		echo "listen = 127.0.0.1:$port"
		echo "tls_listen = 127.0.0.1:$tls_port"
		echo "tls_cert_file = $run/tls/cert.pem"
		echo "tls_key_file = $run/tls/key.pem"
		echo "passdb_file = $run/passwd"
		echo "mail_location = $run/mail/%u/Maildir"
		if [ "$(id -u)" -eq 0 ]; then
			echo "# Started as root, popboxd runs its processes as the users"
			echo "# popbox (mail), popbox-login and popbox-auth (the defaults)."
		fi
	} > "$run/popboxd.conf"
	echo "run-demo: created $run (config, passwd-file, demo user)"
fi
[ -f "$run/tls/cert.pem" ] || make_certificate
if ! grep -q '^tls_listen' "$run/popboxd.conf"; then
	# A run/ from before TLS: add it.
	printf 'tls_listen = 127.0.0.1:%s\ntls_cert_file = %s\ntls_key_file = %s\n' \
		"$tls_port" "$run/tls/cert.pem" "$run/tls/key.pem" >> "$run/popboxd.conf"
fi

if [ -z "$(ls -A "$maildir/new" "$maildir/cur" 2>/dev/null)" ]; then
	fill_maildir
	echo "run-demo: put 3 sample messages into $maildir"
fi

if [ "$(id -u)" -eq 0 ]; then
	# The mail processes run as mail_user, the auth process (the only
	# reader of the passwd-file) as popbox-auth.
	mail_user=$(sed -n 's/^mail_user = //p' "$run/popboxd.conf" | tail -n 1)
	mail_user=${mail_user:-popbox}
	chown -R "$mail_user:" "$run/mail"
	chown popbox-auth: "$run/passwd"
	chmod 600 "$run/passwd"
	if ! setpriv --reuid=popbox-auth --regid=popbox-auth --clear-groups test -r "$run/passwd" ||
	   ! setpriv --reuid="$mail_user" --regid="$(id -g "$mail_user")" --clear-groups test -w "$run/mail"; then
		echo "run-demo: the users popbox-auth and $mail_user cannot reach $run (a parent" >&2
		echo "run-demo: directory is not searchable by others); run make run as a normal user instead." >&2
		exit 1
	fi
fi

password=$(cat "$run/demo.password")
port=$(sed -n 's/^listen = .*:\([0-9]*\)$/\1/p' "$run/popboxd.conf" | head -n 1)
tls_port=$(sed -n 's/^tls_listen = .*:\([0-9]*\)$/\1/p' "$run/popboxd.conf" | head -n 1)
cat <<EOT

popboxd demo: user "demo", password "$password" (also in run/demo.password)

List, fetch and delete the demo mail with curl:
  curl -u demo:$password pop3://127.0.0.1:$port/
  curl -u demo:$password pop3://127.0.0.1:$port/1
  curl -u demo:$password -X 'DELE 1' pop3://127.0.0.1:$port/ -I

Fetch it all with mpop into run/fetched/ (a Maildir; mpop deletes on the
server after a successful QUIT; add --keep=on to leave the mail there):
  mkdir -p $run/fetched/new $run/fetched/cur $run/fetched/tmp
  mpop --host=127.0.0.1 --port=$port --tls=off --auth=user --user=demo \\
       --passwordeval='cat $run/demo.password' --uidls-file=$run/mpop.uidls \\
       --delivery=maildir,$run/fetched

Over TLS, verifying the demo's self-signed certificate (run/tls/cert.pem;
trust it with --cacert, or copy it into /usr/local/share/ca-certificates/
as popbox-demo.crt and run update-ca-certificates):
  curl --cacert $run/tls/cert.pem -u demo:$password pop3s://localhost:$tls_port/
  curl --cacert $run/tls/cert.pem --ssl-reqd -u demo:$password pop3://localhost:$port/1
  mkdir -p $run/fetched-tls/new $run/fetched-tls/cur $run/fetched-tls/tmp
  mpop --host=localhost --port=$tls_port --tls=on --tls-starttls=off \\
       --tls-trust-file=$run/tls/cert.pem --auth=user --user=demo \\
       --passwordeval='cat $run/demo.password' --uidls-file=$run/mpop-tls.uidls \\
       --keep=on --delivery=maildir,$run/fetched-tls

Or talk to it yourself:  telnet 127.0.0.1 $port   (USER demo, PASS ..., LIST)
Stop the server with Ctrl-C.  'make run' again refills the demo maildrop
when it is empty.

EOT
exec "$build/popboxd" -c "$run/popboxd.conf"
