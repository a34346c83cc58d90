#!/usr/bin/env python3
"""Driver of scripts/bench-sync: bare `rsync -a` vs `muster-agent sync`, side by side, on one source tree.

  bench_sync.py AGENT SOURCE WORKDIR [--repeat N] [--no-drop-caches]

Cases, each run for both tools in alternating order:
  first copy   into an empty directory, page cache dropped before each run (cold), once per tool;
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
    bare_dest = os.path.join(args.workdir, "dst-bare")
    muster_dest = os.path.join(args.workdir, "dst-muster")
    results = []

    def record(case, bare_times, muster_times, progress):
        bare, muster = statistics.median(bare_times), statistics.median(muster_times)
        results.append((case, bare, muster, muster / bare, progress))
        print(f"  {case}: rsync -a {bare:.2f} s, muster {muster:.2f} s, ratio {muster / bare:.3f}, "
              f"progress {progress['rate']:.2f}/s (max gap {progress['max_gap']:.2f} s, {progress['updates']} updates), "
              f"muster transferred {progress['transferred']} files", file=sys.stderr, flush=True)

    for path in (bare_dest, muster_dest):
        shutil.rmtree(path, ignore_errors=True)
    print("first copy (cold)", file=sys.stderr, flush=True)
    drop_caches(drop)
    bare, _ = run_bare(args.source, bare_dest)
    drop_caches(drop)
    muster, progress = run_muster(args.agent, args.source, muster_dest)
    record("first copy (cold)", [bare], [muster], progress)

    print("no-op re-run (warm)", file=sys.stderr, flush=True)
    bare_times, muster_times, progresses = [], [], []
    for i in range(args.repeat):
        order = [("bare", bare_dest), ("muster", muster_dest)]
        if i % 2:
            order.reverse()
        for tool, dest in order:
            if tool == "bare":
                bare_times.append(run_bare(args.source, dest)[0])
            else:
                elapsed, progress = run_muster(args.agent, args.source, dest)
                muster_times.append(elapsed)
                progresses.append(progress)
    record("no-op re-run", bare_times, muster_times, min(progresses, key=lambda p: p["rate"]))

    print("1% changed (warm)", file=sys.stderr, flush=True)
    bare_times, muster_times, progresses = [], [], []
    for i in range(args.repeat):
        changed = mutate(args.source, 0.01, 1000 + i)
        order = [("bare", bare_dest), ("muster", muster_dest)]
        if i % 2:
            order.reverse()
        for tool, dest in order:
            if tool == "bare":
                bare_times.append(run_bare(args.source, dest)[0])
            else:
                elapsed, progress = run_muster(args.agent, args.source, dest)
                muster_times.append(elapsed)
                progresses.append(progress)
        print(f"    round {i + 1}: {changed} files changed", file=sys.stderr, flush=True)
    record("1% changed", bare_times, muster_times, min(progresses, key=lambda p: p["rate"]))

    print()
    print(f"{'case':<20} {'rsync -a':>10} {'muster':>10} {'ratio':>7} {'target':>8} {'progress/s':>11} {'max gap':>8}")
    for case, bare, muster, ratio, progress in results:
        verdict = "ok" if ratio <= 1.05 else "MISSED"
        print(f"{case:<20} {bare:>9.2f}s {muster:>9.2f}s {ratio:>7.3f} {verdict:>8} "
              f"{progress['rate']:>11.2f} {progress['max_gap']:>7.2f}s")
    print("(ratio = muster / rsync -a, target ≤ 1.05; progress/s and max gap from the slowest-updating muster run "
          "of the case, first update measured from process start)")


if __name__ == "__main__":
    main()
