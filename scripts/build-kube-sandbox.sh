#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager v1.20.2 for the kube sandbox.
#
# They come from Debian's own `kubernetes` source package (it vendors its Go modules, so the
# build needs nothing beyond the Debian mirror) built with Debian's golang-go, the way its
# debian/rules builds them. Only the two binaries are kept, in $CACHE/bin, outside the repo.
#
# Exit codes: 0 binaries ready, 3 cannot build on this machine (not Debian, or not root).
set -euo pipefail

CACHE="${WAVEGATE_KUBE_CACHE:-$HOME/.cache/wavegate/kube-v1.20.2}"
BIN="$CACHE/bin"
BINARIES=(kube-apiserver kube-controller-manager)
KUBE_VERSION="v1.20.2"

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

# A deb-src twin of the machine's main Debian entry (deb822), so `apt-get source` uses the same
# mirror and suites as the binary packages. Written as its own file: debian.sources is not ours.
add_deb_src() {
    local main=/etc/apt/sources.list.d/debian.sources src=/etc/apt/sources.list.d/wavegate-src.sources
    [[ -f "$src" ]] && return 0
    if [[ ! -f "$main" ]]; then
        log "no $main (deb822); add a deb-src line by hand"; exit 1
    fi
    # Copy the stanza of the main archive (URIs ending in /debian, not debian-security).
    awk 'BEGIN{RS=""; FS="\n"} /(^|\n)URIs:[^\n]*\/debian\/?(\n| |$)/ && !done {
            done = 1
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^Types:/) print "Types: deb-src"
                else if ($i !~ /^#/) print $i
            }
        }' "$main" >"$src"
    log "added $src"
}

install_build_deps() {
    add_deb_src
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        golang-go etcd-server rsync jq dpkg-dev >/dev/null
}

fetch_source() {
    rm -rf "$CACHE/src"
    mkdir -p "$CACHE/src"
    (cd "$CACHE/src" && apt-get source -qq kubernetes >/dev/null)
    find "$CACHE/src" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1
}

# Mirrors debian/rules: make from the tree with GOPATH=$tree/.go, its .go/src/k8s.io/kubernetes
# symlink and CGO off (hack/lib/init.sh itself turns Go modules off and builds from vendor/).
# KUBE_GIT_VERSION is ours: the tarball has no .git, so without it the binaries call themselves
# v0.0.0-master+faecb196815e2, which tells a client nothing about the API it talks to.
build() {
    local tree="$1"
    mkdir -p "$tree/.go/src/k8s.io"
    [[ -L "$tree/.go/src/k8s.io/kubernetes" ]] || ln -s ../../.. "$tree/.go/src/k8s.io/kubernetes"
    (cd "$tree" && GOPATH="$tree/.go" GOCACHE="$CACHE/src/gocache" CGO_ENABLED=0 \
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
    log "building in $tree"
    build "$tree"
    install_binaries "$tree"
    rm -rf "$CACHE/src"
    binaries_work || { log "built binaries do not run"; exit 1; }
    ensure_runtime_packages
    echo "kube sandbox binaries built in $((SECONDS - start)) s, ready in $BIN"
}

main "$@"
