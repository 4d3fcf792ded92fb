#!/usr/bin/env bash
# Install headless Chromium from Debian's packages, for the tests that open the HTML report in
# a real browser. Idempotent: apt-get runs only when a package is missing.
#
# Exit codes: 0 chromium ready, 3 cannot install on this machine (not Debian, or not root);
# the browser tests then skip, except under CI=true.
set -euo pipefail

PACKAGES=(chromium chromium-driver)

log() { echo "install-browser: $*" >&2; }

browser_works() {
    [[ -x /usr/bin/chromium ]] && command -v chromedriver >/dev/null
}

check_can_install() {
    if ! grep -qx 'ID=debian' /etc/os-release 2>/dev/null; then
        echo "install-browser: not a Debian machine, cannot install chromium here"; exit 3
    fi
    if [[ "$(id -u)" != 0 ]]; then
        echo "install-browser: needs root for apt-get, cannot install chromium here"; exit 3
    fi
}

if browser_works; then
    exit 0
fi
check_can_install
log "installing ${PACKAGES[*]} from Debian"
# Other bootstraps (the kube sandbox build) may hold the dpkg lock: wait for it, not fail.
apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${PACKAGES[@]}" >/dev/null
browser_works || { log "chromium did not install"; exit 1; }
log "ready: $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
