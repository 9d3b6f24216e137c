#!/usr/bin/env bash
# ferry and skopeo side by side on every registry profile of the quirks proxy (the test
# support's emulation of Docker Hub, ECR, GAR, ACR, GHCR, Quay, Harbor, GitLab, Artifactory,
# Nexus, zot and Distribution 3, in front of a real Distribution): one image with a 16 MiB
# layer, ferry then skopeo into fresh proxies, median of 3 each. Prints one TSV row per
# profile: the upload strategy ferry learnt, wall seconds each, ferry/skopeo, requests each.
# Then the kill -9 resume figures: bytes resent after a kill mid-layer, per profile.
#
#   bench/profiles.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v skopeo >/dev/null && command -v docker-registry >/dev/null || {
  echo "bench/profiles.sh: needs skopeo and docker-registry (scripts/test.sh installs them)" >&2; exit 1; }
echo "== side by side (release build)"
cargo test --quiet --release --test e2e -- --ignored --exact compat_bench::bench_profiles --nocapture 2>&1 \
  | grep -E '^(profile|[a-z0-9]+)	'
echo "== kill -9 mid-layer, then a rerun"
cargo test --quiet --release --test e2e -- compat_resume:: --nocapture --test-threads=1 2>&1 \
  | grep -E 'resent after kill' | sed 's/^\.*//'
