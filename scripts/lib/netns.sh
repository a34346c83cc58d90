# shellcheck shell=bash
# Simulated hosts: one network namespace per node, a veth pair into a bridge on the host.
# Only 10.77.0.0/24 is used, and nothing is forwarded or NATed out of the machine.
#
#   netns_up PREFIX BRIDGE HOST_CIDR FIRST_NODE_IP COUNT
#       e.g. netns_up mdemo mdemobr0 10.77.0.1/24 10.77.0.11 3
#       -> bridge mdemobr0 with 10.77.0.1/24; namespaces mdemo-n1..3 at 10.77.0.11..13 (eth0), lo up.
#   netns_down PREFIX BRIDGE COUNT
#       kills the processes inside each namespace by PID, deletes the veths, the namespaces and the bridge.
#
# Enter a node with `nsenter --net=/run/netns/PREFIX-nK CMD` (never `ip netns exec`: it remounts /sys).

netns_up() {
    local prefix=$1 br=$2 host_cidr=$3 first=$4 n=$5
    local base=${first%.*} start=${first##*.} plen=${host_cidr#*/} i ns veth
    if ! ip link show "$br" >/dev/null 2>&1; then
        ip link add "$br" type bridge
        ip addr add "$host_cidr" dev "$br"
        ip link set "$br" up
    fi
    for ((i = 1; i <= n; i++)); do
        ns=$prefix-n$i
        veth=${prefix}v$i
        [ ${#veth} -le 15 ] || die "interface name too long: $veth"
        ip netns add "$ns"
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$br" up
        ip -n "$ns" addr add "$base.$((start + i - 1))/$plen" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
}

netns_down() {
    local prefix=$1 br=$2 n=$3 i ns pids
    for ((i = 1; i <= n; i++)); do
        ns=$prefix-n$i
        if [ -e "/run/netns/$ns" ]; then
            # By PID, and only the processes inside this namespace.
            pids=$(ip netns pids "$ns" 2>/dev/null || true)
            [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
        fi
        ip link del "${prefix}v$i" 2>/dev/null || true   # deleting one end removes the pair
        ip netns del "$ns" 2>/dev/null || true
    done
    ip link del "$br" 2>/dev/null || true
}
