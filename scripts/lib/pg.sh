# shellcheck shell=bash
# A throwaway PostgreSQL 15 cluster (initdb + pg_ctl), for tests and benchmarks.
#   pg_throwaway_start   -> sets and exports PG_THROWAWAY_DIR, PG_THROWAWAY_PORT, PG_THROWAWAY_URL
#   pg_throwaway_stop    -> stops it and removes its directory
# initdb refuses to run as root, so as root the cluster runs as the `postgres` OS user (made by the
# postgresql-common package). Listens on 127.0.0.1 and a unix socket in its directory; fsync off (tests only).
# PG_LISTEN=ADDR listens on ADDR instead of 127.0.0.1 (e.g. a bridge address that network namespaces reach), and
# PG_TRUST_CIDR=CIDR lets clients from CIDR in without a password (a pg_hba.conf `host … trust` line).

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_OS_USER=${PG_OS_USER:-postgres}

_pg_as() {
    if [ "$(id -u)" = 0 ]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

pg_throwaway_start() {
    local port dir max_conn=${PG_MAX_CONNECTIONS:-300} listen=${PG_LISTEN:-127.0.0.1}
    [ -x "$PG_BIN/initdb" ] || die "no PostgreSQL server binaries in $PG_BIN (package postgresql)"
    # Always a free port: PG_THROWAWAY_PORT is this function's output, and a nested run (scripts/test → the
    # example's selftest) inherits the outer cluster's port through the environment.
    port=$(free_port "$listen")
    dir=$(mktemp -d /tmp/muster-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown "$PG_OS_USER" "$dir"
    if ! _pg_as "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync \
        --no-instructions >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        rm -rf "$dir"
        die "initdb failed"
    fi
    [ -n "${PG_TRUST_CIDR:-}" ] && echo "host all all $PG_TRUST_CIDR trust" >>"$dir/data/pg_hba.conf"
    if ! _pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o \
        "-p $port -k $dir -c listen_addresses=$listen -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=$max_conn" \
        start >/dev/null; then
        cat "$dir/server.log" >&2
        rm -rf "$dir"
        die "PostgreSQL did not start"
    fi
    PG_THROWAWAY_DIR=$dir
    PG_THROWAWAY_PORT=$port
    PG_THROWAWAY_URL="postgres://postgres@$listen:$port/postgres?sslmode=disable"
    export PG_THROWAWAY_DIR PG_THROWAWAY_PORT PG_THROWAWAY_URL
    log "throwaway PostgreSQL on $listen:$port (data in $dir)"
}

pg_throwaway_stop() {
    local dir=${1:-${PG_THROWAWAY_DIR:-}}
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    _pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    PG_THROWAWAY_DIR=
}
