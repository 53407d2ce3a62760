#!/usr/bin/env bash
# Make a local Debian bookworm + Python base image for `podman build`, on machines with no
# Docker engine and no reachable image registry, but with Debian's and PyPI's mirrors.
# (The workspace tool /work/shared/tools/container-base, kept here so that a fresh clone
# in CI has it; plus a lock, as CI runs on one machine may share the cache folder.)
#   usage: scripts/container/base-image.sh CACHE_DIR [IMAGE]   (IMAGE: localhost/bookworm-py:latest)
#   then:  source CACHE_DIR/podman.env
#          podman build --build-arg BASE_IMAGE=localhost/bookworm-py:latest -t IMG .
# CACHE_DIR keeps podman's storage (images and build layers) between runs: an existing
# IMAGE is reused (~1 s); making it takes ~1-3 min and ~200 MB. Delete the folder to start
# over (e.g. to pick up Debian security updates).
# Seen on these machines: crun fails (hybrid cgroups) -> runc; podman's default ulimits
# exceed the hard limits -> set them explicitly; outbound TLS is re-signed by a proxy ->
# the host's extra CA certificates go into the base image.
set -euo pipefail
W=$(mkdir -p "$1" && cd "$1" && pwd); IMAGE=${2:-localhost/bookworm-py:latest}
export DEBIAN_FRONTEND=noninteractive
exec 9>"$W/.lock"; flock 9
if ! { command -v podman && command -v debootstrap && command -v runc; } >/dev/null; then
  apt-get update -q >/dev/null; apt-get install -y -q podman buildah debootstrap runc >/dev/null
fi
mkdir -p "$W/storage" "$W/run"
cat > "$W/storage.conf" <<C
[storage]
driver = "overlay"
graphroot = "$W/storage"
runroot = "$W/run"
C
cat > "$W/containers.conf" <<C
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
C
echo "export CONTAINERS_STORAGE_CONF=$W/storage.conf CONTAINERS_CONF=$W/containers.conf" \
  > "$W/podman.env"
source "$W/podman.env"
if podman image exists "$IMAGE"; then echo "$IMAGE exists"; exit 0; fi
# the Debian mirror apt itself uses (first non-comment URIs/deb line naming a .../debian archive)
mirror=$(grep -rhE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
  2>/dev/null | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
[ -n "$mirror" ] || { echo "no Debian mirror found in apt's sources" >&2; exit 1; }
rm -rf "$W/rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$W/rootfs" "$mirror" >/dev/null
cp /usr/local/share/ca-certificates/*.crt "$W/rootfs/usr/local/share/ca-certificates/" \
  2>/dev/null || true
chroot "$W/rootfs" update-ca-certificates >/dev/null 2>&1
chroot "$W/rootfs" apt-get clean; rm -rf "$W/rootfs/var/lib/apt/lists/"*
tar -C "$W/rootfs" -c . | podman import -q --change 'CMD ["/bin/bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - \
  "$IMAGE" >/dev/null
rm -rf "$W/rootfs"
echo "built $IMAGE"
