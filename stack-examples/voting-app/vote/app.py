"""vote: a page with two options; a vote is pushed to the redis list "votes".

GET /        the ballot (and which container answered)
POST /       form field vote=a|b: pushes {"voter_id": ..., "vote": ...} to
             the redis list "votes" and shows the ballot with the choice made

A voter is known by the cookie voter_id (set on the first visit), so a
voter's later vote replaces the earlier one once the worker has stored it.
Environment: REDIS_HOST (default redis), OPTION_A (Cats), OPTION_B (Dogs).
"""

import html
import http.cookies
import json
import os
import re
import secrets
import signal
import socket
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis

OPTION_A = os.environ.get("OPTION_A", "Cats")
OPTION_B = os.environ.get("OPTION_B", "Dogs")
HOSTNAME = socket.gethostname()
# What a voter id cookie may hold; anything else gets a new id.
VOTER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
REDIS = redis.Redis(
    host=os.environ.get("REDIS_HOST", "redis"),
    socket_connect_timeout=2,
    socket_timeout=2,
)


def page(vote):
    chosen = {"a": OPTION_A, "b": OPTION_B}.get(vote)
    status = f"<p id=voted>You voted for {html.escape(chosen)}</p>" if chosen else ""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{OPTION_A} vs {OPTION_B}!</title></head>
<body>
<h1>{OPTION_A} vs {OPTION_B}!</h1>
<form method="POST" action="/">
<button name="vote" value="a">{OPTION_A}</button>
<button name="vote" value="b">{OPTION_B}</button>
</form>
{status}
<p>(Tip: you can change your vote)</p>
<p>Processed by container ID {HOSTNAME}</p>
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    def voter_id(self):
        cookies = http.cookies.SimpleCookie()
        try:
            cookies.load(self.headers.get("Cookie", ""))
        except http.cookies.CookieError:
            pass
        if "voter_id" in cookies and VOTER_ID.fullmatch(cookies["voter_id"].value):
            return cookies["voter_id"].value, False
        return secrets.token_hex(8), True

    def reply(self, code, body, voter_id=None):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if voter_id:
            self.send_header("Set-Cookie", f"voter_id={voter_id}; Path=/")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        voter_id, new = self.voter_id()
        self.reply(200, page(None), voter_id if new else None)

    def do_POST(self):
        voter_id, new = self.voter_id()
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        vote = (form.get("vote") or [""])[0]
        if vote not in ("a", "b"):
            self.reply(400, f"vote must be a or b, not {html.escape(vote)!r}\n")
            return
        try:
            REDIS.rpush("votes", json.dumps({"voter_id": voter_id, "vote": vote}))
        except redis.RedisError as e:
            self.reply(503, f"cannot store the vote: redis is unavailable ({html.escape(str(e))})\n")
            return
        print(f"vote {vote} from {voter_id}", flush=True)
        self.reply(200, page(vote), voter_id if new else None)

    def log_message(self, fmt, *args):
        pass


def main():
    # PID 1 in a container ignores SIGTERM unless it handles it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer(("", int(os.environ.get("PORT", "80"))), Handler)
    server.daemon_threads = True
    print(f"vote listening on port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
