#!/usr/bin/env bash
# install-deps.sh — installs the Debian 12 packages popbox needs to build,
# run and test, if any is missing, and (as root) creates the system users
# popboxd's processes run as.  Quiet when everything is there.
set -euo pipefail

packages=(
	build-essential pkg-config          # compiler, make, pkg-config
	libevent-dev libssl-dev libcrypt-dev  # libevent 2.1, OpenSSL 3, libxcrypt
	libcmocka-dev                       # C unit tests
	clang libclang-rt-14-dev            # libFuzzer harnesses
	clang-tidy cppcheck                 # static analysis (make lint)
	python3 python3-pytest              # integration tests
	curl mpop                           # real POP3 clients for the tests
	postfix swaks                       # a real MTA and SMTP sender (issue 5 tests)
	dovecot-pop3d                       # a real POP3 peer for the popbox-fetch tests
	openssl procps                      # certificates, ps/pgrep
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}"
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null || { echo "install-deps: need root or sudo for apt-get" >&2; exit 1; }
		sudo=(sudo)
	fi
	export DEBIAN_FRONTEND=noninteractive
	# Postfix is installed unconfigured: the tests run private instances.
	echo "postfix postfix/main_mailer_type select No configuration" |
		"${sudo[@]}" debconf-set-selections
	"${sudo[@]}" apt-get update -q
	"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
	# The tests run private Dovecot instances on free ports: the system
	# service the package may have started is not wanted.
	if [[ " ${missing[*]} " == *" dovecot-pop3d "* ]]; then
		"${sudo[@]}" systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 ||
			"${sudo[@]}" service dovecot stop >/dev/null 2>&1 || true
	fi
fi

# One user per kind of process (the defaults of mail_user, login_user and
# auth_user): a bug in one cannot read what another may.  Only root can
# make them; popboxd started by another user runs without separation.
if [ "$(id -u)" -eq 0 ]; then
	for u in popbox popbox-login popbox-auth; do
		if ! id -u "$u" >/dev/null 2>&1; then
			echo "install-deps: creating system user $u"
			useradd --system --user-group --no-create-home \
				--home-dir /nonexistent --shell /usr/sbin/nologin "$u"
		fi
	done
fi
