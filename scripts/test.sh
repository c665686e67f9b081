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
if [ $# -gt 0 ]; then
  swift test --skip-build "$@"
  exit
fi
# Swift Testing runs synchronous tests on the cooperative thread pool, which has one thread per CPU.
# The daemon's end-to-end suites hold one of them for minutes and promise timings ("within 2 s"),
# so they run on their own, after everything else.
status=0
swift test --skip-build --skip '^DaemonTests\.' || status=$?
swift test --skip-build --filter '^DaemonTests\.' || status=$?
exit $status
