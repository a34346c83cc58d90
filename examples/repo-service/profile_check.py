#!/usr/bin/env python3
"""profile_check.py: tests seed.yaml against a generated installation. A test stand-in, NOT the engine.

    profile_check.py --profile seed.yaml --base DIR --port PORT --target POSTGRES_URL --muster-agent PATH

Needs PyYAML (for reading the profile only). Everything the profile names is relocated under DIR (/srv/app ->
DIR/srv/app, /mnt/shared -> DIR/mnt/shared, /etc/repo-service -> DIR/etc/repo-service), port 8080 -> PORT and
the profile's PostgreSQL URL -> POSTGRES_URL. Then it does by hand, in the simplest possible way, what
`muster seed-cluster` does with the profile: checks the keys against SeedProfile.swift's known fields, checks the
config holds `expect`, migrates each database with `muster-agent migrate-sqlite`, copies each directory onto the
volume, rewrites the JSON fields on segment boundaries, sets the config keys, starts app.py in cluster mode and
runs every check of the profile. Finally the standalone files must be byte-identical. Exits non-zero on failure.

Its purpose is to prove the profile is consistent with generate.py's default layout and with app.py; the
real workflow (idempotence, backups, rollback) is tested in the Muster test suite.
"""

import argparse
import fnmatch
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))

# Sources/Shared/Seed/SeedProfile.swift, knownKeys
KNOWN_KEYS = {
    "": {"service", "databases", "directories", "rewrites", "config", "volume", "checks", "module"},
    "service": {"unit", "healthURL", "healthTimeoutSeconds"},
    "databases[]": {"path", "target", "schema", "tables", "casts"},
    "directories[]": {"source", "destination", "exclude"},
    "rewrites[]": {"files", "fields", "prefixes"},
    "rewrites[].prefixes[]": {"from", "to"},
    "config": {"file", "format", "expect", "set"},
    "volume": {"name", "mountPath"},
    "checks[]": {"name", "url", "status", "json"},
}
REQUIRED = {"service": ["unit", "healthURL"], "volume": ["name", "mountPath"], "config": ["file", "format", "set"]}


def fail(message):
    print(f"profile_check: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def say(message):
    print(f"profile_check: {message}", file=sys.stderr)


def check_shape(node, shape="", field=""):
    if isinstance(node, dict):
        if shape not in KNOWN_KEYS:
            return
        for key, value in node.items():
            child = f"{field}.{key}" if field else key
            if key not in KNOWN_KEYS[shape]:
                fail(f"{child}: unknown field")
            check_shape(value, key if not shape else f"{shape}.{key}", child)
    elif isinstance(node, list):
        for i, element in enumerate(node):
            check_shape(element, shape + "[]", f"{field}[{i}]")


def pointer_segments(pointer):
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        fail(f"JSON pointer {pointer!r} does not start with /")
    return [s.replace("~1", "/").replace("~0", "~") if s != "*" else None for s in pointer[1:].split("/")]


def pointer_get(doc, pointer):
    node = doc
    for seg in pointer_segments(pointer):
        if isinstance(node, dict) and seg in node:
            node = node[seg]
        elif isinstance(node, list) and seg is not None and seg.isdigit() and int(seg) < len(node):
            node = node[int(seg)]
        else:
            raise KeyError(pointer)
    return node


def rewrite_strings(node, segments, prefixes, counter):
    """Applies the prefixes to the string values the (wildcard) pointer names."""
    if not segments:
        return node
    seg, rest = segments[0], segments[1:]
    keys = (range(len(node)) if isinstance(node, list) else list(node)) if seg is None else [seg]
    for key in keys:
        if isinstance(node, list):
            if not isinstance(key, int):
                if not key.isdigit():
                    continue
                key = int(key)
            if key >= len(node):
                continue
        elif key not in node:
            continue
        if rest:
            rewrite_strings(node[key], rest, prefixes, counter)
        elif isinstance(node[key], str):
            for p in prefixes:
                frm, to = p["from"].rstrip("/") or "/", p["to"].rstrip("/") or "/"
                value = node[key]
                if value == frm or value.startswith(frm + "/"):
                    node[key] = to + value[len(frm):]
                    counter[0] += 1
                    break
    return node


def tree_digest(path):
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(dirpath, name)
            h.update(os.path.relpath(full, path).encode() + b"\0")
            with open(full, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def main():
    parser = argparse.ArgumentParser()
    for opt in ("--profile", "--base", "--port", "--target", "--muster-agent"):
        parser.add_argument(opt, required=True)
    parser.add_argument("--python", default="/usr/bin/python3", help="runs app.py (needs psycopg2)")
    args = parser.parse_args()
    base = os.path.abspath(args.base)

    text = open(args.profile).read()
    check_shape(yaml.safe_load(text))
    relocated = text.replace("/srv/app", base + "/srv/app").replace("/mnt/shared", base + "/mnt/shared")
    relocated = relocated.replace("/etc/repo-service/", base + "/etc/repo-service/")
    relocated = relocated.replace("127.0.0.1:8080", f"127.0.0.1:{args.port}")
    relocated = re.sub(r"postgres://[^\s]+", args.target, relocated)
    profile = yaml.safe_load(relocated)
    for section, keys in REQUIRED.items():
        for key in keys:
            if key not in profile.get(section, {}):
                fail(f"{section}.{key}: missing")
    say(f"profile shape ok ({len(profile.get('checks', []))} checks)")

    root = base + "/srv/app"
    say("generate the default installation")
    subprocess.run(
        [args.python, os.path.join(HERE, "generate.py"), "--root", root, "--config",
         profile["config"]["file"], "--listen", f"127.0.0.1:{args.port}"],
        check=True, stdout=subprocess.DEVNULL,
    )
    before = tree_digest(root)
    config_before = open(profile["config"]["file"], "rb").read()

    config = profile["config"]
    if config["format"] != "json":
        fail("this check handles json configs only")
    current = json.load(open(config["file"]))
    for key, value in (config.get("expect") or {}).items():
        found = pointer_get(current, key) if key.startswith("/") else current.get(key)
        if found != value:
            fail(f"config.expect {key}: found {found!r}, expected {value!r}")

    for db in profile.get("databases", []):
        cmd = [args.muster_agent, "migrate-sqlite", db["path"], "--target", db["target"], "--json"]
        if db.get("schema"):
            cmd += ["--schema", db["schema"]]
        if db.get("tables"):
            cmd += ["--tables", ",".join(db["tables"])]
        for cast in db.get("casts") or []:
            cmd += ["--cast", cast]
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            fail(f"migrate-sqlite {db['path']} exited {result.returncode}: {result.stderr[-2000:]}")
        say(f"migrated {db['path']}")

    mount = profile["volume"]["mountPath"]
    for d in profile.get("directories", []):
        dest = os.path.join(mount, d["destination"])
        patterns = d.get("exclude") or []
        shutil.copytree(
            d["source"], dest, symlinks=True,
            ignore=lambda _dir, names: [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)],
        )
        say(f"copied {d['source']} -> {dest}")

    for rw in profile.get("rewrites", []):
        files = sorted({f for pattern in rw["files"] for f in glob.glob(pattern)})
        if not files:
            fail(f"rewrite: no file matches {rw['files']}")
        counter = [0]
        for path in files:
            doc = json.load(open(path))
            for pointer in rw.get("fields") or []:
                rewrite_strings(doc, pointer_segments(pointer), rw["prefixes"], counter)
            with open(path, "w") as f:
                json.dump(doc, f, indent=2)
        say(f"rewrote {counter[0]} paths in {len(files)} files")
        for path in files:
            if root + "/" in open(path).read():
                fail(f"{path} still points into the standalone tree {root}")

    for key, value in config["set"].items():
        if key.startswith("/"):
            segs = pointer_segments(key)
            node = current
            for seg in segs[:-1]:
                node = node.setdefault(seg, {})
            node[segs[-1]] = value
        else:
            current[key] = value
    with open(config["file"], "w") as f:
        json.dump(current, f, indent=2)

    say("start app.py in cluster mode")
    log = open(os.path.join(base, "app-profile.log"), "w")
    app = subprocess.Popen([args.python, os.path.join(HERE, "app.py"), "--config", config["file"]], stderr=log)
    try:
        deadline = time.monotonic() + int(profile["service"].get("healthTimeoutSeconds", 60))
        while True:
            status, body = fetch(profile["service"]["healthURL"])
            if 200 <= status < 300:
                break
            if app.poll() is not None or time.monotonic() > deadline:
                fail(f"not healthy: {status} {body[:500]!r} (log {log.name})")
            time.sleep(0.2)
        for check in profile.get("checks", []):
            status, body = fetch(check["url"])
            if status != check.get("status", 200):
                fail(f"check {check['name']!r}: status {status}, expected {check.get('status', 200)}")
            doc = json.loads(body)
            for pointer, expected in (check.get("json") or {}).items():
                try:
                    found = pointer_get(doc, pointer)
                except KeyError:
                    fail(f"check {check['name']!r}: {pointer} absent in {body[:300]!r}")
                if found != expected:
                    fail(f"check {check['name']!r}: {pointer} = {found!r}, expected {expected!r}")
            say(f"check ok: {check['name']}")
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=20)

    if tree_digest(root) != before:
        fail(f"the standalone tree {root} changed")
    say("standalone tree byte-identical")
    if open(config["file"], "rb").read() == config_before:
        fail("the config was not changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
