# shellcheck shell=bash
#
# Debian packages needed to build, run and test biteship_webhook.  Sourced by
# scripts/start and scripts/test; installs only what is missing.

BW_BUILD_PACKAGES=(
	build-essential
	postgresql-15
	postgresql-server-dev-15
	postgresql-contrib
	libcurl4-openssl-dev
	libssl-dev
	libhttp-parser-dev
	openssl
	curl
	ca-certificates
)
BW_TEST_PACKAGES=(
	libipc-run-perl
	python3
)

# bw_install_packages PKG...: apt-get install whatever is not installed yet.
bw_install_packages() {
	local missing=()
	local p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing packages: ${missing[*]} (run as root, or install them first)" >&2
		return 1
	fi
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

BW_PGBIN=/usr/lib/postgresql/15/bin
