#!/usr/bin/env bash
# shoal quickstart: one node on this host (the embedded single-host default),
# a 3-replica web service published on 127.0.0.1:${PORT:-8080}, and a request
# to it. Run as root on a Debian machine with Docker running:
#
#     ./stack-examples/quickstart.sh
#
# No registry is needed: the example image is built here from busybox-static
# with `docker import`. Clean up with:
#     ./target/debug/shoal service rm hello && ./target/debug/shoal leave --force
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8080}
IMAGE=shoal-example/web:v1
SERVICE=hello

if [ "$(id -u)" -ne 0 ]; then
    echo "run as root: the node keeps its state in /var/lib/shoal and serves /run/shoal/shoal.sock" >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "the Docker Engine is not reachable: start it first" >&2
    exit 1
fi
for pkg in busybox-static curl; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
    fi
done

echo "== building shoal"
cargo build -p shoal-cli
SHOAL=$PWD/target/debug/shoal

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "== building $IMAGE from busybox-static"
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/bin" "$root/www" "$root/tmp"
    cp /bin/busybox "$root/bin/"
    for a in sh httpd hostname cat echo sleep; do ln -sf busybox "$root/bin/$a"; done
    echo "hello from shoal" >"$root/www/index.html"
    tar -C "$root" -c . | docker import \
        -c 'CMD ["/bin/sh","-c","hostname >> /www/index.html; exec /bin/httpd -f -p 80 -h /www"]' - "$IMAGE" >/dev/null
fi

echo "== starting the node"
if "$SHOAL" info >/dev/null 2>&1; then
    echo "a shoal daemon already runs here"
elif ! out=$("$SHOAL" init --pod-network-internal 2>&1); then
    if grep -q 'already part of a cluster' <<<"$out"; then
        "$SHOAL" daemon
    else
        echo "$out" >&2
        exit 1
    fi
else
    echo "$out"
fi

echo "== deploying $SERVICE"
if "$SHOAL" service inspect "$SERVICE" >/dev/null 2>&1; then
    echo "service $SERVICE exists already"
else
    # busybox httpd ignores SIGTERM: a short grace period keeps stops quick.
    "$SHOAL" service create --name "$SERVICE" --replicas 3 -p "$PORT:80" --stop-grace-period 1s "$IMAGE"
fi
"$SHOAL" service ls
"$SHOAL" service ps "$SERVICE"

echo "== curl http://127.0.0.1:$PORT/ (three times: answered by the replicas in turn)"
for _ in 1 2 3; do
    curl -fsS --retry 5 --retry-connrefused --retry-delay 1 "http://127.0.0.1:$PORT/"
done
