"""result: the counts per option, read from postgres.

GET /              a page with the counts (refreshes every 2 seconds)
GET /api/results   the same as JSON: {"a": N, "b": M, "total": N+M}

Environment: DB_HOST (default db), DB_USER, DB_PASSWORD, DB_NAME (postgres),
OPTION_A (Cats), OPTION_B (Dogs). The table votes(id, vote) is the worker's;
until it exists the counts are zero.
"""

import json
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import psycopg2.errors

OPTION_A = os.environ.get("OPTION_A", "Cats")
OPTION_B = os.environ.get("OPTION_B", "Dogs")
HOSTNAME = socket.gethostname()


def counts():
    """{"a": N, "b": M, "total": N+M}; a new connection each time, so a
    restarted database is no trouble."""
    conn = psycopg2.connect(
        host=os.environ.get("DB_HOST", "db"),
        user=os.environ.get("DB_USER", "postgres"),
        password=os.environ.get("DB_PASSWORD", "postgres"),
        dbname=os.environ.get("DB_NAME", "postgres"),
        connect_timeout=3,
    )
    try:
        with conn.cursor() as cur:
            try:
                cur.execute("SELECT vote, COUNT(id) FROM votes GROUP BY vote")
                rows = dict(cur.fetchall())
            except psycopg2.errors.UndefinedTable:
                rows = {}
    finally:
        conn.close()
    a, b = rows.get("a", 0), rows.get("b", 0)
    return {"a": a, "b": b, "total": a + b}


def page(c):
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>{OPTION_A} vs {OPTION_B} -- Result</title></head>
<body>
<h1>{OPTION_A} vs {OPTION_B}</h1>
<p id=a>{OPTION_A}: {c["a"]}</p>
<p id=b>{OPTION_B}: {c["b"]}</p>
<p id=total>{c["total"]} vote{"" if c["total"] == 1 else "s"}</p>
<p>Processed by container ID {HOSTNAME}</p>
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, body, ctype):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        try:
            c = counts()
        except psycopg2.Error as e:
            self.reply(503, f"the database is unavailable: {e}\n", "text/plain; charset=utf-8")
            return
        if self.path == "/api/results":
            self.reply(200, json.dumps(c) + "\n", "application/json")
        elif self.path == "/":
            self.reply(200, page(c), "text/html; charset=utf-8")
        else:
            self.reply(404, "not found\n", "text/plain; charset=utf-8")

    def log_message(self, fmt, *args):
        pass


def main():
    # PID 1 in a container ignores SIGTERM unless it handles it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer(("", int(os.environ.get("PORT", "80"))), Handler)
    server.daemon_threads = True
    print(f"result listening on port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
