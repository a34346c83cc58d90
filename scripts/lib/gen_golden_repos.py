#!/usr/bin/env python3
"""Deterministic "golden repos" for scripts/bench-sync.

  gen_golden_repos.py DEST [--scale S]

20 git repositories. Each: ~(3000..5000)*S small source-like text files (150 B .. 24 KB, most under 4 KB) in
nested directories, 0-4 incompressible binaries of 10-50 MB * S under assets/, three commits (initial import,
then ~5% of the text files rewritten plus a few added, then again with one binary replaced), fixed dates so the
commit ids are stable. 14 repositories are packed with `git gc`, 6 keep loose objects. At scale 1: about
100k files in working trees and .git, about 2 GB.
"""
import argparse
import os
import random
import subprocess
import sys

VOCAB = ("actor async await break case catch class continue default defer do else enum extension fallthrough "
         "for func guard if import in init let nil protocol return self static struct switch throw try var while "
         "node agent task volume module sync rsync golden snapshot heartbeat coordinator state").split()
SUFFIXES = (".swift", ".swift", ".swift", ".swift", ".md", ".json", ".yaml", ".txt", ".c", ".h", ".py", ".sh")
TOPS = ("Sources", "Tests", "lib", "pkg", "cmd", "internal", "docs")
# Binary sizes in MB per repository (empty: none). Same shape as the reference set: 10 of 20 repos carry some.
BINARIES = ([40, 25], [], [12], [50, 10, 30, 20], [], [15], [], [45, 35], [], [10],
            [22, 48], [], [30], [], [18, 26, 12], [], [50], [], [33, 14, 40], [])
DATES = ("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z")


def text(rng, size):
    lines, total = [], 0
    while total < size:
        line = "    " * rng.randrange(4) + " ".join(rng.choice(VOCAB) for _ in range(rng.randrange(2, 13))) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines)[:size].encode()


def small_size(rng):
    return int(min(24_000, 150 + rng.expovariate(1 / 2500)))


def put(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def git(repo, *args, date=None):
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    subprocess.run(["git", "-C", repo, *args], check=True, env=env, stdout=subprocess.DEVNULL)


def text_files(repo):
    out = []
    for parent, dirs, files in os.walk(repo):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        out += [os.path.join(parent, f) for f in sorted(files) if not f.endswith(".bin")]
    return out


def build(dest, index, scale):
    repo = os.path.join(dest, f"golden-{index:02d}")
    rng = random.Random(7000 + index)
    git(repo if os.path.isdir(repo) else dest, "init", "-q", "-b", "main", repo)
    git(repo, "config", "core.bigFileThreshold", "1m")
    git(repo, "config", "gc.auto", "0")
    nfiles = max(10, int((3000 + (index * 131) % 2000) * scale))
    dirs = ["/".join(f"{rng.choice(TOPS)}{rng.randrange(30)}" for _ in range(rng.randrange(1, 4)))
            for _ in range(max(1, nfiles // 25))]
    for n in range(nfiles):
        put(os.path.join(repo, rng.choice(dirs), f"file{n:05d}{rng.choice(SUFFIXES)}"), text(rng, small_size(rng)))
    for j, mb in enumerate(BINARIES[index]):
        put(os.path.join(repo, "assets", f"blob{j}.bin"), rng.randbytes(max(1, int(mb * scale * 1024 * 1024))))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial import", date=DATES[0])
    for step in (1, 2):
        files = text_files(repo)
        for path in rng.sample(files, max(1, len(files) // 20)):
            put(path, text(rng, small_size(rng)))
        for k in range(max(1, len(files) // 80)):
            put(os.path.join(repo, "Sources", "added", f"step{step}_{k:04d}.swift"), text(rng, small_size(rng)))
        if step == 2 and BINARIES[index]:
            put(os.path.join(repo, "assets", "blob0.bin"),
                rng.randbytes(max(1, int(BINARIES[index][0] * scale * 1024 * 1024))))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"update {step}", date=DATES[step])
    if index % 10 < 7:
        git(repo, "gc", "-q")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dest")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    os.makedirs(args.dest, exist_ok=True)
    for index in range(20):
        build(args.dest, index, args.scale)
        print(f"golden-{index:02d} done", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
