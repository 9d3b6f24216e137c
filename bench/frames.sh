#!/usr/bin/env bash
# How deep one `ferry sync` goes to write a tag: the call stack at the tag's manifest PUT
# (frames in all, and ferry's own functions from `main` down), read with gdb from a debug
# build copying one image between two Distribution registries. The figure the foundation
# issue asks for; compare it before and after a change with `git stash`.
#   bench/frames.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(mktemp -d /tmp/ferry-frames.XXXXXX)
. bench/lib.sh
bench_needs docker-registry gdb curl
cargo build --quiet --bin ferry --example corpus
SRC=$(start_registry src); DST=$(start_registry dst)
target/debug/examples/corpus --registry "http://$SRC" --prefix app --repos 1 --tags 1 --seed 1 >/dev/null
mkdir -p "$OUT/f/policies"
printf '[daemon]\nstate_dir = "state"\npolicies = "policies"\n[registries.s]\nurl = "http://%s"\n[registries.d]\nurl = "http://%s"\n' \
  "$SRC" "$DST" >"$OUT/f/ferry.toml"
printf '[[policy]]\nname = "p"\nsource = "s"\ntargets = ["d"]\nrepositories = ["app*"]\n' >"$OUT/f/policies/p.toml"
# The line of the HTTP transport's manifest PUT: the first one hit is the tag (a one-image
# corpus has no child manifests to write by digest first).
line=$(grep -n 'let op = "put manifest";' src/registry/meta.rs | cut -d: -f1)
printf 'set pagination off\nset print frame-arguments none\nbreak meta.rs:%s\nrun\nbt\nquit\n' "$line" >"$OUT/g.gdb"
gdb -q -batch -x "$OUT/g.gdb" --args target/debug/ferry --config "$OUT/f/ferry.toml" sync >"$OUT/gdb.out" 2>&1 || true
frames=$(grep -cE '^#' "$OUT/gdb.out")
echo "frames at the tag PUT: $frames"
echo "ferry functions on the stack (innermost first):"
grep -oE ' ferry::[^ ]*' "$OUT/gdb.out" | sed 's/::{{closure}}//g; s/::{async_fn#0}//g; s/{async_block#0}//g' | grep -v 'closure_env\|),$' | uniq | sed 's/^/ /'
