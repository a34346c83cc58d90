# shellcheck shell=bash
# Shared helpers for scripts/*. Source this file; it does not run anything by itself.

# Repository root (scripts/lib/..).
MUSTER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export MUSTER_ROOT

# The Swift toolchain of this machine kind lives in /opt/swift.
case ":$PATH:" in *:/opt/swift/usr/bin:*) ;; *) PATH=/opt/swift/usr/bin:$PATH ;; esac
export PATH

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${MUSTER_SCRIPT:-muster}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

require_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (network namespaces, packages, runuser); try: sudo $0 $*"
}

# A TCP port on 127.0.0.1 that was free a moment ago.
free_port() { # [ADDRESS] (default 127.0.0.1)
    python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "${1:-127.0.0.1}"
}

# wait_until TIMEOUT_SECONDS DESCRIPTION CMD... : polls CMD every 0.2 s until it succeeds.
wait_until() {
    local timeout=$1 what=$2; shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "timed out after ${timeout}s waiting for: $what"
            return 1
        fi
        sleep 0.2
    done
}

# kill_pid PID [GRACE_SECONDS]: SIGTERM, wait, then SIGKILL. Only ever by PID.
kill_pid() {
    local pid=$1 grace=${2:-10}
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
