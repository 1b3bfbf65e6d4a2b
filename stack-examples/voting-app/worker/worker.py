"""worker: moves votes from the redis list "votes" into postgres.

Each vote {"voter_id": ..., "vote": ...} is upserted into the table
votes(id PRIMARY KEY, vote): a voter's later vote replaces the earlier one.
Redis and the database may start after the worker, go away and come back:
the worker retries its connections every second and never drops a vote it
has popped (it keeps it until the database stored it). Several workers may
run at once: a vote is popped by exactly one of them.

Environment: REDIS_HOST (default redis), DB_HOST (db), DB_USER, DB_PASSWORD,
DB_NAME (postgres).
"""

import json
import os
import signal
import sys
import time

import psycopg2
import redis

SCHEMA = """CREATE TABLE IF NOT EXISTS votes (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    vote VARCHAR(255) NOT NULL
)"""
UPSERT = """INSERT INTO votes (id, vote) VALUES (%s, %s)
    ON CONFLICT (id) DO UPDATE SET vote = EXCLUDED.vote"""


def log(msg):
    print(" ".join(str(msg).split()), flush=True)


def connect_db():
    """A connection with the votes table in place; retries until it has one."""
    while True:
        try:
            conn = psycopg2.connect(
                host=os.environ.get("DB_HOST", "db"),
                user=os.environ.get("DB_USER", "postgres"),
                password=os.environ.get("DB_PASSWORD", "postgres"),
                dbname=os.environ.get("DB_NAME", "postgres"),
                connect_timeout=3,
            )
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(SCHEMA)
            log("connected to the database")
            return conn
        except psycopg2.Error as e:
            # Two workers creating the table at once: one of them fails and
            # retries here, finding it made.
            log(f"waiting for the database: {e}")
            time.sleep(1)


def connect_redis():
    """A redis client that answers PING; retries until it has one."""
    client = redis.Redis(
        host=os.environ.get("REDIS_HOST", "redis"),
        socket_connect_timeout=2,
        socket_timeout=5,
    )
    while True:
        try:
            client.ping()
            log("connected to redis")
            return client
        except redis.RedisError as e:
            log(f"waiting for redis: {e}")
            time.sleep(1)


def store(conn, vote):
    with conn.cursor() as cur:
        cur.execute(UPSERT, (vote["voter_id"], vote["vote"]))


def main():
    # PID 1 in a container ignores SIGTERM unless it handles it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    conn = connect_db()
    queue = connect_redis()
    while True:
        try:
            item = queue.blpop("votes", timeout=1)
        except redis.RedisError as e:
            log(f"lost redis: {e}")
            time.sleep(1)
            queue = connect_redis()
            continue
        if item is None:
            continue
        try:
            vote = json.loads(item[1])
            valid = isinstance(vote, dict) and vote.get("voter_id")
            if not valid or vote.get("vote") not in ("a", "b"):
                raise ValueError('expected {"voter_id": ..., "vote": "a" or "b"}')
        except ValueError as e:
            log(f"dropping a malformed vote {item[1]!r}: {e}")
            continue
        while True:
            try:
                store(conn, vote)
                log(f"stored vote {vote['vote']} of {vote['voter_id']}")
                break
            except psycopg2.DataError as e:
                # A value the table cannot hold: retrying would not help.
                log(f"dropping vote {item[1]!r}: {e}")
                break
            except psycopg2.Error as e:
                log(f"lost the database: {e}")
                try:
                    conn.close()
                except psycopg2.Error:
                    pass
                time.sleep(1)
                conn = connect_db()


if __name__ == "__main__":
    main()
