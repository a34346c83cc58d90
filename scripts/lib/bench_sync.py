#!/usr/bin/env python3
"""Driver of scripts/bench-sync: bare `rsync -a` vs `muster-agent sync`, side by side, on one source tree.

  bench_sync.py AGENT SOURCE WORKDIR [--repeat N] [--first-copies N] [--no-drop-caches] [--task MUSTER STATE_DIR NODE_ID]

Cases, each run for both tools in alternating order:
  first copy   into an empty directory, page cache dropped before each run (cold), once per tool
               (median of --first-copies rounds, order rotated each round);
Tools: bare `rsync -a`, rsync with muster's argv (`-aHAX --numeric-ids … --stats`, output discarded), muster.
  no-op re-run nothing changed, warm, median of N;
  1% changed   1% of the text files rewritten (new content, new mtime) before each pair, median of N.
muster-agent sync keeps its change journal in WORKDIR/agent-state (the first copy writes it, re-runs use it);
each muster run's mode (full, journal-partial, journal-unchanged) and its rsync lanes (a first copy into an empty
directory runs several rsync processes at once) are printed as it finishes.
muster runs with --json; every NDJSON line is time-stamped on arrival to measure the progress rate
(updates per second and the longest gap between updates, from the first update to the summary).
With --task, a fourth tool: `muster sync … --node NODE_ID --json`, i.e. a syncTree task through the coordinator
to the agent (same host), progress events timed the same way.
Prints a table; asserts nothing.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time


def drop_caches(enabled):
    if not enabled:
        return
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def run_bare(source, dest):
    start = time.monotonic()
    subprocess.run(["rsync", "-a", source + "/", dest + "/"], check=True)
    return time.monotonic() - start, None


# The argv muster-agent sync runs (Sources/Agent/Sync/Rsync.swift), for telling muster's own overhead apart
# from the cost of the options the issue mandates (-HAX reads ACLs and xattrs of every file on both sides).
SAME_ARGV = ["-aHAX", "--numeric-ids", "--partial", "--info=progress2", "--no-inc-recursive", "--no-h", "--stats"]


def run_same_argv(source, dest):
    start = time.monotonic()
    subprocess.run(["rsync", *SAME_ARGV, source + "/", dest + "/"], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start, None


def run_muster(agent, source, dest, state_dir):
    start = time.monotonic()
    proc = subprocess.Popen([agent, "sync", source, dest, "--json", "--state-dir", state_dir],
                            stdout=subprocess.PIPE, text=True, bufsize=1)
    stamps, events, summary = [], [], None
    for line in proc.stdout:
        now = time.monotonic()
        event = json.loads(line)
        events.append((now, event["event"]))
        if event["event"] == "progress":
            stamps.append(now)
        elif event["event"] == "summary":
            summary = event["report"]
            stamps.append(now)
    code = proc.wait()
    elapsed = time.monotonic() - start
    if code != 0 or summary is None or summary["severity"] == "failure":
        sys.exit(f"muster-agent sync failed with exit {code}: {summary and summary['message']}")
    return elapsed, {
        **gap_figures(start, stamps, events),
        "rate": (len(stamps) - 1) / elapsed if elapsed > 0 else float("nan"),
        "transferred": summary["stats"].get("transferredFiles"),
        "mode": summary.get("mode", "?"),
        "lanes": summary.get("lanes") or 1,
        "changed": (summary.get("journal") or {}).get("changedPaths"),
    }


def gap_figures(start, stamps, events):
    """Update count and the longest gap between updates (from the process start), with where it fell: the seconds
    since the start at which it ended and the last event of any kind before it ended."""
    gaps = [(b - a, b) for a, b in zip([start] + stamps, stamps)]
    if not gaps:
        return {"updates": 0, "max_gap": float("nan"), "gap_at": None, "gap_after": None}
    gap, end = max(gaps)
    before = [name for when, name in events if when < end]
    return {"updates": len(stamps) - 1, "max_gap": gap, "gap_at": end - start,
            "gap_after": before[-1] if before else "process start"}


def run_task(task, source, dest):
    muster, state_dir, node = task
    start = time.monotonic()
    proc = subprocess.Popen([muster, "sync", source, dest, "--node", node, "--json", "--state-dir", state_dir],
                            stdout=subprocess.PIPE, text=True, bufsize=1)
    stamps, events, result = [], [], None
    for line in proc.stdout:
        now = time.monotonic()
        event = json.loads(line)
        events.append((now, event["event"]))
        if event["event"] == "progress":
            stamps.append(now)
        elif event["event"] == "result":
            result = event["task"]
            stamps.append(now)
    code = proc.wait()
    elapsed = time.monotonic() - start
    if code != 0 or result is None or result["state"] != "succeeded":
        sys.exit(f"muster sync failed with exit {code}: {result and result.get('error')}")
    return elapsed, {
        **gap_figures(start, stamps, events),
        "rate": (len(stamps) - 1) / elapsed if elapsed > 0 else float("nan"),
        "transferred": result["result"]["stats"].get("transferredFiles"),
        "mode": result["result"].get("mode", "?"),
        "lanes": result["result"].get("lanes") or 1,
        "changed": (result["result"].get("journal") or {}).get("changedPaths"),
    }


def mutate(source, fraction, seed):
    rng = random.Random(seed)
    files = []
    for parent, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        files += [os.path.join(parent, n) for n in sorted(names) if not n.endswith(".bin")]
    chosen = rng.sample(files, max(1, int(len(files) * fraction)))
    for path in chosen:
        with open(path, "a") as f:
            f.write(f"// bench change {seed}\n")
    return len(chosen)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("agent")
    parser.add_argument("source")
    parser.add_argument("workdir")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-drop-caches", action="store_true")
    parser.add_argument("--first-copies", type=int, default=1)
    parser.add_argument("--task", nargs=3, metavar=("MUSTER", "STATE_DIR", "NODE_ID"))
    args = parser.parse_args()
    drop = not args.no_drop_caches
    tools = ["bare", "same", "muster"] + (["task"] if args.task else [])
    dests = {tool: os.path.join(args.workdir, f"dst-{tool}") for tool in tools}
    runners = {
        "bare": lambda dest: run_bare(args.source, dest),
        "same": lambda dest: run_same_argv(args.source, dest),
        "muster": lambda dest: run_muster(args.agent, args.source, dest, os.path.join(args.workdir, "agent-state")),
        "task": lambda dest: run_task(args.task, args.source, dest),
    }
    results = []

    def round_robin(times, progresses, index, cold):
        order = tools[index % len(tools):] + tools[:index % len(tools)]
        for tool in order:
            if cold:
                drop_caches(drop)
            elapsed, progress = runners[tool](dests[tool])
            times[tool].append(elapsed)
            if progress:
                print(f"    {tool}: {elapsed:.2f} s, mode {progress['mode']}, {progress['lanes']} rsync lane(s), "
                      f"{progress['changed']} changed paths, "
                      f"{progress['transferred']} files transferred; longest progress gap "
                      f"{progress['max_gap']:.2f} s, ending {progress['gap_at']:.2f} s after the start, "
                      f"after {progress['gap_after']}", file=sys.stderr, flush=True)
            if progress:
                progresses.setdefault(tool, []).append(progress)

    def record(case, times, progresses):
        med = {tool: statistics.median(values) for tool, values in times.items()}
        progress = {tool: min(values, key=lambda p: p["rate"]) for tool, values in progresses.items()}
        results.append((case, med, progress))
        line = f"  {case}: rsync -a {med['bare']:.2f} s, rsync same argv {med['same']:.2f} s, muster {med['muster']:.2f} s"
        if "task" in med:
            line += f", muster sync (task) {med['task']:.2f} s"
        for tool, p in progress.items():
            line += (f"; {tool} progress {p['rate']:.2f}/s (max gap {p['max_gap']:.2f} s, {p['updates']} updates, "
                     f"{p['transferred']} files transferred)")
        print(line, file=sys.stderr, flush=True)

    for path in dests.values():
        shutil.rmtree(path, ignore_errors=True)
    print("first copy (cold)", file=sys.stderr, flush=True)
    times, progresses = {t: [] for t in dests}, {}
    earlier = []
    for i in range(args.first_copies):
        if i > 0:
            # Another round into new, empty directories; the order rotates so no tool always runs after the
            # others' writeback. muster's journal is kept: its destination is a new directory, so it copies in
            # full. The earlier round's copies are moved aside, not deleted, until the end: on ext4 without a
            # journal (these machines' root filesystem) every create scans past the inodes freed in the last
            # 60-360 s (fs/ext4/ialloc.c, recently_deleted), so deleting 3 x 100k files here made whichever tool
            # ran next pay for it (cold copies varied by 25 % from that alone).
            for tool, path in dests.items():
                aside = f"{path}.round{i}"
                os.rename(path, aside)
                earlier.append(aside)
        round_robin(times, progresses, i, cold=True)
    record("first copy (cold)", times, progresses)

    print("no-op re-run (warm)", file=sys.stderr, flush=True)
    times, progresses = {t: [] for t in dests}, {}
    for i in range(args.repeat):
        round_robin(times, progresses, i, cold=False)
    record("no-op re-run", times, progresses)

    print("1% changed (warm)", file=sys.stderr, flush=True)
    times, progresses = {t: [] for t in dests}, {}
    for i in range(args.repeat):
        changed = mutate(args.source, 0.01, 1000 + i)
        round_robin(times, progresses, i, cold=False)
        print(f"    round {i + 1}: {changed} files changed", file=sys.stderr, flush=True)
    record("1% changed", times, progresses)

    for path in earlier:
        shutil.rmtree(path, ignore_errors=True)

    print()
    task = "task" in tools
    print(f"{'case':<18} {'rsync -a':>9} {'rsync argv':>10} {'muster':>8} {'m/rsync-a':>10} {'m/argv':>7} "
          f"{'progress/s':>10} {'max gap':>8}"
          + (f" {'task':>8} {'t/rsync-a':>10} {'t/argv':>7} {'t prog/s':>9} {'t gap':>7}" if task else ""))
    for case, med, progress in results:
        line = (f"{case:<18} {med['bare']:>8.2f}s {med['same']:>9.2f}s {med['muster']:>7.2f}s "
                f"{med['muster'] / med['bare']:>10.3f} {med['muster'] / med['same']:>7.3f} "
                f"{progress['muster']['rate']:>10.2f} {progress['muster']['max_gap']:>7.2f}s")
        if task:
            line += (f" {med['task']:>7.2f}s {med['task'] / med['bare']:>10.3f} {med['task'] / med['same']:>7.3f}"
                     f" {progress['task']['rate']:>9.2f}"
                     f" {progress['task']['max_gap']:>6.2f}s")
        print(line)
    print("(medians; m/rsync-a = muster / bare rsync -a, m/argv = muster / rsync with muster's argv; target ≤ 1.05."
          " progress/s and max gap: the slowest-updating run of the case, gaps measured from process start;"
          " task = `muster sync` through the coordinator, t/rsync-a and t/argv = task / bare rsync -a and / rsync with"
          " muster's argv)")


if __name__ == "__main__":
    main()
