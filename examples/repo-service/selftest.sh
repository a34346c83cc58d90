#!/usr/bin/env bash
# selftest.sh: end-to-end test of the example service on this machine.
#
#   examples/repo-service/selftest.sh [--no-systemd] [--no-cluster] [--keep]
#
# Standalone part (needs python3, sqlite3, git): generates a small installation in a temp dir, checks the
# generator is deterministic, runs app.py on a free port and checks /health, /repos (every repository exists,
# every head resolves and equals `git rev-parse HEAD` and the newest commit in the database), /search (against
# sqlite3 and git), /stats (against sqlite3), a missing repository reported as missing, a refused config; stops it.
#
# systemd part (root only, skipped otherwise): the real unit file in a private systemd user manager (own
# cgroup, own mount namespace, as TESTING.md describes), with a drop-in pointing ExecStart at this checkout and
# the output at a file: it starts and answers, a SIGKILLed process is restarted (Restart=on-failure), SIGTERM
# stops it cleanly, and a refused config leaves it failed with exit status 2 and no restart loop.
#
# Cluster part (skipped with a message unless PostgreSQL 15 server binaries, psycopg2 and a built
# muster-agent are there; MUSTER_AGENT=path overrides the binary): a throwaway PostgreSQL, `muster-agent
# migrate-sqlite` into schema "app", the directories copied to a stand-in shared volume, alias paths rewritten
# with sed, the standalone tree moved away, config switched to postgres; the same endpoints must give the same
# answers; /health turns 503 when PostgreSQL stops.
#
# With CI=true a part that would be skipped fails instead. Exits non-zero on the first failure. Cleans up what it
# started (by PID) and its temp dir (unless --keep).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-/usr/bin/python3}
CLUSTER=1
SYSTEMD=1
KEEP=0
for arg in "$@"; do
    case $arg in
        --no-cluster) CLUSTER=0 ;;
        --no-systemd) SYSTEMD=0 ;;
        --keep) KEEP=1 ;;
        *) echo "usage: $0 [--no-systemd] [--no-cluster] [--keep]" >&2; exit 2 ;;
    esac
done

say() { printf 'selftest: %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; [ -n "${APP_LOG:-}" ] && [ -f "$APP_LOG" ] && tail -n 20 "$APP_LOG" >&2; exit 1; }
pass() { say "ok   $*"; }
# skip_part REASON: a part that cannot run here is skipped, except under CI=true, where that is a failure
skip_part() { if [ "${CI:-}" = true ]; then fail "CI=true, cannot skip: $*"; else say "SKIPPED $*"; fi; }

T=$(mktemp -d /tmp/repo-service-selftest.XXXXXX)
APP_PID=
PG_STARTED=0
cleanup() {
    local rc=$?
    if [ -n "$APP_PID" ] && kill -0 "$APP_PID" 2>/dev/null; then
        kill -TERM "$APP_PID" 2>/dev/null || true
        wait "$APP_PID" 2>/dev/null || true
    fi
    if [ "$PG_STARTED" = 1 ]; then pg_throwaway_stop || true; fi
    um_stop
    if [ "$KEEP" = 1 ]; then say "kept $T"; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# A systemd user manager of our own (the steps of TESTING.md's usermgr recipe): its own cgroup in every
# hierarchy (a manager started from the root cgroup would take over the machine's whole tree), its own mount
# namespace with a tmpfs on /run/systemd, its own XDG directories under $T/um.
UM_PID=
UM_CG=repo-service-selftest-$$
um_hierarchies() { for h in /sys/fs/cgroup/*/; do [ -f "$h/cgroup.procs" ] && echo "${h%/}"; done; }
um_start() {
    local base=$T/um h
    mkdir -p "$base"/{xdg,cfg/systemd/user,data,home,state,cache}
    chmod 700 "$base/xdg"
    for h in $(um_hierarchies); do mkdir -p "$h/$UM_CG"; done
    if [ -f /sys/fs/cgroup/cpuset/cpuset.cpus ]; then
        cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$UM_CG/cpuset.cpus"
        cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$UM_CG/cpuset.mems"
    fi
    setsid bash -c '
        for h in '"$(um_hierarchies | tr '\n' ' ')"'; do echo $$ > "$h/'"$UM_CG"'/cgroup.procs"; done
        exec unshare -m --propagation private sh -c "
            mount -t tmpfs -o mode=755 tmpfs /run/systemd && mkdir /run/systemd/system &&
            exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME='"$base"'/home USER=root LOGNAME=root \
                XDG_RUNTIME_DIR='"$base"'/xdg XDG_CONFIG_HOME='"$base"'/cfg XDG_DATA_HOME='"$base"'/data \
                XDG_STATE_HOME='"$base"'/state XDG_CACHE_HOME='"$base"'/cache \
                /lib/systemd/systemd --user --log-target=console --log-level=notice"
    ' >"$base/log" 2>&1 </dev/null &
    UM_PID=$!
    export XDG_RUNTIME_DIR=$base/xdg DBUS_SESSION_BUS_ADDRESS=unix:path=$base/xdg/bus
    local i
    for ((i = 0; i < 300; i++)); do
        systemctl --user show -p Version --value >/dev/null 2>&1 && return 0
        kill -0 "$UM_PID" 2>/dev/null || break
        sleep 0.1
    done
    fail "the systemd user manager did not come up (log: $base/log)"
}
um_stop() {
    [ -n "$UM_PID" ] || return 0
    local i p h
    if kill -0 "$UM_PID" 2>/dev/null; then
        kill -TERM "$UM_PID" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do kill -0 "$UM_PID" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$UM_PID" 2>/dev/null || true
    fi
    # anything left in the manager's cgroup (its services), by PID
    for p in $(find "/sys/fs/cgroup/systemd/$UM_CG" -name cgroup.procs -exec cat {} + 2>/dev/null); do
        kill -KILL "$p" 2>/dev/null || true
    done
    sleep 0.1
    for h in $(um_hierarchies); do
        if [ -d "$h/$UM_CG" ]; then find "$h/$UM_CG" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
    done
    UM_PID=
}
# unit_prop PROPERTY -> its value for repo-service.service in our manager
unit_prop() { systemctl --user show repo-service.service -p "$1" --value; }
# wait_unit PROPERTY VALUE: up to 20 s
wait_unit() {
    local i
    for ((i = 0; i < 200; i++)); do [ "$(unit_prop "$1")" = "$2" ] && return 0; sleep 0.1; done
    fail "repo-service.service: $1 is '$(unit_prop "$1")', expected '$2' (log: $T/unit.log)"
}

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# fetch URL OUT -> prints the HTTP status, body in OUT
fetch() {
    "$PY" - "$1" "$2" <<'EOF'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=20) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
except OSError:
    status, body = 0, b""
open(sys.argv[2], "wb").write(body)
print(status)
EOF
}

# json FILE EXPR -> evaluates a Python expression over the parsed document `d`
json() {
    "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); r=eval(sys.argv[2]); print(r if not isinstance(r,(dict,list,bool)) else json.dumps(r))' "$1" "$2"
}

# start_app CONFIG PORT: runs app.py in the background, waits until it listens
start_app() {
    APP_LOG=$T/app-$2.log
    "$PY" "$HERE/app.py" --config "$1" --listen "127.0.0.1:$2" 2>"$APP_LOG" &
    APP_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        if [ "$(fetch "http://127.0.0.1:$2/health" /dev/null)" != 0 ]; then return 0; fi
        kill -0 "$APP_PID" 2>/dev/null || fail "app.py exited at startup"
        sleep 0.1
    done
    fail "app.py did not listen on 127.0.0.1:$2 within 10 s"
}

stop_app() {
    kill -TERM "$APP_PID"
    local rc=0
    wait "$APP_PID" || rc=$?
    APP_PID=
    [ "$rc" = 0 ] || fail "app.py exited $rc on SIGTERM (expected 0)"
    grep -q "stopped" "$APP_LOG" || fail "app.py did not log its stop"
}

expect_eq() { # WHAT ACTUAL EXPECTED
    [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
}

# ------------------------------------------------------------------------------------------ generate
ROOT=$T/srv/app
REPOS=6
COMMITS=400
SNAPSHOTS=2
"$PY" "$HERE/generate.py" --root "$ROOT" --repos $REPOS --commits $COMMITS --snapshots $SNAPSHOTS --seed 4 \
    >"$T/generate.json" || fail "generate.py failed"
"$PY" "$HERE/generate.py" --root "$T/again" --repos $REPOS --commits $COMMITS --snapshots $SNAPSHOTS --seed 4 \
    >/dev/null || fail "generate.py (second run) failed"
DB=$ROOT/db/repo.db
cmp -s <(sqlite3 "$DB" .dump) <(sqlite3 "$T/again/db/repo.db" .dump) || fail "generate.py is not deterministic (database)"
diff -r "$ROOT/.versioned" "$T/again/.versioned" >/dev/null || fail "generate.py is not deterministic (snapshots)"
for g in "$ROOT"/golden-repos/*.git; do
    a=$(git --git-dir "$g" rev-parse HEAD)
    b=$(git --git-dir "$T/again/golden-repos/$(basename "$g")" rev-parse HEAD)
    expect_eq "deterministic head of $(basename "$g")" "$a" "$b"
done
rm -rf "$T/again"
if "$PY" "$HERE/generate.py" --root "$ROOT" --repos 1 --commits 1 >/dev/null 2>"$T/gen-err"; then
    fail "generate.py overwrote an existing installation without --force"
fi
grep -q -- "--force" "$T/gen-err" || fail "generate.py refusal does not mention --force"
expect_eq "repositories rows" "$(sqlite3 "$DB" 'select count(*) from repositories')" $REPOS
expect_eq "commits rows" "$(sqlite3 "$DB" 'select count(*) from commits')" $COMMITS
expect_eq "snapshots rows" "$(sqlite3 "$DB" 'select count(*) from snapshots')" $((REPOS * SNAPSHOTS))
[ "$(sqlite3 "$DB" 'select count(*) from repositories where archived')" -gt 0 ] ||
    fail "no archived repository with this seed (the boolean column would go untested)"
expect_eq "alias files" "$(find "$ROOT/aliases" -name '*.json' | wc -l)" $REPOS
for g in "$ROOT"/golden-repos/*.git; do
    git --git-dir "$g" fsck --no-progress >/dev/null 2>&1 || fail "git fsck $g"
done
# every commit row is a real commit of its repository
for name in $(sqlite3 "$DB" 'select name from repositories'); do
    missing=$(sqlite3 "$DB" "select c.sha from commits c join repositories r on r.id=c.repository_id where r.name='$name'" |
        sed 's/$/^{commit}/' | git --git-dir "$ROOT/golden-repos/$name.git" cat-file --batch-check | grep -c missing || true)
    expect_eq "commit rows of $name missing from git" "$missing" 0
done
pass "generate: $REPOS repos, $COMMITS commits (all real git commits), deterministic, refuses to overwrite"

# ------------------------------------------------------------------------------------------ refused configs
bad=$T/bad.json
"$PY" -c 'import json,sys; c=json.load(open(sys.argv[1])); c["storage_mode"]="mysql"; json.dump(c,open(sys.argv[2],"w"))' \
    "$ROOT/config.json" "$bad"
rc=0
"$PY" "$HERE/app.py" --config "$bad" 2>"$T/bad.err" || rc=$?
expect_eq "exit code for storage_mode mysql" "$rc" 2
grep -q 'storage_mode: unknown value "mysql" (expected one of: sqlite, postgres)' "$T/bad.err" ||
    fail "unclear refusal: $(cat "$T/bad.err")"
echo '{"storage_mode": "sqlite",' >"$bad"
rc=0
"$PY" "$HERE/app.py" --config "$bad" 2>"$T/bad.err" || rc=$?
expect_eq "exit code for a config that is not JSON" "$rc" 2
grep -q "not valid JSON" "$T/bad.err" || fail "unclear refusal: $(cat "$T/bad.err")"
"$PY" -c 'import json,sys; c=json.load(open(sys.argv[1])); c["data_root"]="/nonexistent/app"; json.dump(c,open(sys.argv[2],"w"))' \
    "$ROOT/config.json" "$bad"
rc=0
"$PY" "$HERE/app.py" --config "$bad" --check >"$T/check.json" 2>/dev/null || rc=$?
expect_eq "--check with a missing data_root" "$rc" 1
expect_eq "health status with a missing data_root" "$(json "$T/check.json" 'd["status"]')" unavailable
pass "refused configs: unknown storage_mode and bad JSON exit 2 with a clear message; missing data_root unhealthy"

# ------------------------------------------------------------------------------------------ standalone
PORT=$(free_port)
URL=http://127.0.0.1:$PORT
start_app "$ROOT/config.json" "$PORT"

expect_eq "/health status" "$(fetch "$URL/health" "$T/health.json")" 200
expect_eq "/health body" "$(json "$T/health.json" 'd')" '{"status": "ok", "mode": "sqlite"}'

expect_eq "/stats status" "$(fetch "$URL/stats" "$T/stats-standalone.json")" 200
for table in repositories commits snapshots; do
    expect_eq "/stats $table" "$(json "$T/stats-standalone.json" "d['tables']['$table']")" \
        "$(sqlite3 "$DB" "select count(*) from $table")"
done
expect_eq "/stats tables" "$(json "$T/stats-standalone.json" 'sorted(d["tables"])')" \
    "$("$PY" -c 'import json,sys; print(json.dumps(sys.argv[1:]))' $(sqlite3 "$DB" "select name from sqlite_master where type='table' order by name"))"

expect_eq "/repos status" "$(fetch "$URL/repos" "$T/repos-standalone.json")" 200
expect_eq "/repos count" "$(json "$T/repos-standalone.json" 'd["count"]')" $REPOS
expect_eq "/repos missing" "$(json "$T/repos-standalone.json" 'd["missing"]')" 0
json "$T/repos-standalone.json" '"\n".join("%s %s %s %s" % (r["name"], r["path"], r["exists"], r["head"]) for r in d["repositories"])' |
    while read -r name path exists head; do
        expect_eq "$name exists" "$exists" True
        expect_eq "$name head (git rev-parse)" "$head" "$(git --git-dir "$path" rev-parse HEAD)"
        expect_eq "$name head (newest commit row)" "$head" \
            "$(sqlite3 "$DB" "select c.sha from commits c join repositories r on r.id=c.repository_id where r.name='$name' order by c.id desc limit 1")"
        case $path in "$ROOT"/golden-repos/*) ;; *) fail "$name path $path is not under $ROOT/golden-repos" ;; esac
    done
expect_eq "/repos snapshots all exist" "$(json "$T/repos-standalone.json" 'all(s["exists"] for r in d["repositories"] for s in r["snapshots"]) and sum(len(r["snapshots"]) for r in d["repositories"])')" \
    $((REPOS * SNAPSHOTS))

for q in fix FIX "Initial import" "race in the" "race_in" "100%" "it's"; do
    qs=$("$PY" -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1]))' "$q")
    out=$T/search-standalone-$qs.json
    expect_eq "/search?q=$q status" "$(fetch "$URL/search?q=$qs&limit=1000" "$out")" 200
    like=$(printf '%s' "$q" | sed "s/'/''/g; s/%/\\\\%/g; s/_/\\\\_/g")
    expect_eq "/search?q=$q count" "$(json "$out" 'd["count"]')" \
        "$(sqlite3 "$DB" "select count(*) from commits where message like '%$like%' escape '\\'")"
    expect_eq "/search?q=$q returned" "$(json "$out" 'd["returned"]')" "$(json "$out" 'd["count"]')"
    json "$out" '"\n".join(r["repository"] + " " + r["sha"] for r in d["results"][:25])' | while read -r name sha; do
        [ -n "$name" ] || continue
        git --git-dir "$ROOT/golden-repos/$name.git" cat-file -e "$sha^{commit}" || fail "search result $sha not in $name"
    done
done
expect_eq "/search?q=Initial import" "$(json "$T/search-standalone-Initial%20import.json" 'd["count"]')" $REPOS
[ "$(json "$T/search-standalone-fix.json" 'd["count"]')" -gt 0 ] || fail "/search?q=fix found nothing"
expect_eq "/search is case-insensitive" "$(json "$T/search-standalone-FIX.json" 'd["count"]')" \
    "$(json "$T/search-standalone-fix.json" 'd["count"]')"
[ "$(json "$T/search-standalone-race%20in%20the.json" 'd["count"]')" -gt 0 ] || fail "/search?q=race in the found nothing"
expect_eq "/search: _ is literal, not a wildcard" "$(json "$T/search-standalone-race_in.json" 'd["count"]')" 0
expect_eq "/search default limit" "$(fetch "$URL/search?q=e" "$T/s.json")/$(json "$T/s.json" 'd["returned"]')" 200/50
expect_eq "/search without q" "$(fetch "$URL/search" /dev/null)" 400
expect_eq "unknown endpoint" "$(fetch "$URL/nope" /dev/null)" 404

# a repository that disappears is reported, not hidden
victim=$(json "$T/repos-standalone.json" 'd["repositories"][0]["name"]')
mv "$ROOT/golden-repos/$victim.git" "$T/moved.git"
fetch "$URL/repos" "$T/repos-missing.json" >/dev/null
mv "$T/moved.git" "$ROOT/golden-repos/$victim.git"
expect_eq "/repos missing after moving $victim away" "$(json "$T/repos-missing.json" 'd["missing"]')" 1
expect_eq "/repos $victim exists" "$(json "$T/repos-missing.json" 'd["repositories"][0]["exists"]')" false
stop_app
pass "standalone: /health, /stats = sqlite3, /repos heads = git = database, /search = sqlite3 and git, missing repo reported, clean stop"

# ------------------------------------------------------------------------------------------ systemd
if [ "$SYSTEMD" = 0 ]; then
    say "systemd part skipped (--no-systemd)"
elif [ "$(id -u)" != 0 ] || [ ! -x /lib/systemd/systemd ] || ! command -v unshare >/dev/null; then
    skip_part "systemd part: needs root, /lib/systemd/systemd and unshare"
else
    systemd-analyze verify --man=no "$HERE/repo-service.service" >"$T/verify.out" 2>&1 ||
        fail "systemd-analyze verify: $(cat "$T/verify.out")"
    [ ! -s "$T/verify.out" ] || fail "systemd-analyze verify printed: $(cat "$T/verify.out")"
    um_start
    units=$T/um/cfg/systemd/user
    cp "$HERE/repo-service.service" "$units/"
    mkdir -p "$units/repo-service.service.d"
    PORT=$(free_port)
    URL=http://127.0.0.1:$PORT
    unit_config=$T/unit-config.json
    "$PY" -c 'import json,sys; c=json.load(open(sys.argv[1])); c["listen"]=sys.argv[3]; json.dump(c,open(sys.argv[2],"w"))' \
        "$ROOT/config.json" "$unit_config" "127.0.0.1:$PORT"
    printf '%s\n' "[Service]" "ExecStart=" "ExecStart=$PY $HERE/app.py --config $unit_config" \
        "StandardOutput=append:$T/unit.log" "StandardError=append:$T/unit.log" \
        >"$units/repo-service.service.d/selftest.conf"
    APP_LOG=$T/unit.log
    systemctl --user daemon-reload
    systemctl --user start repo-service.service
    wait_unit ActiveState active
    for ((i = 0; i < 100; i++)); do [ "$(fetch "$URL/health" /dev/null)" = 200 ] && break; sleep 0.1; done
    expect_eq "unit: /health" "$(fetch "$URL/health" "$T/health.json")/$(json "$T/health.json" 'd["mode"]')" 200/sqlite
    first=$(unit_prop MainPID)
    kill -KILL "$first"
    wait_unit NRestarts 1
    wait_unit ActiveState active
    [ "$(unit_prop MainPID)" != "$first" ] || fail "unit: not restarted after SIGKILL"
    for ((i = 0; i < 100; i++)); do [ "$(fetch "$URL/health" /dev/null)" = 200 ] && break; sleep 0.1; done
    expect_eq "unit: /stats after the restart" "$(fetch "$URL/stats" /dev/null)" 200
    systemctl --user stop repo-service.service
    expect_eq "unit: stopped by SIGTERM" "$(unit_prop ActiveState)/$(unit_prop Result)/$(unit_prop ExecMainStatus)" \
        inactive/success/0
    "$PY" -c 'import json,sys; c=json.load(open(sys.argv[1])); c["storage_mode"]="mongo"; json.dump(c,open(sys.argv[1],"w"))' \
        "$unit_config"
    systemctl --user start repo-service.service || true
    wait_unit ActiveState failed
    sleep 3 # RestartSec=2s: a restart would have happened by now
    expect_eq "unit: refused config" "$(unit_prop ActiveState)/$(unit_prop ExecMainStatus)/$(unit_prop NRestarts)" failed/2/0
    grep -q 'refusing to start: .*storage_mode: unknown value "mongo"' "$T/unit.log" ||
        fail "unit: no clear refusal in the log"
    um_stop
    unset XDG_RUNTIME_DIR DBUS_SESSION_BUS_ADDRESS
    APP_LOG=
    pass "systemd: the unit starts and answers, is restarted after SIGKILL, stops cleanly, stays failed (exit 2, no restart) on a refused config"
fi

# ------------------------------------------------------------------------------------------ cluster
if [ "$CLUSTER" = 0 ]; then
    say "cluster part skipped (--no-cluster)"
    exit 0
fi
REPO_TOP=$(cd "$HERE/../.." && pwd)
MUSTER_AGENT=${MUSTER_AGENT:-}
if [ -z "$MUSTER_AGENT" ]; then
    for candidate in "$REPO_TOP/.build/debug/muster-agent" "$REPO_TOP/.build/release/muster-agent"; do
        [ -x "$candidate" ] && { MUSTER_AGENT=$candidate; break; }
    done
fi
skip=
[ -x /usr/lib/postgresql/15/bin/initdb ] || skip="no PostgreSQL 15 server binaries (package postgresql)"
"$PY" -c 'import psycopg2' 2>/dev/null || skip="no psycopg2 for $PY (package python3-psycopg2)"
[ -n "$MUSTER_AGENT" ] && [ -x "$MUSTER_AGENT" ] || skip="no muster-agent binary (swift build, or MUSTER_AGENT=path)"
[ -f "$REPO_TOP/scripts/lib/pg.sh" ] || skip="no scripts/lib/pg.sh"
if [ -n "$skip" ]; then
    skip_part "cluster part: $skip"
    exit 0
fi
# shellcheck source=../../scripts/lib/common.sh
. "$REPO_TOP/scripts/lib/common.sh"
# shellcheck source=../../scripts/lib/pg.sh
. "$REPO_TOP/scripts/lib/pg.sh"
MUSTER_SCRIPT=selftest
pg_throwaway_start
PG_STARTED=1

sha_before=$(sha256sum "$DB" | cut -d' ' -f1)
"$MUSTER_AGENT" migrate-sqlite "$DB" --target "$PG_THROWAWAY_URL" --schema app --json >"$T/migrate.json" 2>"$T/migrate.err" ||
    { cat "$T/migrate.err" "$T/migrate.json" >&2; fail "muster-agent migrate-sqlite failed"; }
expect_eq "SQLite source unchanged by the migration" "$(sha256sum "$DB" | cut -d' ' -f1)" "$sha_before"

# the stand-in shared volume: what rsync would copy, then the alias paths rewritten on the copies
VOL=$T/mnt/shared/repo-service
mkdir -p "$VOL"
cp -a "$ROOT/golden-repos" "$ROOT/.versioned" "$ROOT/aliases" "$VOL/"
sed -i -e "s|\"$ROOT/golden-repos/|\"$VOL/golden-repos/|g" -e "s|\"$ROOT/\\.versioned/|\"$VOL/.versioned/|g" "$VOL"/aliases/*.json
if grep -l "$ROOT" "$VOL"/aliases/*.json >/dev/null; then fail "alias copies still point into $ROOT"; fi
cluster_config=$T/cluster-config.json
"$PY" - "$ROOT/config.json" "$cluster_config" "$PG_THROWAWAY_URL" "$VOL" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(storage_mode="postgres", postgres_url=sys.argv[3], postgres_schema="app", data_root=sys.argv[4],
         aliases_dir=sys.argv[4] + "/aliases")
json.dump(c, open(sys.argv[2], "w"), indent=2)
EOF
# prove the cluster-mode service reads nothing from the standalone tree
mv "$ROOT" "$ROOT.away"

PORT=$(free_port)
URL=http://127.0.0.1:$PORT
start_app "$cluster_config" "$PORT"
expect_eq "cluster /health status" "$(fetch "$URL/health" "$T/health.json")" 200
expect_eq "cluster /health body" "$(json "$T/health.json" 'd')" '{"status": "ok", "mode": "postgres"}'
expect_eq "cluster /stats status" "$(fetch "$URL/stats" "$T/stats-cluster.json")" 200
expect_eq "cluster /stats tables = standalone" "$(json "$T/stats-cluster.json" 'd["tables"]')" "$(json "$T/stats-standalone.json" 'd["tables"]')"
expect_eq "cluster /stats latest = standalone" "$(json "$T/stats-cluster.json" 'd["latest_commit_at"]')" "$(json "$T/stats-standalone.json" 'd["latest_commit_at"]')"
expect_eq "cluster /repos status" "$(fetch "$URL/repos" "$T/repos-cluster.json")" 200
expect_eq "cluster /repos missing" "$(json "$T/repos-cluster.json" 'd["missing"]')" 0
# same answer as standalone once the path prefix is mapped back
"$PY" - "$T/repos-standalone.json" "$T/repos-cluster.json" "$ROOT" "$VOL" <<'EOF' || fail "cluster /repos differs from standalone"
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
text = json.dumps(a, sort_keys=True)
text = text.replace('"' + sys.argv[3] + "/golden-repos/", '"' + sys.argv[4] + "/golden-repos/")
text = text.replace('"' + sys.argv[3] + "/.versioned/", '"' + sys.argv[4] + "/.versioned/")
if json.loads(text) != b:
    sys.exit("differs")
EOF
for out in "$T"/search-standalone-*.json; do
    qs=${out#"$T"/search-standalone-}
    qs=${qs%.json}
    expect_eq "cluster /search?q=$qs status" "$(fetch "$URL/search?q=$qs&limit=1000" "$T/search-cluster.json")" 200
    cmp -s <(json "$out" 'd') <(json "$T/search-cluster.json" 'd') || fail "cluster /search?q=$qs differs from standalone"
done

# PostgreSQL gone: unhealthy, and healthy again when it is back
_pg_as "$PG_BIN/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -m fast -w stop >/dev/null
expect_eq "cluster /health with PostgreSQL stopped" "$(fetch "$URL/health" "$T/health.json")" 503
expect_eq "cluster /repos with PostgreSQL stopped" "$(fetch "$URL/repos" /dev/null)" 503
_pg_as "$PG_BIN/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -l "$PG_THROWAWAY_DIR/server.log" -w -t 60 -o \
    "-p $PG_THROWAWAY_PORT -k $PG_THROWAWAY_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
expect_eq "cluster /health after PostgreSQL restarted" "$(fetch "$URL/health" "$T/health.json")" 200
expect_eq "cluster /stats after PostgreSQL restarted" "$(fetch "$URL/stats" /dev/null)" 200
stop_app
mv "$ROOT.away" "$ROOT"
expect_eq "SQLite source unchanged after everything" "$(sha256sum "$DB" | cut -d' ' -f1)" "$sha_before"
pass "cluster: migrate-sqlite into schema app, aliases rewritten on the volume copy; /health /stats /repos /search equal to standalone; 503 while PostgreSQL is down"

# ------------------------------------------------------------------------------------------ seed.yaml
# The profile itself, against the default generated layout relocated into the temp dir (profile_check.py: a
# stand-in for the workflow's file steps, to prove seed.yaml matches generate.py and app.py).
YAML_PY=
for candidate in /usr/bin/python3 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import yaml' 2>/dev/null; then YAML_PY=$candidate; break; fi
done
if [ -z "$YAML_PY" ]; then
    skip_part "seed.yaml part: no python3 with PyYAML (package python3-yaml)"
else
    psql "$PG_THROWAWAY_URL" -qXc 'CREATE DATABASE repo_service' >/dev/null || fail "cannot create database repo_service"
    "$YAML_PY" "$HERE/profile_check.py" --profile "$HERE/seed.yaml" --base "$T/profile" --port "$(free_port)" \
        --target "${PG_THROWAWAY_URL/\/postgres\?//repo_service?}" --muster-agent "$MUSTER_AGENT" --python "$PY" ||
        fail "seed.yaml does not match the default installation (log: $T/profile/app-profile.log)"
    pass "seed.yaml: shape as SeedProfile.swift; on the default layout every check passes in cluster mode, standalone files untouched"
fi
say "all passed"
