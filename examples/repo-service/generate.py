#!/usr/bin/python3
"""Generates a standalone repo-service installation (Python 3 standard library + the git command).

    generate.py --root /srv/app [--repos 20] [--commits 5000] [--snapshots 2] [--seed 1]
                [--payload-kb 0] [--config PATH] [--listen 127.0.0.1:8080] [--force]

Layout under ROOT:
    db/repo.db                      SQLite: repositories, commits, snapshots (+ indexes, foreign keys)
    golden-repos/<name>.git         real bare git repositories; every row of `commits` is a real commit
    .versioned/<name>/<n>/          snapshots: the repository's tree at an earlier commit (git archive)
    aliases/<alias>.json            one per repository, absolute paths into golden-repos/ and .versioned/
    config.json                     standalone config ("storage_mode": "sqlite"); --config writes it elsewhere

The same --seed and counts give the same rows, the same commit shas and the same files. The database holds no
absolute paths: only the alias files and the config do (that is what seed-cluster rewrites).
"""

import argparse
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timezone

ADJECTIVES = [
    "amber", "brisk", "cedar", "dusty", "ember", "frost", "glade", "hazel", "ivory", "jolly", "keen", "lunar",
    "maple", "noble", "ocean", "pearl", "quiet", "rapid", "solar", "tidal", "umber", "vivid", "willow", "zesty",
]
NOUNS = [
    "atlas", "beacon", "cipher", "delta", "engine", "forge", "garden", "harbor", "index", "journal", "kernel",
    "ledger", "mirror", "nexus", "orbit", "parser", "quarry", "relay", "signal", "tracer", "umbra", "vault",
    "widget", "yard",
]
VERBS = ["Fix", "Add", "Refactor", "Update", "Remove", "Document", "Speed up", "Handle", "Test", "Rename"]
THINGS = [
    "race in the scheduler", "off-by-one in pagination", "null check", "retry logic", "config loader",
    "cache eviction", "error message", "logging", "index rebuild", "timeout handling", "unicode names",
    "memory leak", "slow query", "flaky test", "deprecation warning", "license header", "CLI flags",
    "migration script", "health endpoint", "backup rotation",
]
MODULES = ["core", "api", "storage", "cli", "auth", "search", "sync", "ui", "docs", "build"]
PEOPLE = [
    ("Ada Example", "ada@example.org"), ("Brook Example", "brook@example.org"), ("Cyd Example", "cyd@example.org"),
    ("Dana Example", "dana@example.org"), ("Eli Example", "eli@example.org"),
]
EPOCH = 1672531200  # 2023-01-01T00:00:00Z

SCHEMA = """
CREATE TABLE repositories (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    created_at TEXT,
    size_bytes INTEGER,
    archived BOOLEAN NOT NULL DEFAULT 0
);
CREATE TABLE commits (
    id INTEGER PRIMARY KEY,
    repository_id INTEGER NOT NULL REFERENCES repositories(id),
    sha TEXT NOT NULL,
    message TEXT,
    author TEXT,
    committed_at TEXT
);
CREATE INDEX commits_repository_time ON commits(repository_id, committed_at);
CREATE UNIQUE INDEX commits_repository_sha ON commits(repository_id, sha);
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY,
    repository_id INTEGER NOT NULL REFERENCES repositories(id),
    n INTEGER NOT NULL,
    sha TEXT NOT NULL,
    created_at TEXT,
    UNIQUE (repository_id, n)
);
"""


def iso(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_env():
    env = dict(os.environ)
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null", LC_ALL="C")
    return env


def git(*args, input=None, cwd=None):
    return subprocess.run(
        ["git", *args], input=input, cwd=cwd, env=git_env(), check=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ).stdout


def plan_repositories(rng, count):
    names, aliases = [], []
    pairs = [(a, n) for a in ADJECTIVES for n in NOUNS]
    rng.shuffle(pairs)
    if count > len(pairs):
        # beyond the word pairs: numbered names, still unique
        pairs += [(f"extra{i}", "repo") for i in range(count - len(pairs))]
    for i, (adjective, noun) in enumerate(pairs[:count]):
        names.append(f"{adjective}-{noun}")
        aliases.append(f"{noun}{i + 1}")
    return names, aliases


def split_commits(rng, total, repos):
    """Every repository gets at least one commit (when total >= repos); the rest by random weights."""
    counts = [1 if total >= repos else 0 for _ in range(repos)]
    rest = total - sum(counts)
    weights = [rng.uniform(0.2, 1.0) for _ in range(repos)]
    scale = sum(weights)
    for i in range(repos):
        counts[i] += int(rest * weights[i] / scale)
    for i in range(total - sum(counts)):  # rounding remainder
        counts[i % repos] += 1
    return counts


def build_repository(rng, git_dir, name, n_commits, start_ts, payload_kb, work):
    """Creates a bare repository with n_commits real commits (git fast-import); returns [(sha, ts, msg, author)]."""
    git("init", "--quiet", "--bare", "--initial-branch=main", git_dir)
    git("--git-dir", git_dir, "config", "core.logAllRefUpdates", "false")
    marks = os.path.join(work, f"{name}.marks")
    importer = subprocess.Popen(
        ["git", "--git-dir", git_dir, "fast-import", "--quiet", f"--export-marks={marks}"],
        stdin=subprocess.PIPE, env=git_env(),
    )
    stream = io.BufferedWriter(importer.stdin, buffer_size=1 << 20)  # streamed: memory stays flat

    def data(payload):
        if isinstance(payload, str):
            payload = payload.encode()
        stream.write(b"data %d\n" % len(payload))
        stream.write(payload)
        stream.write(b"\n")

    files = {}
    commits = []
    ts = start_ts
    for i in range(n_commits):
        ts += rng.randint(60, 36 * 3600)
        person = rng.choice(PEOPLE)
        module = rng.choice(MODULES)
        message = f"{rng.choice(VERBS)} {rng.choice(THINGS)} in {module}"
        if i == 0:
            message = f"Initial import of {name}"
        lines = files.setdefault(f"src/{module}.py", [])
        lines.append(f"# {i}: {message} ({rng.getrandbits(32):08x})")
        del lines[:-40]
        stream.write(b"commit refs/heads/main\n")
        stream.write(b"mark :%d\n" % (i + 1))
        ident = f"{person[0]} <{person[1]}> {ts} +0000"
        stream.write(f"author {ident}\ncommitter {ident}\n".encode())
        data(message + "\n")
        if i == 0:
            stream.write(b"M 100644 inline README.md\n")
            data(f"# {name}\n\nAn example repository generated for repo-service.\n")
            if payload_kb > 0:
                stream.write(b"M 100644 inline assets/payload.bin\n")
                data(rng.randbytes(payload_kb * 1024))
        stream.write(f"M 100644 inline src/{module}.py\n".encode())
        data("\n".join(lines) + "\n")
        stream.write(b"\n")
        commits.append((ts, message, person[0]))
    stream.flush()
    importer.stdin.close()
    if importer.wait() != 0:
        raise RuntimeError(f"git fast-import into {git_dir} failed (exit {importer.returncode})")
    shas = {}
    with open(marks) as f:
        for line in f:
            mark, sha = line.split()
            shas[int(mark[1:])] = sha
    return [(shas[i + 1], ts, message, author) for i, (ts, message, author) in enumerate(commits)]


def directory_size(path):
    total = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


def snapshot(git_dir, sha, dest):
    os.makedirs(dest)
    tar = git("--git-dir", git_dir, "archive", "--format=tar", sha)
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        for member in archive.getmembers():
            if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in member.name.split("/"):
                raise RuntimeError(f"unexpected entry {member.name} in git archive")
        archive.extractall(dest)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate a standalone repo-service installation")
    parser.add_argument("--root", required=True, help="installation root, e.g. /srv/app (absolute)")
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--commits", type=int, default=5000, help="commits in total (rows of the commits table)")
    parser.add_argument("--snapshots", type=int, default=2, help="snapshots per repository")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--payload-kb", type=int, default=0, help="an incompressible file of this size per repository")
    parser.add_argument("--config", help="where to write config.json (default ROOT/config.json)")
    parser.add_argument("--listen", default="127.0.0.1:8080")
    parser.add_argument("--force", action="store_true", help="replace an earlier generated installation under ROOT")
    args = parser.parse_args(argv)

    root = os.path.abspath(args.root)
    if args.repos < 1 or args.commits < 0 or args.snapshots < 0 or args.payload_kb < 0:
        parser.error("--repos must be >= 1; --commits, --snapshots, --payload-kb >= 0")
    if shutil.which("git") is None:
        sys.exit("generate.py: the git command is needed (Debian package git)")
    layout = ["db", "golden-repos", ".versioned", "aliases", "config.json"]
    present = [p for p in layout if os.path.lexists(os.path.join(root, p))]
    if present:
        if not args.force:
            sys.exit(f"generate.py: {root} already holds {', '.join(present)} (use --force to replace them)")
        for p in present:
            full = os.path.join(root, p)
            shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else os.unlink(full)
    config_path = os.path.abspath(args.config) if args.config else os.path.join(root, "config.json")

    started = time.monotonic()
    rng = random.Random(args.seed)
    for d in ("db", "golden-repos", ".versioned", "aliases"):
        os.makedirs(os.path.join(root, d))
    work = os.path.join(root, ".generate-tmp")
    os.makedirs(work, exist_ok=True)

    names, aliases = plan_repositories(rng, args.repos)
    counts = split_commits(rng, args.commits, args.repos)
    db_path = os.path.join(root, "db", "repo.db")
    db = sqlite3.connect(db_path)
    db.executescript(SCHEMA)
    commit_id = 0
    snapshot_id = 0
    for rid, (name, alias, n_commits) in enumerate(zip(names, aliases, counts), start=1):
        git_dir = os.path.join(root, "golden-repos", f"{name}.git")
        start_ts = EPOCH + rng.randint(0, 90 * 86400)
        description = f"{name.replace('-', ' ').title()}: {rng.choice(THINGS)} tooling"
        archived = rng.random() < 0.1
        if n_commits == 0:
            git("init", "--quiet", "--bare", "--initial-branch=main", git_dir)
            commits = []
        else:
            commits = build_repository(rng, git_dir, name, n_commits, start_ts, args.payload_kb, work)
        db.execute(
            "INSERT INTO repositories (id, name, description, created_at, size_bytes, archived) VALUES (?,?,?,?,?,?)",
            (rid, name, description, iso(start_ts), directory_size(git_dir), int(archived)),
        )
        rows = []
        for sha, ts, message, author in commits:
            commit_id += 1
            rows.append((commit_id, rid, sha, message, author, iso(ts)))
        db.executemany(
            "INSERT INTO commits (id, repository_id, sha, message, author, committed_at) VALUES (?,?,?,?,?,?)", rows
        )
        snapshot_docs = []
        for n in range(1, args.snapshots + 1 if commits else 1):
            index = max(0, (n * len(commits)) // (args.snapshots + 1) - 1)
            sha, ts = commits[index][0], commits[index][1]
            dest = os.path.join(root, ".versioned", name, str(n))
            snapshot(git_dir, sha, dest)
            snapshot_id += 1
            db.execute(
                "INSERT INTO snapshots (id, repository_id, n, sha, created_at) VALUES (?,?,?,?,?)",
                (snapshot_id, rid, n, sha, iso(ts + 3600)),
            )
            snapshot_docs.append({"n": n, "sha": sha, "path": dest})
        doc = {
            "alias": alias,
            "repository": name,
            "path": git_dir,
            "default_branch": "main",
            "snapshots": snapshot_docs,
        }
        with open(os.path.join(root, "aliases", f"{alias}.json"), "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    db.commit()
    db.close()
    shutil.rmtree(work)

    config = {
        "storage_mode": "sqlite",
        "sqlite_path": db_path,
        "postgres_url": "",
        "postgres_schema": "app",
        "data_root": root,
        "aliases_dir": os.path.join(root, "aliases"),
        "listen": args.listen,
    }
    os.makedirs(os.path.dirname(config_path), exist_ok=True)
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    summary = {
        "root": root,
        "config": config_path,
        "database": db_path,
        "tables": {"repositories": args.repos, "commits": commit_id, "snapshots": snapshot_id},
        "bytes": directory_size(root),
        "seconds": round(time.monotonic() - started, 2),
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
