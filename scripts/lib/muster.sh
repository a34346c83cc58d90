# shellcheck shell=bash
# Driving the built daemons from scripts: build, start a coordinator, tokens, node states.
# Needs common.sh. Flags used here are documented in docs/cli.md.

MUSTER_BIN_DIR=${MUSTER_BIN_DIR:-}

# build_muster: debug build of both executables; sets MUSTER_BIN_DIR, MUSTER, MUSTER_AGENT.
build_muster() {
    log "swift build (debug)"
    (cd "$MUSTER_ROOT" && swift build -j "$(nproc)" --product muster >&2 && swift build -j "$(nproc)" --product muster-agent >&2)
    MUSTER_BIN_DIR=$(cd "$MUSTER_ROOT" && swift build --show-bin-path)
    MUSTER=$MUSTER_BIN_DIR/muster
    MUSTER_AGENT=$MUSTER_BIN_DIR/muster-agent
    [ -x "$MUSTER" ] && [ -x "$MUSTER_AGENT" ] || die "build did not produce $MUSTER and $MUSTER_AGENT"
    export MUSTER_BIN_DIR MUSTER MUSTER_AGENT
}

# use_built_muster: like build_muster without building (MUSTER_BIN_DIR or `swift build --show-bin-path`).
use_built_muster() {
    [ -n "$MUSTER_BIN_DIR" ] || MUSTER_BIN_DIR=$(cd "$MUSTER_ROOT" && swift build --show-bin-path)
    MUSTER=$MUSTER_BIN_DIR/muster
    MUSTER_AGENT=$MUSTER_BIN_DIR/muster-agent
    export MUSTER_BIN_DIR MUSTER MUSTER_AGENT
}

# port_in_use HOST PORT: true if something listens there (or on the wildcard address).
port_in_use() {
    ss -Hltn "sport = :$2" 2>/dev/null | awk '{print $4}' | grep -Eq "^(\\*|0\\.0\\.0\\.0|\\[::\\]|$1):$2\$"
}

# start_coordinator STATE_DIR LOG LISTEN_HOST:PORT [EXTRA ARGS...]
#   Starts `muster serve` in its own session (Ctrl-C on the terminal does not reach it) and waits for
#   STATE_DIR/admin.json, which `muster serve` writes once it is ready. Sets COORD_PID, COORD_AGENT_ADDR.
start_coordinator() {
    local dir=$1 logf=$2 listen=$3; shift 3
    mkdir -p "$dir"
    rm -f "$dir/admin.json"
    setsid "$MUSTER" serve --state-dir "$dir" --listen "$listen" --admin-listen 127.0.0.1:0 \
        --advertise "${listen%:*}" "$@" >>"$logf" 2>&1 </dev/null &
    COORD_PID=$!
    local i
    for ((i = 0; i < 600; i++)); do
        if [ -s "$dir/admin.json" ]; then break; fi
        if ! kill -0 "$COORD_PID" 2>/dev/null; then
            tail -n 40 "$logf" >&2
            die "muster serve exited before it was ready (log: $logf)"
        fi
        sleep 0.1
    done
    [ -s "$dir/admin.json" ] || { tail -n 40 "$logf" >&2; die "muster serve not ready after 60 s (log: $logf)"; }
    COORD_AGENT_ADDR=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["agentAddress"])' "$dir/admin.json")
    export COORD_PID COORD_AGENT_ADDR
}

# create_token STATE_DIR USES -> prints the token
create_token() {
    "$MUSTER" token create --state-dir "$1" --uses "$2" --quiet
}

# nodes_json STATE_DIR -> `muster nodes --json`
nodes_json() {
    "$MUSTER" nodes --json --state-dir "$1"
}

# count_nodes_in_state STATE_DIR STATE -> number of nodes in that state
count_nodes_in_state() {
    nodes_json "$1" | python3 -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin) if n.get("state")==sys.argv[1]))' "$2"
}

# node_field_by_address STATE_DIR ADDRESS FIELD -> FIELD (e.g. id, state) of the node whose address is ADDRESS
node_field_by_address() {
    nodes_json "$1" | python3 -c '
import json, sys
addr, field = sys.argv[1], sys.argv[2]
for n in json.load(sys.stdin):
    a = str(n.get("address") or "")
    host = a[1:a.index("]")] if a.startswith("[") else (a.rsplit(":", 1)[0] if a.count(":") == 1 else a)
    if host == addr:
        print(n.get(field, "")); break
' "$2" "$3"
}

# node_field_by_id STATE_DIR NODE_ID FIELD -> FIELD of that node
node_field_by_id() {
    nodes_json "$1" | python3 -c '
import json, sys
for n in json.load(sys.stdin):
    if str(n.get("id", "")).lower() == sys.argv[1].lower():
        print(n.get(sys.argv[2], "")); break
' "$2" "$3"
}

# node_state_is STATE_DIR NODE_ID STATE: true if that node is in that state
node_state_is() {
    [ "$(node_field_by_id "$1" "$2" state 2>/dev/null)" = "$3" ]
}

# agent_node_id AGENT_STATE_DIR -> the node id the agent wrote at join
agent_node_id() {
    tr -d '[:space:]' <"$1/identity/node-id"
}

# all_ready STATE_DIR N: true if exactly N nodes are ready
all_ready() {
    [ "$(count_nodes_in_state "$1" ready 2>/dev/null)" = "$2" ]
}

# stop_coordinator STATE_DIR PID: SIGTERM (graceful: stops the embedded PostgreSQL), SIGKILL after 20 s, then
# makes sure no embedded postgres of this state dir survives (by the PID in its postmaster.pid).
stop_coordinator() {
    local dir=$1 pid=$2 pm ppid
    kill_pid "$pid" 20
    while IFS= read -r pm; do
        ppid=$(head -n 1 "$pm" 2>/dev/null || true)
        if [ -n "$ppid" ] && kill -0 "$ppid" 2>/dev/null; then
            log "embedded PostgreSQL (pid $ppid) still running after the coordinator stopped; stopping it"
            kill -INT "$ppid" 2>/dev/null || true
            local i
            for ((i = 0; i < 100; i++)); do kill -0 "$ppid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$ppid" 2>/dev/null || true
        fi
    done < <(find "$dir" -name postmaster.pid 2>/dev/null)
}
