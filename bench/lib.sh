# Shared by the bench scripts: install what is missing, start Distribution registries on
# loopback with access logs, count requests. Source it after setting OUT.

# bench_needs CMD[=PACKAGE]...: apt-get install the missing ones when root, else say what to
# install. PACKAGE when Debian's package is not named after the command (etcd=etcd-server).
bench_needs() {
  local need=() c
  for c in "$@"; do command -v "${c%%=*}" >/dev/null || need+=("${c#*=}"); done
  [ -x /usr/bin/time ] || need+=(time)
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "bench: missing ${need[*]}: sudo apt-get install -y ${need[*]}" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# bench_build [EXAMPLE...]: a release ferry and the corpus generator (and the examples named),
# as $FERRY, $CORPUS and $PWD/target/release/examples/NAME.
bench_build() {
  cargo build --quiet --release --bin ferry --example corpus ${*/#/--example }
  FERRY="$PWD/target/release/ferry" CORPUS="$PWD/target/release/examples/corpus"
}

# bench_reference REV BIN: build git revision REV (release, in a worktree under target/) and
# copy its ferry to BIN, to run beside this build.
bench_reference() {
  local ref="$PWD/target/bench-reference"
  git worktree remove --force "$ref/src" 2>/dev/null || true
  git worktree add --quiet --detach "$ref/src" "$1"
  (cd "$ref/src" && CARGO_TARGET_DIR="$ref/target" cargo build --quiet --release --bin ferry)
  cp "$ref/target/release/ferry" "$2"
  git worktree remove --force "$ref/src"
}

# Registries run in the background; their PIDs live in files because start_registry runs in
# a $(...) subshell.
# Helpers started in the background leave their pid in $OUT/NAME.pid to be stopped here too.
cleanup() { for f in "$OUT"/reg-*/pid "$OUT"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done; }
trap cleanup EXIT

stop_registry() {
  local f="$OUT/reg-$1/pid"
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$f"
}

# start_registry NAME [PORT]: (re)start with empty storage; prints host:port.
start_registry() {
  local name=$1 port=${2:-0} dir="$OUT/reg-$1"
  stop_registry "$name"
  rm -rf "$dir"; mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<YML
version: 0.1
log: {level: info, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $dir/data}, delete: {enabled: true}, maintenance: {uploadpurging: {enabled: false}}}
http: {addr: "127.0.0.1:$port", secret: ferry-bench-$name}
YML
  docker-registry serve "$dir/config.yml" >"$dir/access.log" 2>"$dir/app.log" </dev/null &
  echo $! >"$dir/pid"
  for _ in $(seq 1 100); do
    local addr; addr=$(grep -o 'listening on [0-9.:]*' "$dir/app.log" | head -1 | cut -d' ' -f3 || true)
    if [ -n "$addr" ]; then echo "$addr"; return; fi
    sleep 0.1
  done
  echo "bench: registry $name did not start" >&2; exit 1
}
requests() { grep -cE '"(GET|HEAD|PUT|POST|PATCH|DELETE) /v2/' "$OUT/reg-$1/access.log" || true; }

# repos HOST [PREFIX]: the registry's repositories, one per line (those starting with PREFIX).
repos() { curl -sf "http://$1/v2/_catalog?n=1000" | tr -d '{}[]"' | sed 's/repositories://' | tr ',' '\n' | { grep "^${2:-}" || true; }; }
# tags HOST REPO: its tags, one per line.
tags() { curl -sf "http://$1/v2/$2/tags/list" | sed 's/.*"tags":\[//; s/\].*//' | tr -d '"' | tr ',' '\n'; }
ACCEPT='application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json,application/vnd.docker.distribution.manifest.list.v2+json'
# digest HOST REPO TAG: the digest the registry serves for the tag.
digest() { curl -sfI -H "Accept: $ACCEPT" "http://$1/v2/$2/manifests/$3" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}'; }
# same_digests SRC DST [PREFIX]: every source tag (in repositories starting with PREFIX) has
# the same digest on DST; each mismatch is named, and the status says whether there was one.
same_digests() {
  local bad=0 repo tag
  for repo in $(repos "$1" "${3:-}"); do
    for tag in $(tags "$1" "$repo"); do
      [ "$(digest "$1" "$repo" "$tag")" = "$(digest "$2" "$repo" "$tag")" ] || { bad=1; echo "bench: MISMATCH $2 $repo:$tag" >&2; }
    done
  done
  return $bad
}
# skopeo_yaml HOST [PREFIX]: a `skopeo sync --src yaml` file naming those repositories.
skopeo_yaml() { echo "$1:"; echo "  tls-verify: false"; echo "  images:"; repos "$1" "${2:-}" | sed 's/^/    /; s/$/: []/'; }

# free_port: a loopback port nobody listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
