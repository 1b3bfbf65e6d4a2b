#!/usr/bin/env bash
# Builds the node image of shoal's multi-host tests: a Debian root file system
# (debootstrap --variant=minbase, the host's own Debian release, so that the
# host-built `shoal` binary, bind-mounted into nodes, finds the same glibc)
# with the packages listed in ./packages, imported as
#
#     shoal-test/node:<hash>   (and tagged shoal-test/node:latest)
#
# where <hash> is a content hash of this script, the package list, the node's
# command (./node-init), the release and the architecture, also kept in the
# image's label io.shoal.test.hash. When an image with that hash exists the
# build is skipped, so a warm machine pays only a `docker image inspect`. The
# last line on stdout is the image reference; progress goes to stderr.
#
# The Debian mirror is the one the host's apt uses, read at run time from
# /etc/apt/sources.list.d/debian.sources (or /etc/apt/sources.list);
# SHOAL_NODE_IMAGE_MIRROR overrides it. Runs as root (debootstrap needs it).
# Concurrent runs on one machine serialize on a lock file.
#
# Usage: tests/node-image/build.sh [--force]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=shoal-test/node
label=io.shoal.test.hash
force=0
[ "${1:-}" = "--force" ] && force=1

log() { printf '[node-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: debootstrap needs it"
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker Engine is unreachable"

# shellcheck disable=SC1091
release=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$release" ] || die "/etc/os-release names no VERSION_CODENAME: not a Debian host?"
arch=$(dpkg --print-architecture)

# Packages: ./packages without comments and blank lines.
mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$here/packages")
[ "${#pkgs[@]}" -gt 0 ] || die "$here/packages lists no package"

hash=$( { cat "$here/build.sh" "$here/packages" "$here/node-init"; echo "$release $arch"; } | sha256sum | cut -c1-16)
image="$repo:$hash"

have_image() {
    [ "$(docker image inspect --format "{{index .Config.Labels \"$label\"}}" "$image" 2>/dev/null)" = "$hash" ]
}

# Builds of other hashes go once this one exists: each is ~400 MB, and a
# machine that rebuilds after every change to this directory would keep them
# all. One that a container still uses stays (docker rmi refuses it).
prune_older() {
    local old
    for old in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo"); do
        case "$old" in
            "$image" | "$repo:latest" | *"<none>"*) continue ;;
        esac
        if docker rmi "$old" >/dev/null 2>&1; then
            log "removed the older build $old"
        fi
    done
}

if [ "$force" -eq 0 ] && have_image; then
    log "$image is up to date (hash $hash)"
    prune_older
    echo "$image"
    exit 0
fi

# One build at a time on this machine; whoever waited finds the image built.
lock="${TMPDIR:-/tmp}/shoal-node-image.lock"
exec 9>"$lock"
if ! flock -n 9; then
    log "another build holds $lock: waiting"
    flock 9
fi
if [ "$force" -eq 0 ] && have_image; then
    log "$image was built meanwhile"
    echo "$image"
    exit 0
fi

command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install -y debootstrap)"

# The host's Debian mirror: the first URI of a deb822 stanza (or a one-line
# entry) serving the release's main suite.
mirror_of_host() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [ -r "$f" ]; then
        awk -v rel="$release" '
            function flush() { if (deb && suite && uri != "" && !found) { print uri; found = 1 }
                               deb = 0; suite = 0; uri = "" }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == rel) suite = 1 }
            tolower($1) == "uris:" { uri = $2 }
            END { flush() }' "$f"
    fi
    local l
    for l in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$l" ] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$l" |
            awk -v rel="$release" '$1 == "deb" && $3 == rel { print $2 }'
    done
}
mirror=${SHOAL_NODE_IMAGE_MIRROR:-$(mirror_of_host | head -n1)}
[ -n "$mirror" ] || die "no Debian mirror for $release in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list (set SHOAL_NODE_IMAGE_MIRROR)"

work=$(mktemp -d /var/tmp/shoal-node-image.XXXXXX)
root="$work/root"
cleanup() {
    # debootstrap mounts /proc and /sys in the target while it installs: an
    # interrupted run can leave them, and rm must never walk into them.
    local m
    for m in $(awk -v r="$root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$SECONDS
log "building $image: debootstrap $release ($arch, minbase) with ${pkgs[*]}"
include=$(IFS=,; echo "${pkgs[*]}")
if ! debootstrap --variant=minbase --arch="$arch" --components=main \
        --include="$include" "$release" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 40 "$work/debootstrap.log" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 40 "$root/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (log above)"
fi
log "debootstrap done in $((SECONDS - start))s"

# What a container does not need: downloaded packages, apt lists, docs.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/log/*.log "$root/debootstrap"
# The node's command runs dockerd in the foreground (its log is `docker logs
# NODE`); the shoal binary is bind-mounted at run time.
install -m 0755 "$here/node-init" "$root/usr/local/sbin/shoal-node-init"
tar -C "$root" --numeric-owner -c . |
    docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["/usr/local/sbin/shoal-node-init"]' \
        -c "LABEL $label=$hash" \
        -c "LABEL io.shoal.test.node-image.release=$release" \
        - "$image" >/dev/null
docker tag "$image" "$repo:latest"
prune_older
size=$(docker image inspect --format '{{.Size}}' "$image")
log "built $image in $((SECONDS - start))s ($((size / 1000000)) MB)"
echo "$image"
