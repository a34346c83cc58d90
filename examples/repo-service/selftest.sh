#!/usr/bin/env bash
# selftest.sh: end-to-end test of the example service on this machine.
#
#   examples/repo-service/selftest.sh [--no-cluster] [--keep]
#
# Standalone part (needs python3, sqlite3, git): generates a small installation in a temp dir, checks the
# generator is deterministic, runs app.py on a free port and checks /health, /repos (every repository exists,
# every head resolves and equals `git rev-parse HEAD` and the newest commit in the database), /search (against
# sqlite3 and git), /stats (against sqlite3), a missing repository reported as missing, a refused config; stops it.
#
# Cluster part (skipped with a message unless PostgreSQL 15 server binaries, psycopg2 and a built
# muster-agent are there; MUSTER_AGENT=path overrides the binary): a throwaway PostgreSQL, `muster-agent
# migrate-sqlite` into schema "app", the directories copied to a stand-in shared volume, alias paths rewritten
# with sed, the standalone tree moved away, config switched to postgres; the same endpoints must give the same
# answers; /health turns 503 when PostgreSQL stops.
#
# Exits non-zero on the first failure. Cleans up what it started (by PID) and its temp dir (unless --keep).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-/usr/bin/python3}
CLUSTER=1
KEEP=0
for arg in "$@"; do
    case $arg in
        --no-cluster) CLUSTER=0 ;;
        --keep) KEEP=1 ;;
        *) echo "usage: $0 [--no-cluster] [--keep]" >&2; exit 2 ;;
    esac
done

say() { printf 'selftest: %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; [ -n "${APP_LOG:-}" ] && [ -f "$APP_LOG" ] && tail -n 20 "$APP_LOG" >&2; exit 1; }
pass() { say "ok   $*"; }

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
    if [ "$KEEP" = 1 ]; then say "kept $T"; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT

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

for q in fix "Initial import" "race in the" "100%" "under_score"; do
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
    say "SKIPPED cluster part: $skip"
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
for candidate in python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import yaml' 2>/dev/null; then YAML_PY=$candidate; break; fi
done
if [ -z "$YAML_PY" ]; then
    say "SKIPPED seed.yaml part: no python3 with PyYAML (package python3-yaml)"
else
    psql "$PG_THROWAWAY_URL" -qXc 'CREATE DATABASE repo_service' >/dev/null || fail "cannot create database repo_service"
    "$YAML_PY" "$HERE/profile_check.py" --profile "$HERE/seed.yaml" --base "$T/profile" --port "$(free_port)" \
        --target "${PG_THROWAWAY_URL/\/postgres\?//repo_service?}" --muster-agent "$MUSTER_AGENT" --python "$PY" ||
        fail "seed.yaml does not match the default installation (log: $T/profile/app-profile.log)"
    pass "seed.yaml: shape as SeedProfile.swift; on the default layout every check passes in cluster mode, standalone files untouched"
fi
say "all passed"
