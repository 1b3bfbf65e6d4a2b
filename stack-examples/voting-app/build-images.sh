#!/usr/bin/env bash
# Builds the voting app's five images locally, without any container registry:
#
#   shoal-vote/base:1      a Debian root file system made by debootstrap (the
#                          host's release, from the host's configured mirror)
#                          with redis-server, postgresql-15, python3,
#                          python3-redis and python3-psycopg2; imported once
#   shoal-vote/redis:1     }
#   shoal-vote/postgres:1  } tiny Dockerfiles FROM the base (legacy builder,
#   shoal-vote/vote:1      } offline), each copying its app directory
#   shoal-vote/worker:1    }
#   shoal-vote/result:1    }
#
# Every image carries the label io.shoal.vote.hash: a SHA-256 of everything it
# is built from. An image whose label matches is skipped, so a warm run only
# hashes files. The base image's hash covers the release, the package list and
# the function that builds it (not the rest of this script), so editing an app
# never re-runs debootstrap; the app images' hashes cover the base's hash,
# this whole script and their directory (contents, names, modes). A rebuilt
# image's predecessor is removed unless something still uses it. Downloaded
# .debs are kept in $CACHE_DIR/debs for the next cold build.
#
# Run as root with the Docker Engine running:  ./build-images.sh
# Environment: CACHE_DIR (default /var/cache/shoal-vote), TAG (default 1).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE_DIR=${CACHE_DIR:-/var/cache/shoal-vote}
TAG=${TAG:-1}
PREFIX=shoal-vote
LABEL=io.shoal.vote.hash
BASE_IMAGE=$PREFIX/base:$TAG
APPS=(redis postgres vote worker result)
# What the base root file system holds (debootstrap --variant=minbase adds
# the essential packages; util-linux's setpriv drops privileges for postgres).
PACKAGES=(redis-server postgresql-15 python3 python3-redis python3-psycopg2)

say() { printf '== %s\n' "$*"; }
die() { printf 'build-images.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: debootstrap needs it"
docker info >/dev/null 2>&1 || die "the Docker Engine is not reachable: start it first"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"

# The host's release codename (bookworm, ...).
host_release() {
    # shellcheck disable=SC1091
    (. /etc/os-release && echo "${VERSION_CODENAME:?/etc/os-release names no VERSION_CODENAME}")
}

# The host's Debian mirror: the first URI of a deb822 stanza (or a one-line
# `deb` entry) whose suites include the release itself, not -security.
host_mirror() {
    local release=$1 f uri
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk -v rel="$release" '
            /^[[:space:]]*$/ { if (u != "" && s) { print u; exit } u = ""; s = 0; next }
            /^URIs:/ { u = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == rel) s = 1 }
            END { if (u != "" && s) print u }
        ' /etc/apt/sources.list.d/debian.sources | head -n1)
        [ -n "$uri" ] && { echo "$uri"; return; }
    fi
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk -v rel="$release" '$1 == "deb" { o = ($2 ~ /^\[/) ? 1 : 0; if ($(3 + o) == rel) { print $(2 + o); exit } }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    die "no Debian mirror for $release in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
}

# The label of an image, or nothing if there is no such image.
image_hash() {
    docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true
}

# The id of an image, or nothing.
image_id() {
    docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true
}

# Removes an image this script built before under a tag it has now moved
# (no-op if it is still tagged or in use), so rebuilds leave nothing behind.
remove_replaced() {
    local old=$1 image=$2
    if [ -n "$old" ] && [ "$old" != "$(image_id "$image")" ]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
}

hash_stdin() { sha256sum | cut -d' ' -f1; }

# debootstrap a minbase root with PACKAGES and import it as BASE_IMAGE.
build_base() {
    local release=$1 mirror=$2 hash=$3 root
    root=$(mktemp -d /var/tmp/shoal-vote-root.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$root'" EXIT
    mkdir -p "$CACHE_DIR/debs"
    local include
    include=$(IFS=,; echo "${PACKAGES[*]}")
    say "debootstrap --variant=minbase --include=$include $release (mirror from the host's apt sources)"
    debootstrap --variant=minbase --cache-dir="$CACHE_DIR/debs" --include="$include" \
        "$release" "$root" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1 ||
        { tail -n 30 "$CACHE_DIR/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE_DIR/debootstrap.log)"; }
    # The package's own cluster is not used: the postgres image's entry
    # script runs initdb into its data volume. Package lists and .debs are
    # not needed at run time.
    rm -rf "$root/var/lib/postgresql/15" "$root/etc/postgresql/15" \
        "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
    say "importing $BASE_IMAGE ($(du -sh "$root" | cut -f1))"
    tar --numeric-owner -C "$root" -c . |
        docker import -c "LABEL $LABEL=$hash" -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$root"
    trap - EXIT
}

main() {
    local start=$SECONDS release mirror base_hash script_hash app app_hash image old old_base=
    mkdir -p "$CACHE_DIR"
    # One build at a time on this machine.
    exec 9>"$CACHE_DIR/lock"
    flock 9

    release=$(host_release)
    base_hash=$({ echo "$release"; echo "${PACKAGES[*]}"; declare -f build_base; } | hash_stdin)
    if [ "$(image_hash "$BASE_IMAGE")" = "$base_hash" ]; then
        say "$BASE_IMAGE is up to date (${base_hash:0:12})"
    else
        old_base=$(image_id "$BASE_IMAGE")
        mirror=$(host_mirror "$release")
        build_base "$release" "$mirror" "$base_hash"
        say "built $BASE_IMAGE (${base_hash:0:12}) after $((SECONDS - start))s"
    fi

    script_hash=$(hash_stdin <"$HERE/build-images.sh")
    for app in "${APPS[@]}"; do
        image=$PREFIX/$app:$TAG
        app_hash=$({
            echo "$base_hash $script_hash"
            # Contents, names and modes (an entry script must stay executable).
            (cd "$HERE/$app" && find . -type f -print0 | sort -z | xargs -0 sha256sum &&
                find . -type f -printf '%m %p\n' | sort)
        } | hash_stdin)
        if [ "$(image_hash "$image")" = "$app_hash" ]; then
            say "$image is up to date (${app_hash:0:12})"
            continue
        fi
        say "building $image (${app_hash:0:12})"
        old=$(image_id "$image")
        # The legacy builder (BuildKit may be absent from the engine) never
        # pulls a base it has; its output is shown only when it fails.
        if ! out=$(DOCKER_BUILDKIT=0 docker build --build-arg "BASE=$BASE_IMAGE" \
            --label "$LABEL=$app_hash" -t "$image" "$HERE/$app" 2>&1); then
            printf '%s\n' "$out" >&2
            die "docker build of $image failed"
        fi
        remove_replaced "$old" "$image"
    done
    # The previous base goes once no image of the previous build uses it.
    remove_replaced "$old_base" "$BASE_IMAGE"
    say "done in $((SECONDS - start))s: ${APPS[*]/#/$PREFIX/} (tag $TAG)"
}

main "$@"
