#!/usr/bin/env python3
"""Deterministic benchmark database for `scripts/bench-migrate`: a "standalone server" SQLite file.

Usage: gen_sqlite.py OUT.sqlite [--scale 1.0] [--seed 7]

At scale 1.0: 2,000,000 rows in 5 tables, about 620 MB.
  nodes        20,000  hostnames (unique index), unicode regions, 0/1 flags, big integers, JSON labels,
                       ISO-8601 timestamps, nullable columns
  jobs        400,000  node ids, unicode names, status, REAL seconds (nullable), JSON params, nullable timestamps
  events    1,230,000  many small rows: short text with some unicode, nullable JSON attributes
  artifacts   200,000  paths, sha256 hex, BLOB of 64..1024 bytes (2% NULL), 0/1 flag
  logs        150,000  about 1 KB of mixed ASCII/unicode text per row
Declared types are the ones apps write: INTEGER, TEXT, BOOLEAN, DATETIME, JSON, BLOB, REAL.
"""
import argparse
import json
import os
import random
import sqlite3
import time
from datetime import datetime, timedelta, timezone

DDL = [
    """CREATE TABLE nodes (id INTEGER PRIMARY KEY, hostname TEXT NOT NULL, ip TEXT, region TEXT NOT NULL,
       is_active BOOLEAN NOT NULL, cpu_cores INTEGER NOT NULL, mem_bytes INTEGER NOT NULL, labels JSON,
       registered_at DATETIME NOT NULL, last_seen_at DATETIME, notes TEXT)""",
    "CREATE UNIQUE INDEX nodes_hostname ON nodes(hostname)",
    """CREATE TABLE jobs (id INTEGER PRIMARY KEY, node_id INTEGER NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
       priority INTEGER NOT NULL, is_retry BOOLEAN NOT NULL, cpu_seconds REAL, params JSON,
       created_at DATETIME NOT NULL, started_at DATETIME, finished_at DATETIME, exit_code INTEGER)""",
    "CREATE INDEX jobs_node_id ON jobs(node_id)",
    """CREATE TABLE events (id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, ts DATETIME NOT NULL, level TEXT NOT NULL,
       code INTEGER NOT NULL, message TEXT NOT NULL, attrs JSON)""",
    "CREATE INDEX events_job_id ON events(job_id)",
    """CREATE TABLE artifacts (id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, path TEXT NOT NULL,
       size_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, content BLOB, is_compressed BOOLEAN NOT NULL,
       created_at DATETIME NOT NULL)""",
    "CREATE INDEX artifacts_job_id ON artifacts(job_id)",
    "CREATE TABLE logs (id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, ts DATETIME NOT NULL, stream TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE INDEX logs_job_id ON logs(job_id)",
]

ASCII = ("sync build deploy worker agent queue task retry timeout commit branch fetch clone checkout cache image "
         "volume mount socket handshake certificate schema index table column value node cluster snapshot repo "
         "file path error warning info debug done failed ok the a of to in for with on at by from is").split()
UNICODE = ["Größe", "naïve", "Zürich", "café", "東京", "データ", "ошибка", "сервер", "łódź", "ñandú", "προσοχή",
           "日志", "节点", "🚀", "✅", "❌", "—", "…", "€", "Ωmega"]
TOKENS = ASCII * 4 + UNICODE
REGIONS = ["eu-west/Zürich", "eu-central/Frankfurt", "us-east/Virginia", "ap-northeast/東京", "eu-north/Stockholm",
           "sa-east/São Paulo", "ap-south/Mumbai", "eu-east/Київ"]
STATUS = ["queued", "running", "succeeded", "succeeded", "succeeded", "failed", "cancelled"]
LEVEL = ["debug", "info", "info", "info", "warning", "error"]
EPOCH = datetime(2023, 1, 1, tzinfo=timezone.utc)


def stamp(sec, ms):
    t = EPOCH + timedelta(seconds=sec, milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    counts = {k: int(v * args.scale) for k, v in
              dict(nodes=20_000, jobs=400_000, events=1_230_000, artifacts=200_000, logs=150_000).items()}
    if os.path.exists(args.out):
        os.remove(args.out)
    db = sqlite3.connect(args.out)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    for stmt in DDL:
        db.execute(stmt)
    start = time.time()

    def text(n):
        return " ".join(rnd.choices(TOKENS, k=n))

    def compact(obj):
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

    def gen_nodes():
        for i in range(1, counts["nodes"] + 1):
            yield (i, "node-%06d.%s.example.internal" % (i, rnd.choice(["dc1", "dc2", "edge"])),
                   None if rnd.random() < 0.05 else "10.%d.%d.%d" % (rnd.randrange(256), rnd.randrange(256), rnd.randrange(1, 255)),
                   rnd.choice(REGIONS), int(rnd.random() < 0.9), rnd.choice([2, 4, 8, 16, 32, 64]),
                   rnd.choice([8, 16, 32, 64, 128, 256]) << 30,
                   compact({"arch": rnd.choice(["x86_64", "arm64"]), "tier": rnd.choice(["gold", "silver"]),
                            "zone": rnd.randrange(1, 4), "gpu": rnd.random() < 0.1}),
                   stamp(rnd.randrange(30_000_000), rnd.randrange(1000)),
                   None if rnd.random() < 0.2 else stamp(rnd.randrange(30_000_000, 60_000_000), rnd.randrange(1000)),
                   None if rnd.random() < 0.7 else text(rnd.randrange(3, 20)))

    def gen_jobs():
        for i in range(1, counts["jobs"] + 1):
            status = rnd.choice(STATUS)
            created = rnd.randrange(60_000_000)
            started = None if status == "queued" else created + rnd.randrange(1, 600)
            finished = started + rnd.randrange(1, 7200) if status in ("succeeded", "failed", "cancelled") else None
            yield (i, rnd.randrange(1, counts["nodes"] + 1),
                   "%s:%s" % (rnd.choice(["build", "sync", "snapshot", "test", "deploy"]), text(rnd.randrange(1, 5))),
                   status, rnd.randrange(10), int(rnd.random() < 0.1),
                   None if finished is None else round(rnd.random() * 3600, 6),
                   compact({"repo": "golden/%d" % rnd.randrange(200), "ref": "refs/heads/" + rnd.choice(["main", "dev", "release"]),
                            "env": {"CI": "1", "LANG": "C.UTF-8"}, "args": [text(1) for _ in range(rnd.randrange(4))]}),
                   stamp(created, rnd.randrange(1000)),
                   None if started is None else stamp(started, rnd.randrange(1000)),
                   None if finished is None else stamp(finished, rnd.randrange(1000)),
                   None if finished is None else (0 if status == "succeeded" else rnd.choice([1, 2, 137, 143])))

    def gen_events():
        for i in range(1, counts["events"] + 1):
            yield (i, rnd.randrange(1, counts["jobs"] + 1), stamp(rnd.randrange(60_000_000), rnd.randrange(1000)),
                   rnd.choice(LEVEL), rnd.randrange(5000), text(rnd.randrange(3, 18)),
                   None if rnd.random() < 0.5 else compact({"k": text(1), "n": rnd.randrange(1000), "ok": rnd.random() < 0.5}))

    def gen_artifacts():
        for i in range(1, counts["artifacts"] + 1):
            blob = rnd.randbytes(rnd.randrange(64, 1025))
            yield (i, rnd.randrange(1, counts["jobs"] + 1),
                   "out/%s/%d/%s.%s" % (text(1), rnd.randrange(10**6), text(1), rnd.choice(["tar", "log", "bin", "json"])),
                   rnd.randrange(10**3, 10**10), "%064x" % rnd.getrandbits(256), None if rnd.random() < 0.02 else blob,
                   int(rnd.random() < 0.5), stamp(rnd.randrange(60_000_000), rnd.randrange(1000)))

    def gen_logs():
        for i in range(1, counts["logs"] + 1):
            body = "\n".join("[%s] %s" % (stamp(rnd.randrange(60_000_000), 0)[:19] + "Z", text(rnd.randrange(6, 14)))
                             for _ in range(rnd.randrange(10, 16)))
            yield (i, rnd.randrange(1, counts["jobs"] + 1), stamp(rnd.randrange(60_000_000), rnd.randrange(1000)),
                   rnd.choice(["stdout", "stderr"]), body)

    for name, gen, width in (("nodes", gen_nodes, 11), ("jobs", gen_jobs, 12), ("events", gen_events, 7),
                             ("artifacts", gen_artifacts, 8), ("logs", gen_logs, 5)):
        db.executemany("INSERT INTO %s VALUES (%s)" % (name, ",".join("?" * width)), gen())
        db.commit()
        print("%-9s %9d rows  %6.1fs" % (name, counts[name], time.time() - start), flush=True)
    db.execute("ANALYZE")
    db.commit()
    db.close()
    print("%s: %.1f MB in %.1fs" % (args.out, os.path.getsize(args.out) / 1e6, time.time() - start))


if __name__ == "__main__":
    main()
