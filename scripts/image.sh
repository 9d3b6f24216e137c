#!/usr/bin/env bash
# Build ferry's container image without a container engine: an OCI image layout assembled
# from the release binary and what it needs at run time (its shared libraries, CA
# certificates, tzdata, a passwd entry for the non-root user 10001).
#
#   scripts/image.sh [--binary PATH] [OUT]
#
# OUT (default target/image) gets an OCI layout per repository, as ferry's `oci:` registries
# read them: OUT/ferry/{oci-layout,index.json,blobs/}, tagged with the version and `latest`.
# Push it with ferry itself, e.g. a policy whose source is `url = "oci:/abs/OUT"`, or with
# `skopeo copy oci:OUT/ferry:latest docker://registry.example/ferry:latest`.
#
# The layers are reproducible: sorted, owned by 0 (the state folder by 10001), every mtime
# SOURCE_DATE_EPOCH (default: the last commit's time), gzip without a timestamp.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
if [ "${1:-}" = "--binary" ]; then binary=$2; shift 2; fi
out=${1:-target/image}
if [ -z "$binary" ]; then
  echo "== building the release binary (a few minutes on a first build)" >&2
  cargo build --release --locked --bin ferry
  binary=target/release/ferry
fi
[ -x "$binary" ] || { echo "image: $binary is not an executable" >&2; exit 1; }
for tool in tar gzip sha256sum ldd; do
  command -v "$tool" >/dev/null || { echo "image: needs $tool" >&2; exit 1; }
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
source_url=$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) echo "image: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
layout="$out/ferry"
rm -rf "$layout"
mkdir -p "$layout/blobs/sha256"

# The run-time files, each tree one layer.
base="$work/base"; state="$work/state"; app="$work/app"
mkdir -p "$base/etc/ssl/certs" "$base/etc/ferry/policies" "$base/usr/share" "$base/tmp" \
  "$state/var/lib/ferry" "$app/usr/local/bin"
chmod 1777 "$base/tmp"
chmod 0700 "$state/var/lib/ferry"
# The binary's shared libraries, at the paths the dynamic linker looks for them.
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
  mkdir -p "$base$(dirname "$lib")"
  cp -L "$lib" "$base$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$base/etc/ssl/certs/"
cp -a /usr/share/zoneinfo "$base/usr/share/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nferry:x:10001:10001:ferry:/var/lib/ferry:/sbin/nologin\n' >"$base/etc/passwd"
printf 'root:x:0:\nferry:x:10001:\n' >"$base/etc/group"
install -m 0755 "$binary" "$app/usr/local/bin/ferry"
# Debug info is for a debugger, not a container (a dev build carries hundreds of MB of it).
if command -v strip >/dev/null; then strip --strip-debug "$app/usr/local/bin/ferry"; fi

blob() { # FILE -> its digest hex, the file moved into the layout
  local hex
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$layout/blobs/sha256/$hex"
  echo "$hex"
}
layers="" diff_ids=""
layer() { # DIR OWNER
  tar --sort=name --mtime="@$epoch" --owner="$2" --group="$2" --numeric-owner \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$1" -cf "$work/layer.tar" .
  local diff size hex
  diff=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  gzip -n "$work/layer.tar"
  size=$(stat -c %s "$work/layer.tar.gz")
  hex=$(blob "$work/layer.tar.gz")
  layers="$layers${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$hex\",\"size\":$size}"
  diff_ids="$diff_ids${diff_ids:+,}\"sha256:$diff\""
}
layer "$base" 0
layer "$state" 10001
layer "$app" 0

labels="\"org.opencontainers.image.title\":\"ferry\",\"org.opencontainers.image.description\":\"Policy-driven OCI image replication\",\"org.opencontainers.image.version\":\"$version\",\"org.opencontainers.image.revision\":\"$revision\",\"org.opencontainers.image.source\":\"$source_url\",\"org.opencontainers.image.licenses\":\"Apache-2.0\",\"org.opencontainers.image.created\":\"$created\""
printf '%s' "{\"created\":\"$created\",\"architecture\":\"$arch\",\"os\":\"linux\",\"config\":{\"User\":\"10001:10001\",\"Entrypoint\":[\"/usr/local/bin/ferry\"],\"Cmd\":[\"daemon\"],\"Env\":[\"PATH=/usr/local/bin\",\"FERRY_CONFIG=/etc/ferry/ferry.toml\",\"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\"],\"WorkingDir\":\"/var/lib/ferry\",\"ExposedPorts\":{\"9464/tcp\":{}},\"Labels\":{$labels}},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diff_ids]}}" >"$work/config.json"
config_size=$(stat -c %s "$work/config.json")
config_hex=$(blob "$work/config.json")
printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$config_hex\",\"size\":$config_size},\"layers\":[$layers],\"annotations\":{$labels}}" >"$work/manifest.json"
manifest_size=$(stat -c %s "$work/manifest.json")
manifest_hex=$(blob "$work/manifest.json")
entry() { echo "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest_hex\",\"size\":$manifest_size,\"annotations\":{\"org.opencontainers.image.ref.name\":\"$1\"}}"; }
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[$(entry "$version"),$(entry latest)]}" >"$layout/index.json"
echo "image: $layout (ferry:$version and ferry:latest, sha256:$manifest_hex)"
