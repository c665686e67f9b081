#!/usr/bin/env bash
# Runs every podnet test: unit tests, and privileged tests that run the built plugin binaries
# inside network namespaces they create and delete. Needs root for the privileged tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh bench   # the reference plugins are needed for the interoperability tests

cleanup() {
  # A crashed test cannot run its own clean-up; remove any test namespace it left.
  for ns in $(ip netns list 2>/dev/null | awk '/^podnet-t-/{print $1}'); do ip netns delete "$ns" || true; done
}
trap cleanup EXIT

PODNET_BIN_DIR=$(scripts/build.sh)
export PODNET_BIN_DIR
echo "== plugin binaries: $PODNET_BIN_DIR" >&2
swift build --build-tests -Xswiftc -warnings-as-errors
swift test --skip-build "$@"
