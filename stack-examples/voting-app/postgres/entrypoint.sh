#!/bin/bash
# The postgres image's entry point (PID 1, as root):
#  - on first start (no PG_VERSION in $PGDATA, e.g. a new empty volume), runs
#    initdb as the postgres user with the superuser $POSTGRES_USER and the
#    password $POSTGRES_PASSWORD; local (socket) connections are trusted,
#    TCP connections from anywhere need the password (scram-sha-256);
#  - runs postgres in the foreground as the postgres user, listening on all
#    addresses;
#  - on SIGTERM (what `docker stop` and shoal send) asks postgres for a fast
#    shutdown (SIGINT: roll back open transactions, close sessions, write a
#    checkpoint) and exits with its status. postgres' own SIGTERM is a "smart"
#    shutdown that waits for every client (the worker) to leave.
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
PGDATA=${PGDATA:-/var/lib/postgresql/data}
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_PASSWORD=${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD: TCP connections need a password}
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

# Trapped from the start: PID 1 ignores a signal it has no handler for. Bash
# runs the handler once the foreground command (initdb) returns.
pid=
stopping=
on_stop() {
    stopping=1
    if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null || true; fi
}
trap on_stop TERM INT

mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "initdb: a new database cluster in $PGDATA (superuser $POSTGRES_USER)"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    chown postgres "$pwfile"
    as_postgres "$PGBIN/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
        -E UTF8 --no-locale --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
fi

if [ -n "$stopping" ]; then
    echo "stopped before postgres started"
    exit 0
fi
# Not through as_postgres: a function in the background runs in a subshell,
# and $! would be that shell instead of postgres.
setpriv --reuid=postgres --regid=postgres --init-groups "$PGBIN/postgres" -D "$PGDATA" \
    -c listen_addresses='*' -c unix_socket_directories=/run/postgresql &
pid=$!
# A signal that came between the two lines above found no pid yet.
if [ -n "$stopping" ]; then kill -INT "$pid" 2>/dev/null || true; fi
# `wait` returns early when a trapped signal arrives: wait again for the exit.
status=0
wait "$pid" || status=$?
while kill -0 "$pid" 2>/dev/null; do
    status=0
    wait "$pid" || status=$?
done
echo "postgres exited with status $status"
exit "$status"
