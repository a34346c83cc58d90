"""Prints one line per node of `muster nodes --json` (stdin): id, state, address and the host facts."""
import json
import sys

for n in json.load(sys.stdin):
    f = n.get("facts") or {}
    print(
        f"{n.get('id')}  {n.get('state'):<11} {n.get('address') or '-':<12} hostname={f.get('hostname')} "
        f"os={f.get('os')!r} kernel={f.get('kernel')} cpus={f.get('cpuCount')} "
        f"memory={int(f.get('memoryBytes') or 0) // 2**20} MiB agent={f.get('agentVersion')}"
    )
