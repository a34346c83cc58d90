# shellcheck shell=bash
# Debian packages the project needs to build, test and run the demo.

MUSTER_DEB_PACKAGES=(
    libsystemd-dev libsqlite3-dev pkg-config erofs-utils rsync
    postgresql postgresql-contrib iproute2 openssl sqlite3 python3 procps util-linux
    git python3-psycopg2 python3-yaml nfs-ganesha nfs-ganesha-vfs libnfs-utils rpcbind
    systemd dbus curl
)

# ensure_packages [PKG...]: installs whatever of the list is missing. Fast (dpkg -s only) when all are present.
ensure_packages() {
    local pkgs=("$@") missing=() p
    [ ${#pkgs[@]} -gt 0 ] || pkgs=("${MUSTER_DEB_PACKAGES[@]}")
    for p in "${pkgs[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]} (run as root to install them)"
    log "installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # postinst lines like "Failed to connect to bus" are harmless here (PID 1 is not systemd).
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# ensure_swift: the toolchain must be on PATH (common.sh adds /opt/swift/usr/bin).
ensure_swift() {
    command -v swift >/dev/null 2>&1 || die "swift not found (expected /opt/swift/usr/bin/swift)"
}
