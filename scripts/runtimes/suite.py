#!/usr/bin/env python3
"""The real-runtime suite: podman 4 (CNI backend) and containerd 1.6 (through its CRI, spoken by
cri.py), both from Debian, run podnet's plugins as their CNI plugins.

Each run builds a node in throw-away network namespaces:

    client (192.168.200.2/24) --veth-- node (192.168.200.1/24, the runtime, bridge cni-rt0 10.89.0.0/24)

and starts the runtime in the node namespace, entered one of two ways:
  netns    as `ip netns exec` enters it: a private mount namespace with the node's own /sys
           (cgroups mounted again below it, remount-cgroups.sh);
  nsenter  as `nsenter --net` (and podman, containerd in a container, CRI-O) enter it: setns into
           the network namespace only, so /sys still shows another namespace's devices.
Then it checks what a user would: pods get addresses and ping each other, every bridge port has
hairpin mode on (the conflist asks for it), a published hostPort answers from the client
namespace, a pod reaches the client (which has no route back to the pods: only masquerading gets
the replies back), and after stop/remove no IP reservation, veth, netfilter rule or netns is left.

Everything it makes (namespaces, processes, mounts, cgroups, state folders) is removed at the end,
also when a check or the runtime fails. Prints one line per check and "runtimes: N passed, N failed".

    python3 scripts/runtimes/suite.py --bin DIR [--runtime podman|containerd] [--enter netns|nsenter]
"""

import argparse
import glob
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import image  # noqa: E402

IMAGE = "podnet.test/busybox:1"
NETWORK = "podnet-rt"
BRIDGE = "cni-rt0"
SUBNET = "10.89.0"
NODE_IP, CLIENT_IP = "192.168.200.1", "192.168.200.2"
HOST_PORT = 8080
HTTP_GET = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())"


def run(argv, check=True, timeout=60, env=None):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def in_ns(ns, argv, **kw):
    return run(["ip", "netns", "exec", ns] + argv, **kw)


def wait_for(what, probe, timeout=20.0):
    """Polls `probe` (returns a true value when done) every 0.2 s for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = probe()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the last error is what the failure reports
            last = e
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s (last: {last})")
        time.sleep(0.2)


class Results:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"  ok    {name}", flush=True)
        else:
            self.failed += 1
            print(f"  FAIL  {name}: {detail}", flush=True)
        return ok

    def attempt(self, name, body):
        """Runs `body`; an exception is a failed check named `name`."""
        try:
            body()
            return self.check(name, True)
        except Exception as e:  # noqa: BLE001
            # A gRPC error's details are containerd's message (the CNI plugin's error, for one).
            return self.check(name, False, e.details() if hasattr(e, "details") else str(e))

    def skip(self, name, why):
        self.skipped += 1
        print(f"  SKIP  {name}: {why}", flush=True)


def cgroup_mounts():
    """The cgroup file systems of this mount namespace, as remount-cgroups.sh reads them."""
    lines = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, target, options = fields[sep + 1], fields[4], fields[sep + 3]
            if fstype in ("cgroup", "cgroup2") and target.startswith("/sys/fs/cgroup/"):
                lines.append(f"{fstype} {options} {target}")
    return "\n".join(lines)


class Node:
    """The node and client namespaces, and how a runtime's commands enter the node."""

    def __init__(self, enter, work):
        tag = "%06x" % random.randrange(1 << 24)
        self.ns, self.client = f"podnet-t-rt{tag}n", f"podnet-t-rt{tag}c"
        self.enter, self.work = enter, work
        self.holder = None

    def setup(self):
        for ns in (self.ns, self.client):
            run(["ip", "netns", "add", ns])
            in_ns(ns, ["ip", "link", "set", "lo", "up"])
        in_ns(self.ns, ["ip", "link", "add", "rt-uplink", "type", "veth", "peer", "name", "rt-client",
                        "netns", self.client])
        in_ns(self.ns, ["ip", "addr", "add", NODE_IP + "/24", "dev", "rt-uplink"])
        in_ns(self.ns, ["ip", "link", "set", "rt-uplink", "up"])
        in_ns(self.client, ["ip", "addr", "add", CLIENT_IP + "/24", "dev", "rt-client"])
        in_ns(self.client, ["ip", "link", "set", "rt-client", "up"])
        if self.enter == "netns":
            # One process holds the namespaces `ip netns exec` made, so that every runtime command
            # shares one mount namespace (podman's netns bind mounts live there).
            env = dict(os.environ, PODNET_CGROUPS=cgroup_mounts())
            self.holder = subprocess.Popen(["ip", "netns", "exec", self.ns, "sh", HERE + "/remount-cgroups.sh",
                                            "sleep", "2147483647"], env=env)
            mine = os.readlink("/proc/self/ns/mnt")

            def ready():
                if self.holder.poll() is not None:
                    raise RuntimeError(f"ip netns exec exited {self.holder.returncode}")
                with open(f"/proc/{self.holder.pid}/cmdline") as f:
                    if not f.read().startswith("sleep"):
                        return False
                return os.readlink(f"/proc/{self.holder.pid}/ns/mnt") != mine
            wait_for("the node's mount namespace", ready, timeout=10)

    def command(self, argv):
        if self.enter == "netns":
            return ["nsenter", f"--target={self.holder.pid}", "--mount", "--net", "--"] + argv
        return ["nsenter", f"--net=/run/netns/{self.ns}", "--"] + argv

    def teardown(self):
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait()
        for ns in (self.ns, self.client):
            run(["ip", "netns", "delete", ns], check=False)


def conflist(bin_dir, data_dir):
    """bridge + host-local + portmap, as a user writes it for either runtime (loopback is the
    runtime's own: containerd runs the `loopback` plugin from the same folder)."""
    return ('{"cniVersion":"1.0.0","name":"%s","plugins":['
            '{"type":"bridge","bridge":"%s","isGateway":true,"ipMasq":true,"hairpinMode":true,'
            '"ipam":{"type":"host-local","dataDir":"%s","routes":[{"dst":"0.0.0.0/0"}],'
            '"ranges":[[{"subnet":"%s.0/24"}]]}},'
            '{"type":"portmap","capabilities":{"portMappings":true}}]}\n') % (NETWORK, BRIDGE, data_dir, SUBNET)


# MARK: runtimes


class Podman:
    name = "podman"

    def __init__(self, node, work, bin_dir):
        self.node, self.work, self.bin_dir = node, work, bin_dir
        self.env = dict(os.environ, CONTAINERS_CONF=work + "/containers.conf",
                        CONTAINERS_STORAGE_CONF=work + "/storage.conf")
        self.netns_before = set(os.listdir("/run/netns"))

    def podman(self, *args, check=True, timeout=60):
        return run(self.node.command(["podman"] + list(args)), check=check, timeout=timeout, env=self.env)

    def start(self, image_tar):
        w = self.work
        os.makedirs(w + "/net.d")
        with open(w + "/net.d/podnet-rt.conflist", "w") as f:
            f.write(conflist(self.bin_dir, w + "/ipam"))
        # The runtime's rlimit defaults are above this sandbox's hard limits (no CAP_SYS_RESOURCE).
        with open(w + "/containers.conf", "w") as f:
            f.write(f'''[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
tmp_dir = "{w}/tmp"
static_dir = "{w}/static"
volume_path = "{w}/volumes"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{self.bin_dir}"]
network_config_dir = "{w}/net.d"
default_network = "{NETWORK}"
''')
        with open(w + "/storage.conf", "w") as f:
            f.write(f'[storage]\ndriver = "vfs"\nrunroot = "{w}/runroot"\ngraphroot = "{w}/root"\n')
        self.podman("load", "-i", image_tar, timeout=120)

    def run_pod(self, name, command, ports=()):
        publish = [a for h, c in ports for a in ("-p", f"{h}:{c}")]
        self.podman("run", "-d", "--name", name, "--network", NETWORK, "--cap-add", "NET_RAW", *publish,
                    IMAGE, *command, timeout=120)
        return name

    def pod_ip(self, pod):
        return self.podman("inspect", "--format", '{{(index .NetworkSettings.Networks "%s").IPAddress}}' % NETWORK,
                           pod).stdout.strip()

    def exec(self, pod, cmd):
        r = self.podman("exec", pod, *cmd, check=False)
        return r.returncode, r.stdout + r.stderr

    def remove_pod(self, pod):
        self.podman("stop", "-t", "0", pod)
        self.podman("rm", pod)

    def leftover_netns(self):
        return sorted(set(os.listdir("/run/netns")) - self.netns_before - {self.node.ns, self.node.client})

    def teardown(self):
        # Without its configuration podman would act on the host's own containers.
        if os.path.exists(self.work + "/storage.conf") and os.path.exists(self.work + "/containers.conf"):
            self.podman("rm", "-a", "-f", "-t", "0", check=False, timeout=120)
        kill_processes_mentioning(self.work)
        for n in self.leftover_netns():
            if n.startswith("netns-"):
                run(["umount", "-l", "/run/netns/" + n], check=False)
                os.unlink("/run/netns/" + n)
        remove_cgroups("libpod_parent")


class Containerd:
    name = "containerd"

    def __init__(self, node, work, bin_dir):
        self.node, self.work, self.bin_dir = node, work, bin_dir
        self.process = None
        self.client = None
        self.socket = work + "/containerd.sock"
        self.configs = {}

    def start(self, image_tar):
        import cri  # grpcio and protobuf: scripts/deps.sh runtimes installs them
        w = self.work
        os.makedirs(w + "/net.d")
        with open(w + "/net.d/10-podnet-rt.conflist", "w") as f:
            f.write(conflist(self.bin_dir, w + "/ipam"))
        # restrict_oom_score_adj: the sandbox container's -998 needs CAP_SYS_RESOURCE, which this
        # sandbox lacks. netns_mounts_under_state_dir keeps the pods' netns files in the state folder.
        with open(w + "/config.toml", "w") as f:
            f.write(f'''version = 2
root = "{w}/root"
state = "{w}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{w}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{self.bin_dir}"
    conf_dir = "{w}/net.d"
    max_conf_num = 1
''')
        self.log = open(w + "/containerd.log", "w")
        self.process = subprocess.Popen(self.node.command(["containerd", "--config", w + "/config.toml"]),
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self.client = cri.CRIClient(self.socket)

        def up():
            if self.process.poll() is not None:
                raise RuntimeError(f"containerd exited {self.process.returncode} (see {w}/containerd.log)")
            return os.path.exists(self.socket) and self.client.version().runtime_name == "containerd"
        wait_for("containerd's CRI", up, timeout=30)
        run(["ctr", "--address", self.socket, "-n", "k8s.io", "images", "import", "--snapshotter", "native",
             image_tar], timeout=120)

    def run_pod(self, name, command, ports=()):
        config = self.client.sandbox_config(name, "uid-" + name, f"{self.work}/logs/{name}",
                                            [(h, c, "tcp") for h, c in ports])
        pod = self.client.run_pod(config)
        self.configs[pod] = config
        cid = self.client.run_container(pod, config, "main", IMAGE, command)
        return (pod, cid)

    def pod_ip(self, pod):
        state, ip, _ = self.client.pod_status(pod[0])
        if state != "SANDBOX_READY":
            raise RuntimeError(f"pod state {state}")
        return ip

    def exec(self, pod, cmd):
        code, out, err = self.client.exec_sync(pod[1], cmd)
        return code, out + err

    def remove_pod(self, pod):
        self.client.stop_pod(pod[0])
        self.client.remove_pod(pod[0])

    def leftover_netns(self):
        return sorted(os.path.basename(p) for p in glob.glob(self.work + "/state/io.containerd.grpc.v1.cri/netns/*"))

    def teardown(self):
        if self.client is not None:
            try:
                for p in self.client.pods():
                    self.client.stop_pod(p.id)
                    self.client.remove_pod(p.id)
            except Exception as e:  # noqa: BLE001 - containerd may be the thing that failed
                print(f"  (cleanup: {e})", flush=True)
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Containers whose pods could not be removed: their shims name the socket's folder.
        for root in glob.glob(self.work + "/runc/*"):
            for cid in run(["runc", "--root", root, "list", "-q"], check=False).stdout.split():
                run(["runc", "--root", root, "delete", "-f", cid], check=False)
        kill_processes_mentioning(self.work)
        remove_cgroups("k8s.io")


def kill_processes_mentioning(path):
    """SIGKILLs the processes whose command line names `path` (runtime helpers: conmon, shims)."""
    me = os.getpid()
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if path.encode() in f.read():
                    os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass


def remove_cgroups(name):
    """Removes the cgroup folders `name` the runtime made below each hierarchy's root (once empty)."""
    for top in glob.glob(f"/sys/fs/cgroup/*/{name}"):
        for d, _, _ in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
            try:
                os.rmdir(d)
            except OSError:
                pass


def unmount_below(path):
    targets = run(["findmnt", "-rn", "-o", "TARGET"], check=False).stdout.split("\n")
    for t in sorted((t for t in targets if t.startswith(path + "/")), key=len, reverse=True):
        run(["umount", "-l", t], check=False)


# MARK: the checks


def node_veths(node):
    out = in_ns(node.ns, ["ip", "-o", "link", "show", "type", "veth"]).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if "rt-uplink" not in line]


def reservations(data_dir):
    return sorted(f for f in os.listdir(data_dir + "/" + NETWORK) if re.fullmatch(r"[0-9.]+", f)) \
        if os.path.isdir(data_dir + "/" + NETWORK) else []


def scenario(results, runtime, node, work, image_tar):
    label = f"{runtime.name}/{node.enter}"
    data_dir = work + "/ipam"
    if not results.attempt(f"{label}: start {runtime.name} in the node namespace and import the image",
                           lambda: runtime.start(image_tar)):
        return
    # The client has no route to the pods: replies to a pod reach it only through masquerading.
    results.check(f"{label}: client has no route to the pod network",
                  in_ns(node.client, ["ip", "route", "get", SUBNET + ".10"], check=False).returncode != 0)

    pods = {}

    def start_pods():
        pods["a"] = runtime.run_pod("pod-a", ["sleep", "2147483647"])
        pods["b"] = runtime.run_pod("pod-b", ["sleep", "2147483647"])
    if not results.attempt(f"{label}: run two pods", start_pods):
        for p in pods.values():
            runtime.remove_pod(p)
        return

    def start_web():
        pods["web"] = runtime.run_pod("pod-web", ["httpd", "-f", "-p", "80", "-h", "/www"], ports=[(HOST_PORT, 80)])
    results.attempt(f"{label}: run a pod publishing hostPort {HOST_PORT}", start_web)
    ips = {}

    def addresses():
        for k, p in pods.items():
            ips[k] = runtime.pod_ip(p)
            if not ips[k].startswith(SUBNET + "."):
                raise RuntimeError(f"{k} has address {ips[k]!r}, not in {SUBNET}.0/24")
        if sorted(reservations(data_dir)) != sorted(ips.values()):
            raise RuntimeError(f"reservations {reservations(data_dir)} != pod addresses {sorted(ips.values())}")
        code, out = runtime.exec(pods["a"], ["ip", "-4", "-o", "addr", "show", "eth0"])
        if code != 0 or ips["a"] + "/24" not in out:
            raise RuntimeError(f"eth0 in pod-a: {out.strip()}")
    results.attempt(f"{label}: pods have addresses from host-local, on eth0", addresses)

    def ping(pod, target):
        def once():
            code, out = runtime.exec(pod, ["ping", "-c", "1", "-W", "1", target])
            if code != 0:
                raise RuntimeError(out.strip().splitlines()[-1] if out.strip() else f"exit {code}")
            return True
        wait_for(f"ping {target}", once, timeout=15)
    if "b" in ips:
        results.attempt(f"{label}: pod-a pings pod-b", lambda: ping(pods["a"], ips["b"]))
        results.attempt(f"{label}: pod-b pings pod-a", lambda: ping(pods["b"], ips["a"]))

    def hairpin():
        out = in_ns(node.ns, ["bridge", "-d", "link", "show"]).stdout
        ports = [p for p in re.split(r"\n(?=\d+:)", out) if f"master {BRIDGE}" in p]
        if len(ports) != len(pods) or not all("hairpin on" in p for p in ports):
            raise RuntimeError(f"bridge -d link show: {out.strip()}")
    results.attempt(f"{label}: every bridge port has hairpin mode on", hairpin)

    def host_port():
        if "web" not in pods:
            raise RuntimeError("the pod publishing it did not start")

        def once():
            r = in_ns(node.client, [sys.executable, "-c", HTTP_GET, f"http://{NODE_IP}:{HOST_PORT}/"],
                      check=False, timeout=10)
            if r.stdout != image.PAGE.decode():
                raise RuntimeError(r.stderr.strip() or repr(r.stdout))
            return True
        wait_for("hostPort", once, timeout=20)
    results.attempt(f"{label}: hostPort {HOST_PORT} answers from the client namespace", host_port)
    results.attempt(f"{label}: pod-a reaches the client through masquerading", lambda: ping(pods["a"], CLIENT_IP))

    def removed():
        for k in list(pods):
            runtime.remove_pod(pods.pop(k))
        problems = []
        if reservations(data_dir):
            problems.append(f"reservations {reservations(data_dir)}")
        if node_veths(node):
            problems.append(f"veths {node_veths(node)}")
        rules = in_ns(node.ns, ["iptables-save"]).stdout
        stale = [line for line in rules.splitlines()
                 if re.search(r"CNI-DN-|CNI-[0-9a-f]{24}", line) or any(ip in line for ip in ips.values())]
        if stale:
            problems.append(f"netfilter {stale}")
        if runtime.leftover_netns():
            problems.append(f"netns {runtime.leftover_netns()}")
        if problems:
            raise RuntimeError("; ".join(problems))
    results.attempt(f"{label}: stop/remove leaves no IP reservation, veth, rule or netns", removed)
    for p in pods.values():
        runtime.remove_pod(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="folder with podnet's built plugins (scripts/build.sh prints it)")
    ap.add_argument("--runtime", choices=["podman", "containerd"], action="append")
    ap.add_argument("--enter", choices=["netns", "nsenter"], action="append")
    args = ap.parse_args()
    bin_dir = os.path.abspath(args.bin)
    results = Results()
    if os.geteuid() != 0:
        results.skip("runtimes", "needs root to create network namespaces and run the runtimes")
        print(f"runtimes: 0 passed, 0 failed, {results.skipped} skipped", flush=True)
        return 0
    if not cgroup_mounts():
        results.skip("runtimes", "no cgroup file system is mounted below /sys/fs/cgroup: runc cannot create containers")
        print(f"runtimes: 0 passed, 0 failed, {results.skipped} skipped", flush=True)
        return 0
    # SIGTERM (test.sh interrupted) unwinds like Ctrl-C, so every finally below cleans up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Folders the runtimes make outside their configured ones (podman's blob-info cache, the shims'
    # socket folder, libcni's result cache): removed afterwards unless they were there before.
    made_outside = [d for d in ("/var/lib/containers", "/run/containerd", "/var/lib/cni") if not os.path.exists(d)]
    base = tempfile.mkdtemp(prefix="podnet-rt-")
    try:
        image_tar = base + "/image.tar"
        image.build(image_tar, IMAGE)
        for kind in args.runtime or ["podman", "containerd"]:
            for enter in args.enter or ["netns", "nsenter"]:
                label = f"{kind}/{enter}"
                binary = "podman" if kind == "podman" else "containerd"
                if shutil.which(binary) is None:
                    results.skip(label, f"{binary} is not installed (scripts/deps.sh runtimes installs it)")
                    continue
                print(f"== {label}", flush=True)
                work = tempfile.mkdtemp(prefix=f"{kind}-{enter}-", dir=base)
                node = Node(enter, work)
                runtime = (Podman if kind == "podman" else Containerd)(node, work, bin_dir)
                try:
                    node.setup()
                    scenario(results, runtime, node, work, image_tar)
                except Exception as e:  # noqa: BLE001
                    results.check(f"{label}: set-up", False, str(e))
                finally:
                    runtime.teardown()
                    node.teardown()
                    unmount_below(work)
    finally:
        unmount_below(base)
        shutil.rmtree(base, ignore_errors=True)
        for f in glob.glob(f"/var/lib/cni/results/{NETWORK}-*"):
            os.unlink(f)
        for d in made_outside:
            shutil.rmtree(d, ignore_errors=True)
    print(f"runtimes: {results.passed} passed, {results.failed} failed, {results.skipped} skipped", flush=True)
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
