#!/usr/bin/python3
"""repo-service: a small example service for Muster's seed-cluster.

Serves a catalogue of git repositories over HTTP.

* standalone mode (``"storage_mode": "sqlite"``): the catalogue is a SQLite database, the repositories and
  snapshots are local directories; Python 3 standard library only.
* cluster mode (``"storage_mode": "postgres"``): the same tables in PostgreSQL (psycopg2, Debian package
  ``python3-psycopg2``), the directories wherever the alias files point (the shared volume).

Endpoints: ``GET /health``, ``GET /repos``, ``GET /search?q=TEXT[&limit=N]``, ``GET /stats``.
Logs go to stderr (journald under systemd). Nothing here ever writes to the database or the data directories.

Usage: app.py --config /etc/repo-service/config.json [--listen HOST:PORT] [--check]
"""

import argparse
import json
import logging
import os
import queue
import signal
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOG = logging.getLogger("repo-service")

STORAGE_MODES = ("sqlite", "postgres")
TABLES_IN_ORDER = ("repositories", "commits", "snapshots")
SEARCH_LIMIT_DEFAULT = 50
SEARCH_LIMIT_MAX = 1000


class ConfigError(Exception):
    pass


# --------------------------------------------------------------------------------------------------- config


def load_config(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror}")
    try:
        config = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}")
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: the config must be a JSON object")

    mode = config.get("storage_mode")
    if mode not in STORAGE_MODES:
        raise ConfigError(
            f"{path}: storage_mode: unknown value {json.dumps(mode)} (expected one of: {', '.join(STORAGE_MODES)})"
        )

    def need(key, kind=str):
        value = config.get(key)
        if not isinstance(value, kind) or (kind is str and not value):
            raise ConfigError(f"{path}: {key}: missing or not a non-empty {kind.__name__} (storage_mode {mode})")
        return value

    for key in ("data_root", "aliases_dir", "listen"):
        need(key)
    for key in ("data_root", "aliases_dir"):
        if not config[key].startswith("/"):
            raise ConfigError(f"{path}: {key}: {config[key]!r} is not an absolute path")
    if mode == "sqlite":
        need("sqlite_path")
    else:
        need("postgres_url")
        if not (config["postgres_url"].startswith("postgres://") or config["postgres_url"].startswith("postgresql://")):
            raise ConfigError(f"{path}: postgres_url: must be a postgres:// URL")
        schema = config.get("postgres_schema", "public")
        if not isinstance(schema, str) or not schema or '"' in schema or len(schema) > 63:
            raise ConfigError(f"{path}: postgres_schema: {schema!r} is not a schema name")
        config["postgres_schema"] = schema
    parse_listen(config["listen"], f"{path}: listen")
    return config


def parse_listen(text, where="listen"):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


# --------------------------------------------------------------------------------------------------- storage


class SQLiteStore:
    """Read-only access to the standalone SQLite database (opened per request, mode=ro)."""

    placeholder = "?"
    like = "LIKE"

    def __init__(self, path):
        self.path = path
        self.describe = f"sqlite {path}"

    def _connect(self):
        if not os.path.isfile(self.path):
            raise RuntimeError(f"no database file {self.path}")
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        return conn

    def query(self, sql, params=()):
        conn = self._connect()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def tables(self):
        rows = self.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        return [r[0] for r in rows]

    def ping(self):
        self.query("SELECT count(*) FROM sqlite_master")

    def close(self):
        pass


class PostgresStore:
    """The same tables in PostgreSQL, through a small pool of psycopg2 connections."""

    placeholder = "%s"
    like = "ILIKE"

    def __init__(self, url, schema, pool_size=4):
        try:
            import psycopg2  # noqa: F401  (Debian: python3-psycopg2)
        except ImportError:
            raise ConfigError("storage_mode postgres needs psycopg2 (Debian package python3-psycopg2)")
        self.psycopg2 = psycopg2
        self.url = url
        self.schema = schema
        self.pool = queue.LifoQueue(maxsize=pool_size)
        self.describe = f"postgres {redact(url)} schema {schema}"

    def _connect(self):
        conn = self.psycopg2.connect(self.url, connect_timeout=5, application_name="repo-service")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('search_path', %s, false)", ('"' + self.schema + '"',))
            cur.execute("SET statement_timeout = '10s'")
        return conn

    def query(self, sql, params=()):
        try:
            conn = self.pool.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                rows = cur.fetchall()
        except BaseException:
            conn.close()  # a broken or aborted connection is never reused
            raise
        try:
            self.pool.put_nowait(conn)
        except queue.Full:
            conn.close()
        return rows

    def tables(self):
        rows = self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE' "
            "ORDER BY table_name",
            (self.schema,),
        )
        return [r[0] for r in rows]

    def ping(self):
        self.query("SELECT 1")

    def close(self):
        while True:
            try:
                self.pool.get_nowait().close()
            except queue.Empty:
                return


def redact(url):
    """postgres://user:secret@host/db -> postgres://user:***@host/db"""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{creds}{at}{host}"


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------------------------------- git


def git_dir_ok(path):
    """A bare repository (or a .git directory): HEAD, objects/ and refs/ must be there."""
    return (
        os.path.isdir(path)
        and os.path.isfile(os.path.join(path, "HEAD"))
        and os.path.isdir(os.path.join(path, "objects"))
        and os.path.isdir(os.path.join(path, "refs"))
    )


def resolve_ref(git_dir, ref, depth=0):
    """The sha a ref points to, reading loose refs and packed-refs (what `git rev-parse` does), or None."""
    if depth > 5:
        return None
    loose = os.path.join(git_dir, ref)
    try:
        with open(loose, "r", encoding="utf-8") as f:
            value = f.read().strip()
        if value.startswith("ref: "):
            return resolve_ref(git_dir, value[5:].strip(), depth + 1)
        return value if is_sha(value) else None
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        pass
    try:
        with open(os.path.join(git_dir, "packed-refs"), "r", encoding="utf-8") as f:
            for line in f:
                if line.startswith("#") or line.startswith("^"):
                    continue
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref and is_sha(parts[0]):
                    return parts[0]
    except FileNotFoundError:
        pass
    return None


def is_sha(value):
    return len(value) in (40, 64) and all(c in "0123456789abcdef" for c in value)


def read_head(git_dir):
    return resolve_ref(git_dir, "HEAD")


# --------------------------------------------------------------------------------------------------- aliases


def load_aliases(aliases_dir):
    """repository name -> alias document; unreadable files are logged and reported, never fatal."""
    by_repo, problems = {}, []
    try:
        names = sorted(n for n in os.listdir(aliases_dir) if n.endswith(".json"))
    except OSError as e:
        return by_repo, [f"{aliases_dir}: {e.strerror}"]
    for name in names:
        path = os.path.join(aliases_dir, name)
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
            repo = doc["repository"]
            doc.setdefault("alias", name[: -len(".json")])
            by_repo[repo] = doc
        except (OSError, ValueError, KeyError, TypeError) as e:
            problems.append(f"{path}: {e}")
    return by_repo, problems


# --------------------------------------------------------------------------------------------------- service


class Service:
    def __init__(self, config):
        self.config = config
        self.mode = config["storage_mode"]
        if self.mode == "sqlite":
            self.store = SQLiteStore(config["sqlite_path"])
        else:
            self.store = PostgresStore(config["postgres_url"], config["postgres_schema"])

    # GET /health
    def health(self):
        problems = []
        try:
            self.store.ping()
        except Exception as e:  # noqa: BLE001  (any database failure means unhealthy)
            problems.append(f"database: {one_line(e)}")
        if not os.path.isdir(self.config["data_root"]):
            problems.append(f"data_root {self.config['data_root']} does not exist")
        if problems:
            return 503, {"status": "unavailable", "mode": self.mode, "problems": problems}
        return 200, {"status": "ok", "mode": self.mode}

    # GET /repos
    def repos(self):
        rows = self.store.query(
            "SELECT id, name, description, created_at, size_bytes, archived FROM repositories ORDER BY name"
        )
        snapshot_counts = dict(self.store.query("SELECT repository_id, count(*) FROM snapshots GROUP BY repository_id"))
        aliases, problems = load_aliases(self.config["aliases_dir"])
        out, missing = [], 0
        for rid, name, description, created_at, size_bytes, archived in rows:
            doc = aliases.get(name)
            path = doc.get("path") if doc else None
            exists = bool(path) and git_dir_ok(path)
            head = read_head(path) if exists else None
            snapshots = []
            for snap in (doc or {}).get("snapshots", []):
                spath = snap.get("path")
                snapshots.append({"n": snap.get("n"), "path": spath, "exists": bool(spath) and os.path.isdir(spath)})
            ok = exists and head is not None and all(s["exists"] for s in snapshots)
            if not ok:
                missing += 1
            out.append(
                {
                    "name": name,
                    "alias": doc.get("alias") if doc else None,
                    "path": path,
                    "exists": exists,
                    "head": head,
                    "description": description,
                    "created_at": created_at,
                    "size_bytes": size_bytes,
                    "archived": bool(archived),
                    "snapshots": snapshots,
                    "snapshots_in_database": snapshot_counts.get(rid, 0),
                }
            )
        body = {"count": len(out), "missing": missing, "repositories": out}
        if problems:
            body["alias_problems"] = problems
        return 200, body

    # GET /search?q=...
    def search(self, params):
        q = params.get("q", [""])[0]
        if not q.strip():
            return 400, {"error": "missing query parameter q"}
        try:
            limit = int(params.get("limit", [str(SEARCH_LIMIT_DEFAULT)])[0])
        except ValueError:
            return 400, {"error": "limit must be an integer"}
        limit = max(1, min(limit, SEARCH_LIMIT_MAX))
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        p, like = self.store.placeholder, self.store.like
        where = f"c.message {like} {p} ESCAPE '\\'"
        (total,) = self.store.query(f"SELECT count(*) FROM commits c WHERE {where}", (pattern,))[0]
        rows = self.store.query(
            f"SELECT r.name, c.sha, c.message, c.committed_at FROM commits c "
            f"JOIN repositories r ON r.id = c.repository_id WHERE {where} "
            f"ORDER BY c.committed_at, c.id LIMIT {limit}",
            (pattern,),
        )
        results = [{"repository": r[0], "sha": r[1], "message": r[2], "committed_at": r[3]} for r in rows]
        return 200, {"query": q, "count": int(total), "returned": len(results), "results": results}

    # GET /stats
    def stats(self):
        tables = {}
        for name in self.store.tables():
            (n,) = self.store.query(f"SELECT count(*) FROM {quote_ident(name)}")[0]
            tables[name] = int(n)
        (latest,) = self.store.query("SELECT max(committed_at) FROM commits")[0]
        return 200, {"mode": self.mode, "tables": tables, "latest_commit_at": latest}


def one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


class Handler(BaseHTTPRequestHandler):
    server_version = "repo-service/1"
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        started = time.monotonic()
        url = urlsplit(self.path)
        service = self.server.service
        routes = {
            "/health": lambda: service.health(),
            "/repos": lambda: service.repos(),
            "/search": lambda: service.search(parse_qs(url.query)),
            "/stats": lambda: service.stats(),
        }
        route = routes.get(url.path.rstrip("/") or "/")
        if route is None:
            status, body = 404, {"error": f"no such endpoint {url.path}", "endpoints": sorted(routes)}
        else:
            try:
                status, body = route()
            except Exception as e:  # noqa: BLE001
                LOG.error("GET %s failed: %s", url.path, one_line(e))
                status, body = 503, {"error": one_line(e)}
        self.send_json(status, body)
        LOG.info("%s GET %s %d %.1fms", self.client_address[0], self.path, status, (time.monotonic() - started) * 1000)

    def do_HEAD(self):  # noqa: N802
        self.send_json(405, {"error": "GET only"})

    def send_json(self, status, body):
        data = (json.dumps(body, indent=1, sort_keys=False) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_request(self, code="-", size="-"):  # requests are logged in do_GET, with their duration
        pass

    def log_message(self, fmt, *args):  # http.server's own messages (malformed requests, timeouts)
        LOG.warning("%s %s", self.client_address[0], fmt % args)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv=None):
    parser = argparse.ArgumentParser(description="repo-service: an example service for Muster seed-cluster")
    parser.add_argument("--config", default="/etc/repo-service/config.json")
    parser.add_argument("--listen", help="HOST:PORT, overrides the config's listen")
    parser.add_argument("--check", action="store_true", help="validate the config and the storage, then exit")
    args = parser.parse_args(argv)

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        # journald adds the time; a terminal gets it from here only when not under systemd
        format="%(levelname)s %(message)s" if os.environ.get("INVOCATION_ID") else "%(asctime)s %(levelname)s %(message)s",
    )
    try:
        config = load_config(args.config)
        if args.listen:
            config["listen"] = args.listen
        host, port = parse_listen(config["listen"], "--listen")
        service = Service(config)
    except ConfigError as e:
        LOG.error("refusing to start: %s", e)
        return 2

    status, body = service.health()
    if status != 200:
        LOG.warning("not healthy yet: %s", "; ".join(body.get("problems", [])))
    if args.check:
        print(json.dumps(body))
        return 0 if status == 200 else 1

    try:
        server = Server((host, port), Handler)
    except OSError as e:
        LOG.error("cannot listen on %s:%d: %s", host, port, e.strerror)
        return 1
    server.service = service

    def stop(signum, _frame):
        LOG.info("signal %d: stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    LOG.info(
        "listening on %s:%d, mode %s (%s), data_root %s, aliases %s",
        host, server.server_address[1], service.mode, service.store.describe, config["data_root"], config["aliases_dir"],
    )
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        service.store.close()
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
