#!/usr/bin/env bash
# Runs every podnet test: unit tests, and privileged tests that run the built plugin binaries
# inside network namespaces they create and delete. Needs root for the privileged tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh bench   # the reference plugins are needed for the interoperability tests
scripts/deps.sh runtimes   # podman, containerd, runc, busybox, grpcio: scripts/runtimes/suite.py

cleanup() {
  # A crashed test cannot run its own clean-up; remove any test namespace it left.
  for ns in $(ip netns list 2>/dev/null | awk '/^podnet-t-/{print $1}'); do ip netns delete "$ns" || true; done
}
trap cleanup EXIT

# The structure checks first, as they take seconds; like every step below they fail the run at
# its end, not at once. check-structure: Package.swift declares exactly what each target imports,
# and README's dependency table is its graph. lint: the sources are as scripts/format.sh leaves them.
status=0
scripts/check-structure.py || status=$?
scripts/lint.sh || status=$?

PODNET_BIN_DIR=$(scripts/build.sh)
export PODNET_BIN_DIR
echo "== plugin binaries: $PODNET_BIN_DIR" >&2
# The import check fails the build when a target imports a module outside its dependency closure
# (an undeclared import of a transitive dependency passes; check-structure catches that).
swift build --build-tests --explicit-target-dependency-import-check error -Xswiftc -warnings-as-errors
if [ $# -gt 0 ]; then
  swift test --skip-build "$@"
  exit
fi
# Swift Testing runs synchronous tests on the cooperative thread pool, which has one thread per
# CPU. The privileged suites are synchronous and hold those threads for seconds (the daemon's
# end-to-end suites for minutes), so async tests that bound how long etcd may take (timeouts,
# hang bounds) would wait behind them for a thread. Hence three runs: the async etcd and lease
# tests, then the synchronous suites in parallel, then the daemon's end-to-end suites, whose
# timing promises ("within 2 s") should not depend on other suites either.
async='^(EtcdTests|LeaseTests|NodeAgentTests)\.'
daemon='^DaemonTests\.'
swift test --skip-build --filter "$async" || status=$?
swift test --skip-build --skip "$async" --skip "$daemon" || status=$?
swift test --skip-build --filter "$daemon" || status=$?
# Real runtimes (podman with its CNI backend, containerd through its CRI) running the built plugins
# in node namespaces, entered through ip netns exec and through nsenter --net.
python3 scripts/runtimes/suite.py --bin "$PODNET_BIN_DIR" || status=$?
# The demo is the main job: it must run green, and neither it nor any test may leave a namespace or
# a process behind. Its bgp variant (two racks joined by BIRD routers) and its dual-stack and
# IPv6-only variants must be green too.
scripts/demo.sh || status=$?
scripts/demo.sh --backend bgp || status=$?
scripts/demo.sh --ipv6 dual || status=$?
scripts/demo.sh --ipv6 only || status=$?
scripts/check-leftovers.sh || status=$?
exit $status
