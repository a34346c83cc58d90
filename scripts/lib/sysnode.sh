# shellcheck shell=bash
# A systemd *system* manager as PID 1 of new PID+mount+UTS namespaces ("one simulated host"), optionally inside
# a network namespace — the scripts' port of ../shared/recipes/sysmgr.sh (TESTING.md), as the tests' SystemNode.
#
#   sysnode_start NAME [NETNS] [HELPERS]
#                               -> boots it; units come only from $SYSNODE_ROOT/NAME/units (SYSTEMD_UNIT_PATH);
#                                  HELPERS: a directory whose files (e.g. the mount.nfs4 stand-in of TESTING.md)
#                                  are laid over /usr/sbin in the node's mount namespace only (read-only overlay)
#   sysnode_exec NAME CMD...    -> runs CMD inside the node (its systemctl, journalctl…)
#   sysnode_bus NAME            -> the node's system bus address, for a host process (the agent) to drive it:
#                                  DBUS_SYSTEM_BUS_ADDRESS=$(sysnode_bus NAME) muster-agent … --systemd system
#   sysnode_units NAME          -> its unit directory (write units there, then `sysnode_exec NAME systemctl daemon-reload`)
#   sysnode_stop NAME           -> poweroff, SIGKILL fallback, cgroups removed
# The node sees the host's filesystem (except /run, /etc/hostname, /etc/machine-id) and, without NETNS, its network.

SYSNODE_ROOT=${SYSNODE_ROOT:-/tmp/muster-sysnodes}

_sysnode_hier() { for h in /sys/fs/cgroup/*/; do [ -f "$h/cgroup.procs" ] && echo "${h%/}"; done; }
_sysnode_inner() { pgrep -P "$(cat "$SYSNODE_ROOT/$1/pid")" | head -1; }

sysnode_units() { echo "$SYSNODE_ROOT/$1/units"; }
sysnode_bus() { echo "unix:path=$SYSNODE_ROOT/$1/run/dbus/system_bus_socket"; }

sysnode_start() {
    local name=$1 netns=${2:-} helpers=${3:-} base=$SYSNODE_ROOT/$1 cg="muster-sysnode-$1" t s h sp state pre="" over=""
    mkdir -p "$base"/{units,run,log}
    for t in sysinit basic shutdown local-fs local-fs-pre swap umount sockets timers paths slices network \
        network-pre network-online final exit poweroff halt emergency multi-user; do
        cp -n "/lib/systemd/system/$t.target" "$base/units/"
    done
    for s in systemd-poweroff.service systemd-halt.service systemd-exit.service dbus.socket dbus.service; do
        cp -n "/lib/systemd/system/$s" "$base/units/"
    done
    [ -e "$base/units/node.target" ] || printf '[Unit]\nDescription=muster simulated node\nRequires=basic.target\nWants=dbus.socket\nAfter=basic.target\nAllowIsolate=yes\n' >"$base/units/node.target"
    echo "$name" >"$base/hostname"
    [ -s "$base/machine-id" ] || systemd-id128 new >"$base/machine-id"
    for h in $(_sysnode_hier); do mkdir -p "$h/$cg"; done
    if [ -f /sys/fs/cgroup/cpuset/cpuset.cpus ]; then
        cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$cg/cpuset.cpus"
        cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$cg/cpuset.mems"
    fi
    [ -n "$netns" ] && pre="nsenter --net=/run/netns/$netns"
    [ -n "$helpers" ] && over="mount -t overlay overlay -o ro,lowerdir=$helpers:/usr/sbin /usr/sbin &&"
    setsid bash -c '
      for h in '"$(_sysnode_hier | tr '\n' ' ')"'; do echo $$ > "$h/'"$cg"'/cgroup.procs"; done
      exec '"$pre"' unshare --pid --fork --mount --mount-proc --uts --propagation private sh -c "
        mount --bind '"$base"'/run /run &&
        mount --bind '"$base"'/hostname /etc/hostname && mount --bind '"$base"'/machine-id /etc/machine-id &&
        '"$over"'
        exec env -i container=muster-node SYSTEMD_UNIT_PATH='"$base"'/units \
          /lib/systemd/systemd --system --unit=node.target --log-target=console --log-level=notice"
    ' >"$base/log/console" 2>&1 </dev/null &
    echo $! >"$base/pid"
    echo "$netns" >"$base/netns"
    for _ in $(seq 300); do
        sp=$(_sysnode_inner "$name" || true)
        if [ -n "$sp" ]; then
            state=$(nsenter -t "$sp" -m -p systemctl is-system-running 2>/dev/null || true)
            case $state in running | degraded) break ;; esac
        fi
        sleep 0.05
    done
    case ${state:-} in
    running | degraded) log "node $name: systemd is PID 1 (host pid $sp)${netns:+ in $netns}" ;;
    *) tail -n 20 "$base/log/console" >&2; die "node $name did not boot (see $base/log/console)" ;;
    esac
    wait_until 20 "the system bus of node $name" test -S "$base/run/dbus/system_bus_socket" ||
        sysnode_exec "$name" systemctl start dbus.socket
}

sysnode_exec() {
    local name=$1 sp netns
    shift
    sp=$(_sysnode_inner "$name")
    netns=$(cat "$SYSNODE_ROOT/$name/netns")
    if [ -n "$netns" ]; then nsenter -t "$sp" -m -p -u -n "$@"; else nsenter -t "$sp" -m -p -u "$@"; fi
}

sysnode_stop() {
    local name=$1 base=$SYSNODE_ROOT/$1 cg="muster-sysnode-$1" pid sp h
    pid=$(cat "$base/pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        sp=$(_sysnode_inner "$name" || true)
        [ -n "$sp" ] && nsenter -t "$sp" -m -p systemctl poweroff --no-block >/dev/null 2>&1 || true
        for _ in $(seq 200); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null && [ -n "$sp" ]; then
            kill -KILL "$sp" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    for h in $(_sysnode_hier); do
        [ -d "$h/$cg" ] && find "$h/$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    rm -f "$base/pid"
}
