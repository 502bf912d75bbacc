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
	nodejs
	# for promtool (scripts/check-contrib); Debian has no smaller package
	# with it.  On a machine with systemd the package also enables a
	# Prometheus server on port 9090: systemctl disable --now prometheus
	prometheus
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

# The stock Standard Webhooks library for Node.js and its two dependencies,
# pinned by version and checksum, fetched from the npm registry into
# DIR/node_modules (never into the tree).  t/120_forward_stock.pl verifies
# forwarded events with it, as README.md's recipe does.
BW_NODE_MODULES=(
	"standardwebhooks standardwebhooks/-/standardwebhooks-1.3.0.tgz 30478263f878357e0e36f5333ee9d1279639377c"
	"@stablelib/base64 @stablelib/base64/-/base64-1.0.1.tgz bdfc1c6d3a62d7a3b7bbc65b6cce1bb4561641be"
	"fast-sha256 fast-sha256/-/fast-sha256-1.3.0.tgz 7916ba2054eeb255982608cccd0f6660c79b7ae6"
)

# bw_fetch_node_modules DIR: unpack BW_NODE_MODULES into DIR/node_modules.
bw_fetch_node_modules() {
	local dir=$1 entry name path sum tgz
	for entry in "${BW_NODE_MODULES[@]}"; do
		read -r name path sum <<<"$entry"
		[ -f "$dir/node_modules/$name/package.json" ] && continue
		tgz=$(mktemp)
		curl -fsSL --retry 3 -o "$tgz" "https://registry.npmjs.org/$path"
		if [ "$(sha1sum "$tgz" | cut -d' ' -f1)" != "$sum" ]; then
			echo "checksum mismatch for $path" >&2
			rm -f "$tgz"
			return 1
		fi
		mkdir -p "$dir/node_modules/$name"
		tar -xzf "$tgz" -C "$dir/node_modules/$name" --strip-components=1
		rm -f "$tgz"
	done
}
