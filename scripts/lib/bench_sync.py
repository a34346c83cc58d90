#!/usr/bin/env python3
"""Driver of scripts/bench-sync: bare `rsync -a` vs `muster-agent sync`, side by side, on one source tree.

  bench_sync.py AGENT SOURCE WORKDIR [--repeat N] [--no-drop-caches]

Cases, each run for both tools in alternating order:
  first copy   into an empty directory, page cache dropped before each run (cold), once per tool;
Tools: bare `rsync -a`, rsync with muster's argv (`-aHAX --numeric-ids … --stats`, output discarded), muster.
  no-op re-run nothing changed, warm, median of N;
  1% changed   1% of the text files rewritten (new content, new mtime) before each pair, median of N.
muster runs with --json; every NDJSON line is time-stamped on arrival to measure the progress rate
(updates per second and the longest gap between updates, from the first update to the summary).
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


def run_muster(agent, source, dest):
    start = time.monotonic()
    proc = subprocess.Popen([agent, "sync", source, dest, "--json"], stdout=subprocess.PIPE, text=True, bufsize=1)
    stamps, summary = [], None
    for line in proc.stdout:
        now = time.monotonic()
        event = json.loads(line)
        if event["event"] == "progress":
            stamps.append(now)
        elif event["event"] == "summary":
            summary = event["report"]
            stamps.append(now)
    code = proc.wait()
    elapsed = time.monotonic() - start
    if code != 0 or summary is None or summary["severity"] == "failure":
        sys.exit(f"muster-agent sync failed with exit {code}: {summary and summary['message']}")
    gaps = [b - a for a, b in zip([start] + stamps, stamps)]
    return elapsed, {
        "updates": len(stamps) - 1,
        "max_gap": max(gaps) if gaps else float("nan"),
        "rate": (len(stamps) - 1) / elapsed if elapsed > 0 else float("nan"),
        "transferred": summary["stats"].get("transferredFiles"),
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
    args = parser.parse_args()
    drop = not args.no_drop_caches
    dests = {tool: os.path.join(args.workdir, f"dst-{tool}") for tool in ("bare", "same", "muster")}
    runners = {
        "bare": lambda dest: run_bare(args.source, dest),
        "same": lambda dest: run_same_argv(args.source, dest),
        "muster": lambda dest: run_muster(args.agent, args.source, dest),
    }
    results = []

    def round_robin(times, progresses, index, cold):
        order = ["bare", "same", "muster"]
        order = order[index % 3:] + order[:index % 3]
        for tool in order:
            if cold:
                drop_caches(drop)
            elapsed, progress = runners[tool](dests[tool])
            times[tool].append(elapsed)
            if progress:
                progresses.append(progress)

    def record(case, times, progresses):
        med = {tool: statistics.median(values) for tool, values in times.items()}
        progress = min(progresses, key=lambda p: p["rate"])
        results.append((case, med, progress))
        print(f"  {case}: rsync -a {med['bare']:.2f} s, rsync same argv {med['same']:.2f} s, muster {med['muster']:.2f} s; "
              f"progress {progress['rate']:.2f}/s (max gap {progress['max_gap']:.2f} s, {progress['updates']} updates), "
              f"muster transferred {progress['transferred']} files", file=sys.stderr, flush=True)

    for path in dests.values():
        shutil.rmtree(path, ignore_errors=True)
    print("first copy (cold)", file=sys.stderr, flush=True)
    times, progresses = {t: [] for t in dests}, []
    round_robin(times, progresses, 0, cold=True)
    record("first copy (cold)", times, progresses)

    print("no-op re-run (warm)", file=sys.stderr, flush=True)
    times, progresses = {t: [] for t in dests}, []
    for i in range(args.repeat):
        round_robin(times, progresses, i, cold=False)
    record("no-op re-run", times, progresses)

    print("1% changed (warm)", file=sys.stderr, flush=True)
    times, progresses = {t: [] for t in dests}, []
    for i in range(args.repeat):
        changed = mutate(args.source, 0.01, 1000 + i)
        round_robin(times, progresses, i, cold=False)
        print(f"    round {i + 1}: {changed} files changed", file=sys.stderr, flush=True)
    record("1% changed", times, progresses)

    print()
    print(f"{'case':<18} {'rsync -a':>9} {'rsync argv':>10} {'muster':>8} {'m/rsync-a':>10} {'m/argv':>7} "
          f"{'progress/s':>10} {'max gap':>8}")
    for case, med, progress in results:
        print(f"{case:<18} {med['bare']:>8.2f}s {med['same']:>9.2f}s {med['muster']:>7.2f}s "
              f"{med['muster'] / med['bare']:>10.3f} {med['muster'] / med['same']:>7.3f} "
              f"{progress['rate']:>10.2f} {progress['max_gap']:>7.2f}s")
    print("(medians; m/rsync-a = muster / bare rsync -a, m/argv = muster / rsync with muster's argv; target ≤ 1.05."
          " progress/s and max gap: the slowest-updating muster run of the case, gaps measured from process start)")


if __name__ == "__main__":
    main()
