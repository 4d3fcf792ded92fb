#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager v1.20.2 for the kube sandbox.
#
# They come from Debian 12's own `kubernetes` source package (it vendors its Go modules, so the
# build needs nothing beyond the Debian mirror) built with Debian 12's Go 1.19, the way its
# debian/rules builds them. Only the two binaries are kept, in $CACHE/bin, outside the repo.
#
# Both are named explicitly, so Debian 12 and 13 build the same thing: Debian 13's `kubernetes`
# source is kubectl only (1.32), and its Go (1.24) is five releases past the one Debian built
# this tree with, in GOPATH mode with vendored code that predates it. On a machine that
# is not Debian 12, bookworm is added as an apt source pinned low (priority 100), so it only
# supplies what exists nowhere else here (golang-1.19) and never replaces a package of the machine.
#
# One vendored Go package is replaced before the build (see patch_vendor): the tree as Debian
# ships it crashes the API server on any custom resource write when built with Go 1.19.
#
# Exit codes: 0 binaries ready, 3 cannot build on this machine (not Debian, or not root).
set -euo pipefail

KUBE_VERSION="v1.20.2"
# The cache's name changes with what the build makes (here and in CACHE_NAME of
# src/wavegate/sandbox/controlplane.py), so a machine holding older binaries builds again.
# -2: reflect2 1.0.2 vendored.
CACHE="${WAVEGATE_KUBE_CACHE:-$HOME/.cache/wavegate/kube-$KUBE_VERSION-2}"
BIN="$CACHE/bin"
BINARIES=(kube-apiserver kube-controller-manager)
KUBE_SOURCE_VERSION="1.20.5+really1.20.2-1.1+deb12u1"  # Debian 12's kubernetes source
GO_PACKAGE="golang-1.19-go"  # the Go Debian 12 built that source with
GO_BIN="/usr/lib/go-1.19/bin"
# Debian 12's source of github.com/modern-go/reflect2 1.0.2 (see patch_vendor), the version
# named so that Debian 13 installs the very same files (from the bookworm entry if need be).
REFLECT2_PACKAGE="golang-github-modern-go-reflect2-dev=1.0.2-2"
REFLECT2_SOURCE="/usr/share/gocode/src/github.com/modern-go/reflect2"

log() { echo "build-kube-sandbox: $*" >&2; }

binaries_work() {
    local name
    for name in "${BINARIES[@]}"; do
        [[ -x "$BIN/$name" ]] && "$BIN/$name" --version >/dev/null 2>&1 || return 1
    done
}

check_can_build() {
    if ! grep -qx 'ID=debian' /etc/os-release 2>/dev/null; then
        echo "build-kube-sandbox: not a Debian machine, cannot build here"; exit 3
    fi
    if [[ "$(id -u)" != 0 ]]; then
        echo "build-kube-sandbox: needs root for apt-get, cannot build here"; exit 3
    fi
}

# The etcd the sandbox runs is Debian's, and so is the kubectl the e2e tests cross-check with
# (a client no one here wrote); the control plane binaries are cached, these are not.
ensure_runtime_packages() {
    local missing=()
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v kubectl >/dev/null || missing+=(kubernetes-client)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    check_can_build
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The Debian mirror this machine already uses (deb822 or one-line sources), so the bookworm entry
# goes through the same one; WAVEGATE_DEBIAN_MIRROR overrides it.
debian_mirror() {
    local uri
    uri="$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        grep -oE '(https?|file):[^ ]*/debian/?( |$)' | head -n1 | tr -d ' ')" || true
    echo "${WAVEGATE_DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

machine_suite() { (. /etc/os-release && echo "${VERSION_CODENAME:-}"); }

archive_keyring() {
    local key
    for key in /usr/share/keyrings/debian-archive-keyring.pgp \
               /usr/share/keyrings/debian-archive-keyring.gpg; do
        [[ -f "$key" ]] && { echo "$key"; return 0; }
    done
    log "no Debian archive keyring in /usr/share/keyrings"; exit 1
}

# Our own apt entry for Debian 12 (the machine's sources are not ours to edit): deb-src for the
# kubernetes source everywhere; elsewhere than bookworm also deb for golang-1.19, pinned low.
add_bookworm_sources() {
    local list=/etc/apt/sources.list.d/wavegate-src.sources
    local pin=/etc/apt/preferences.d/wavegate-bookworm types="deb-src"
    if [[ "$(machine_suite)" != bookworm ]]; then
        types="deb deb-src"
        printf 'Package: *\nPin: release n=bookworm\nPin-Priority: 100\n' >"$pin"
    fi
    printf 'Types: %s\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: %s\n' \
        "$types" "$(debian_mirror)" "$(archive_keyring)" >"$list"
    log "wrote $list ($types, bookworm)"
}

install_build_deps() {
    add_bookworm_sources
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        "$GO_PACKAGE" "$REFLECT2_PACKAGE" etcd-server rsync jq dpkg-dev make >/dev/null
}

fetch_source() {
    rm -rf "$CACHE/src"
    mkdir -p "$CACHE/src"
    (cd "$CACHE/src" && apt-get source -qq "kubernetes=$KUBE_SOURCE_VERSION" >/dev/null)
    find "$CACHE/src" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1
}

# Kubernetes 1.20 vendors github.com/modern-go/reflect2 1.0.1 (under json-iterator), which
# reaches the runtime's reflect.mapiterinit through go:linkname with its pre-Go-1.18 signature;
# Go 1.18 made the caller pass the iterator in, so under Go 1.19 the runtime fills a garbage
# pointer and the API server dies (SIGSEGV in runtime.mapiternext) the first time it encodes a
# map that way: on every custom resource create (apiextensions' GetObjectMeta). reflect2 1.0.2
# is upstream's fix, with the same API; Debian ships its source.
patch_vendor() {
    local vendored="$1/vendor/github.com/modern-go/reflect2"
    if [[ ! -f "$REFLECT2_SOURCE/go_above_118.go" ]]; then
        log "no reflect2 1.0.2 in $REFLECT2_SOURCE"; exit 1
    fi
    rm -rf "$vendored"
    cp -r "$REFLECT2_SOURCE" "$vendored"
    log "vendored reflect2 replaced by $REFLECT2_PACKAGE"
}

# Mirrors debian/rules: make from the tree with GOPATH=$tree/.go, its .go/src/k8s.io/kubernetes
# symlink and CGO off (hack/lib/init.sh itself turns Go modules off and builds from vendor/).
# KUBE_GIT_VERSION is ours: the tarball has no .git, so without it the binaries call themselves
# v0.0.0-master+faecb196815e2, which tells a client nothing about the API it talks to.
build() {
    local tree="$1"
    mkdir -p "$tree/.go/src/k8s.io"
    [[ -L "$tree/.go/src/k8s.io/kubernetes" ]] || ln -s ../../.. "$tree/.go/src/k8s.io/kubernetes"
    (cd "$tree" && PATH="$GO_BIN:$PATH" GOPATH="$tree/.go" GOCACHE="$CACHE/src/gocache" CGO_ENABLED=0 \
        KUBE_GIT_TREE_STATE=clean KUBE_GIT_VERSION="$KUBE_VERSION" \
        make WHAT="cmd/kube-apiserver cmd/kube-controller-manager")
}

install_binaries() {
    local tree="$1" name
    mkdir -p "$BIN"
    for name in "${BINARIES[@]}"; do
        install -m 0755 "$tree/_output/bin/$name" "$BIN/$name"
    done
}

main() {
    if binaries_work; then
        ensure_runtime_packages
        echo "kube sandbox binaries ready in $BIN"
        exit 0
    fi
    check_can_build
    local start=$SECONDS tree
    install_build_deps
    tree="$(fetch_source)"
    patch_vendor "$tree"
    log "building in $tree"
    build "$tree"
    install_binaries "$tree"
    rm -rf "$CACHE/src"
    binaries_work || { log "built binaries do not run"; exit 1; }
    ensure_runtime_packages
    echo "kube sandbox binaries built in $((SECONDS - start)) s, ready in $BIN"
}

main "$@"
