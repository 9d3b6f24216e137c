#!/usr/bin/env bash
# A real replication demo, end to end, on this machine:
#   1. starts three CNCF Distribution registries on free loopback ports (central, edge-paris,
#      edge-lyon), with their data in a temporary folder;
#   2. pushes generated images into central: base images, apps (some multi-arch, signed),
#      and an experimental app the policy excludes;
#   3. runs `ferry validate`, `ferry plan` and `ferry sync` with policies/edge-sync.toml;
#   4. shows that every tag has the same digest on both edges (multi-arch images filtered to
#      the edge's platforms, as the policy asks), then syncs again (nothing to do).
# Needs: the Rust toolchain, and `docker-registry`, `protoc` and `curl` (installed with
# apt-get when run as root). Any check that fails ends the demo with "demo: FAILED", exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "demo: FAILED: $*" >&2; exit 1; }
command -v cargo >/dev/null || fail "needs the Rust toolchain (cargo): https://rustup.rs"
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v protoc >/dev/null || need+=(protobuf-compiler)   # building ferry compiles etcd's API
command -v curl >/dev/null || need+=(curl)                   # the digest checks below
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    fail "needs ${need[*]}: sudo apt-get install -y ${need[*]}"
  fi
fi

echo "== building ferry (a first build takes a few minutes; cargo shows its progress)"
cargo build --bin ferry --example corpus
TARGET=$(realpath "${CARGO_TARGET_DIR:-target}")
FERRY="$TARGET/debug/ferry"
CORPUS="$TARGET/debug/examples/corpus"

WORK=$(mktemp -d /tmp/ferry-demo.XXXXXX)
# Registries start inside $(...), a subshell, so their PIDs are kept in files, not a variable.
cleanup() {
  for f in "$WORK"/*/pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Start a registry on a free port; print its URL once it listens.
start_registry() {
  local name=$1 dir="$WORK/$1"
  mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<YML
version: 0.1
log: {level: info, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $dir/data}, delete: {enabled: true}}
http: {addr: "127.0.0.1:0", secret: ferry-demo-$name}
YML
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 100); do
    local addr
    addr=$(grep -o 'listening on [0-9.:]*' "$dir/log" | head -1 | cut -d' ' -f3 || true)
    if [ -n "$addr" ]; then echo "http://$addr"; return; fi
    sleep 0.1
  done
  echo "demo: registry $name did not start:" >&2; cat "$dir/log" >&2; exit 1
}

echo "== starting registries"
CENTRAL=$(start_registry central)
PARIS=$(start_registry edge-paris)
LYON=$(start_registry edge-lyon)
echo "central    $CENTRAL"; echo "edge-paris $PARIS"; echo "edge-lyon  $LYON"

echo "== pushing images into central"
"$CORPUS" --registry "$CENTRAL" --prefix base/os --repos 2 --tags 2 --index-every 2 --sign --seed 1
"$CORPUS" --registry "$CENTRAL" --prefix apps/shop/web --repos 3 --tags 3 --index-every 3 --sign --seed 2
"$CORPUS" --registry "$CENTRAL" --prefix apps/experimental/probe --repos 1 --tags 1 --seed 3

mkdir -p "$WORK/ferry/policies"
cp policies/edge-sync.toml "$WORK/ferry/policies/"
cat >"$WORK/ferry/ferry.toml" <<TOML
[daemon]
state_dir = "state"
policies = "policies"
chunk_size = "1MiB"

[registries.central]
url = "$CENTRAL"

[registries.edge-paris]
url = "$PARIS"

[registries.edge-lyon]
url = "$LYON"
TOML
export FERRY_CONFIG="$WORK/ferry/ferry.toml"

echo; echo "== ferry validate"; "$FERRY" validate
echo; echo "== ferry plan"; "$FERRY" plan
echo; echo "== ferry sync"; "$FERRY" sync -q

echo; echo "== result: tags and digests, central vs edge-paris vs edge-lyon"
accept='application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json,application/vnd.docker.distribution.manifest.list.v2+json'
digest() { { curl -sfI -H "Accept: $accept" "$1/v2/$2/manifests/$3" || true; } | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}'; }
# Children of an index (0 for a single-platform image).
children() { curl -sf -H "Accept: $accept" "$1/v2/$2/manifests/$3" | grep -o '"platform"' | wc -l; }
mismatch=0 checked=0 excluded=0
catalog=$(curl -sf "$CENTRAL/v2/_catalog") || fail "central's catalog could not be read"
for repo in $(echo "$catalog" | tr -d '{}[]"' | sed 's/repositories://' | tr ',' ' '); do
  tags=$(curl -sf "$CENTRAL/v2/$repo/tags/list") || fail "central's tags of $repo could not be read"
  for tag in $(echo "$tags" | sed 's/.*"tags":\[//; s/\].*//' | tr -d '"' | tr ',' ' '); do
    checked=$((checked + 1))
    c=$(digest "$CENTRAL" "$repo" "$tag"); p=$(digest "$PARIS" "$repo" "$tag"); l=$(digest "$LYON" "$repo" "$tag")
    tag_short=$tag; [ ${#tag} -gt 24 ] && tag_short="${tag:0:21}..."
    if [[ "$repo" == apps/experimental/* ]]; then
      if [ -z "$p$l" ]; then state="excluded by the policy: not copied"; excluded=$((excluded + 1)); else state="COPIED BUT EXCLUDED"; mismatch=1; fi
    elif [ -n "$c" ] && [ "$c" = "$p" ] && [ "$c" = "$l" ]; then
      state="same digest on both edges"
    elif [ -n "$p" ] && [ "$p" = "$l" ] && [ "$(children "$CENTRAL" "$repo" "$tag")" = 3 ] && [ "$(children "$PARIS" "$repo" "$tag")" = 2 ]; then
      state="multi-arch: filtered to linux/amd64 + linux/arm/v7 (${p:0:19})"
    else
      state="MISMATCH (paris ${p:-none}, lyon ${l:-none})"; mismatch=1
    fi
    printf '  %-52s %-19s %s\n' "$repo:$tag_short" "${c:0:19}" "$state"
  done
done

# 14 image tags were pushed (and their signatures): a table with fewer checked nothing.
[ "$checked" -ge 14 ] || fail "only $checked tags were checked; expected at least 14"
[ "$excluded" -ge 1 ] || fail "the excluded repository was not seen"
[ "$mismatch" = 0 ] || fail "a tag differs between central and the edges (above)"

echo; echo "== ferry sync again (nothing changed: no blob or manifest is written)"
again=$("$FERRY" sync -q) || fail "the second sync failed"
echo "$again"
echo "$again" | grep -q "0 manifests written; blobs: 0 uploaded" || fail "the second sync wrote something"
echo; echo "== ferry status"; "$FERRY" status || fail "ferry status failed"
echo; echo "demo: ok"

