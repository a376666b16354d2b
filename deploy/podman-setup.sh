#!/usr/bin/env bash
# Make podman usable on a visact machine (Debian bookworm, root, no image registry), idempotently:
#   1. apt-get install podman runc debootstrap       (only what is missing)
#   2. write a containers.conf: runc, and no default ulimits (else builds fail with
#      "setrlimit ... Operation not permitted" here)
#   3. debootstrap a minimal Debian and import it as localhost/debian-base:bookworm (if absent),
#      the base image the tests build on, since no public image can be pulled here.
# This is the recipe that was seen working on these machines (rootful, no systemd, nested).
#
# Usage (as root):
#   eval "$(bash deploy/podman-setup.sh)"      # progress on stderr, `export ...` lines on stdout
#   . deploy/podman-setup.sh                   # or source it: exports into the current shell
# Environment:
#   VISACT_CONTAINERS_CONF  where to write the containers.conf (default /etc/containers/visact.conf)
#   VISACT_BASE_IMAGE       the local base image name       (default localhost/debian-base:bookworm)
#   VISACT_DEBIAN_SUITE     the Debian suite to debootstrap  (default bookworm)
#   VISACT_DEBIAN_MIRROR    the mirror for debootstrap       (default: the first deb.debian.org-like
#                           URI in the host's apt sources, else http://deb.debian.org/debian)

_visact_podman_setup() {
  set -euo pipefail
  local conf=${VISACT_CONTAINERS_CONF:-/etc/containers/visact.conf}
  local image=${VISACT_BASE_IMAGE:-localhost/debian-base:bookworm}
  local suite=${VISACT_DEBIAN_SUITE:-bookworm}
  local start=$SECONDS
  say() { echo "podman-setup: $*" >&2; }

  if [ "$(id -u)" -ne 0 ]; then
    say "must run as root (apt-get, debootstrap and rootful podman)"
    return 1
  fi

  # 1. packages
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  else
    say "podman, runc and debootstrap already installed"
  fi

  # 2. containers.conf (rewritten every time: cheap, and repairs a stale one)
  mkdir -p "$(dirname "$conf")"
  printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' >"$conf.tmp"
  mv "$conf.tmp" "$conf"
  export CONTAINERS_CONF=$conf
  say "wrote $conf"

  # 3. the local Debian base image
  if podman image exists "$image"; then
    say "$image already present"
  else
    local mirror=${VISACT_DEBIAN_MIRROR:-}
    if [ -z "$mirror" ]; then
      mirror=$(grep -hoE '^URIs:[[:space:]]*[^[:space:]]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        head -n1 | awk '{print $2}') || true
      mirror=${mirror:-http://deb.debian.org/debian}
    fi
    local rootfs
    rootfs=$(mktemp -d /var/tmp/visact-rootfs.XXXXXX)
    say "debootstrap --variant=minbase $suite from $mirror (about 30 s)"
    if ! debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
      tail -n 30 "$rootfs.log" >&2
      rm -rf "$rootfs" "$rootfs.log"
      say "debootstrap failed"
      return 1
    fi
    # Keep the image small and free of the host's apt state.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import - "$image" >&2
    rm -rf "$rootfs" "$rootfs.log"
    say "imported $image"
  fi

  say "ready in $((SECONDS - start)) s; podman $(podman version --format '{{.Client.Version}}')"
  say "build:  podman build --network host --format docker --build-arg BASE=$image -f deploy/env-server.Containerfile -t visact-env-server ."
  say "run:    podman run --rm --network host --ulimit host visact-env-server --env numberline --port 50051"
  echo "export CONTAINERS_CONF=$conf"
  echo "export VISACT_BASE_IMAGE=$image"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # Sourced: run in a child bash (so `set -e` cannot end the caller's shell) and take its exports.
  eval "$(bash "${BASH_SOURCE[0]}")"
else
  _visact_podman_setup
fi
