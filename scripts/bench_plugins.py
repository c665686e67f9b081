#!/usr/bin/env python3
"""Times ADD+DEL per pod through bridge + host-local, for podnet's binaries and the Go reference
plugins, on the same config, interleaved pod by pod, without ipMasq, with ipMasq (iptables) and
with ipMasq and `ipMasqBackend: nftables` (podnet programs nftables over netlink, in-process; the
reference 1.1.1 has no nftables backend and masquerades with iptables there). Also prints binary
sizes and the peak RSS of one invocation, measured by GNU time (%M) so that the figure is the
plugin's own and not inherited from this Python process; for bridge it covers its IPAM child too.
Then the kernel floor: what the kernel itself needs for the same objects per pod (the veth pair with
one end in the pod's namespace, the bridge port, the pod's address and default route, and with
ipMasq a masquerade rule), made and removed by `ip -batch` (one batch on the host side and one in the
pod's namespace: a batch cannot switch namespaces) plus one `nft -f` with ipMasq, and podnet's ratio
to it.

usage: bench_plugins.py OURS_DIR REF_DIR [PODS]
Runs as root; everything happens in network namespaces named podnet-bench-*, deleted at the end.
"""
import ctypes, json, os, statistics, subprocess, sys, tempfile, time

ours_dir, ref_dir = sys.argv[1], sys.argv[2]
pods = int(sys.argv[3]) if len(sys.argv) > 3 else 40
host = "podnet-bench-host"
libc = ctypes.CDLL(None, use_errno=True)


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def invoke(directory, typ, command, conf, cid, netns):
    """Runs one plugin invocation; returns (seconds, exit status, stdout)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": directory}
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    t0 = time.perf_counter()
    pid = os.posix_spawn(os.path.join(directory, typ), [typ], env,
                         file_actions=[(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                                       (os.POSIX_SPAWN_CLOSE, w), (os.POSIX_SPAWN_CLOSE, out_r)])
    os.close(r); os.close(out_w)
    os.write(w, conf); os.close(w)
    out = b""
    while chunk := os.read(out_r, 65536):
        out += chunk
    os.close(out_r)
    _, status = os.waitpid(pid, 0)
    return time.perf_counter() - t0, os.waitstatus_to_exitcode(status), out


def peak_rss(directory, typ, command, conf, cid, netns):
    """Peak RSS in KiB of one invocation, from GNU time run in the current network namespace."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": directory}
    p = subprocess.run(["/usr/bin/time", "-f", "%M", os.path.join(directory, typ)], input=conf, env=env,
                       capture_output=True)
    if p.returncode != 0:
        sys.exit(f"{directory}/{typ} {command} failed: {p.stdout.decode()} {p.stderr.decode()}")
    return int(p.stderr.decode().strip().splitlines()[-1])


PLUGINS = ("bridge", "host-local", "loopback", "portmap", "flannel")


def set_size(directory):
    """(KiB on disk, how many of PLUGINS the directory has) for the plugin set in `directory`,
    counted as du counts: allocated blocks, each inode once, so the five hard links of podnet's one
    executable count once while the reference's five files count five times."""
    seen, blocks, present = set(), 0, 0
    for typ in PLUGINS:
        try:
            st = os.stat(os.path.join(directory, typ))
        except FileNotFoundError:
            continue
        present += 1
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            blocks += st.st_blocks
    return blocks * 512 / 1024, present


def run_timed(argv, stdin):
    """Runs argv with stdin, spawned as `invoke` spawns a plugin; returns seconds. Fails the
    benchmark on a non-zero exit."""
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                          file_actions=[(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_CLOSE, w)])
    os.close(r)
    os.write(w, stdin.encode()); os.close(w)
    _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed (exit {os.waitstatus_to_exitcode(status)})")
    return seconds


def floor_add_del(i, pod, masq):
    """One pod's objects made and removed by the kernel's own tools; returns (ADD, DEL) seconds.
    Runs in the host namespace, where the plugins' bridge cni0 (10.99.0.1/16) is."""
    veth, address = f"vfloor{i}", f"10.99.{200 + i // 250}.{1 + i % 250}"
    host_add = f"link add {veth} type veth peer name eth0 netns {pod}\nlink set {veth} master cni0\nlink set {veth} up\n"
    pod_add = f"link set eth0 up\naddr add {address}/16 dev eth0\nroute add default via 10.99.0.1\n"
    table = f"ip podnet_floor_{i}"
    nft_add = (f"add table {table}\nadd chain {table} post {{ type nat hook postrouting priority srcnat ; }}\n"
               f"add rule {table} post ip saddr {address} ip daddr != 10.99.0.0/16 masquerade\n")
    add = run_timed(["ip", "-batch", "-"], host_add) + run_timed(["ip", "-n", pod, "-batch", "-"], pod_add)
    if masq:
        add += run_timed(["nft", "-f", "-"], nft_add)
    # DEL: the pod's end goes, and its peer with it; then the rule.
    delete = run_timed(["ip", "-n", pod, "-batch", "-"], "link del eth0\n")
    if masq:
        delete += run_timed(["nft", "-f", "-"], f"delete table {table}\n")
    return add, delete


def config(masq, data_dir, backend=None):
    c = {"cniVersion": "1.0.0", "name": "benchnet", "type": "bridge", "bridge": "cni0", "isGateway": True,
         "ipMasq": masq, "ipam": {"type": "host-local", "dataDir": data_dir,
                                  "ranges": [[{"subnet": "10.99.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
    if backend:
        c["ipMasqBackend"] = backend  # the reference 1.1.1 ignores the key: iptables
    return json.dumps(c).encode()


# The bridge configurations timed: (label, ipMasq, ipMasqBackend).
VARIANTS = (("no ipMasq", False, None), ("ipMasq (iptables)", True, None), ("ipMasq (nftables)", True, "nftables"))


def bench_portmap(ours_dir, ref_dir, pods, backend):
    """The chain bridge + portmap with one TCP mapping, as a runtime runs it: bridge ADD, portmap
    ADD with bridge's result as prevResult, then portmap DEL and bridge DEL with that result.
    Ours and the reference interleaved pod by pod, in fresh namespaces (podnet-bench-pm-*). With
    backend "nftables", ours uses portmap's nftables backend (netlink, in-process) and the
    reference 1.1.1, which has none, ignores the key and uses iptables."""
    data = tempfile.mkdtemp(prefix="podnet-bench-pm-")
    pm_host = "podnet-bench-pm-host"
    pod_names = [f"podnet-bench-pm-p{i}" for i in range(pods)]
    bridge = {"cniVersion": "1.0.0", "name": "benchpm", "type": "bridge", "bridge": "cni0", "isGateway": True,
              "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.98.0.0/16"}]],
                       "routes": [{"dst": "0.0.0.0/0"}]}}
    portmap = {"cniVersion": "1.0.0", "name": "benchpm", "type": "portmap",
               "backend": backend,
               "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}

    def chain(d, cid, netns):
        """Seconds for the whole chain and for portmap's ADD and DEL alone."""
        bconf = json.dumps(bridge).encode()
        t1, s1, out = invoke(d, "bridge", "ADD", bconf, cid, netns)
        if s1:
            sys.exit(f"{d}/bridge ADD failed: {out.decode()}")
        pconf = json.dumps(dict(portmap, prevResult=json.loads(out))).encode()
        t2, s2, o2 = invoke(d, "portmap", "ADD", pconf, cid, netns)
        t3, s3, o3 = invoke(d, "portmap", "DEL", pconf, cid, netns)
        t4, s4, o4 = invoke(d, "bridge", "DEL", json.dumps(dict(bridge, prevResult=json.loads(out))).encode(), cid, netns)
        if s2 or s3 or s4:
            sys.exit(f"{d} chain failed: {o2.decode()} {o3.decode()} {o4.decode()}")
        return t1 + t2 + t3 + t4, t2 + t3

    subprocess.run(["ip", "netns", "add", pm_host], check=True)
    try:
        for p in pod_names:
            subprocess.run(["ip", "netns", "add", p], check=True)
        fd = os.open(f"/run/netns/{pm_host}", os.O_RDONLY)
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            sys.exit("setns failed: errno %d" % ctypes.get_errno())
        os.close(fd)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        impls = [("podnet", ours_dir), ("reference", ref_dir)]
        for name, d in impls:  # warm-up: bridge, shared chains, page caches
            chain(d, f"pm-warm-{name}", f"/run/netns/{pod_names[0]}")
        whole = {name: [] for name, _ in impls}
        alone = {name: [] for name, _ in impls}
        for i, p in enumerate(pod_names):
            for name, d in (impls if i % 2 == 0 else impls[::-1]):
                w, a = chain(d, f"pm-{name}-{i}", f"/run/netns/{p}")
                whole[name].append(w)
                alone[name].append(a)
    finally:
        for p in pod_names + [pm_host]:
            subprocess.run(["ip", "netns", "delete", p], stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", data])

    print(f"bench plugins: bridge + host-local + portmap (one TCP mapping, podnet {backend}, reference iptables), "
          f"ADD+DEL per pod, {pods} pods, interleaved")
    print(f"{'chain':<22}{'podnet ms':>12}{'reference ms':>15}{'ratio':>8}   (median; mean in brackets)")
    for label, times in (("bridge + portmap", whole), ("portmap alone", alone)):
        a, b = statistics.median(times["podnet"]) * 1e3, statistics.median(times["reference"]) * 1e3
        ma, mb = statistics.mean(times["podnet"]) * 1e3, statistics.mean(times["reference"]) * 1e3
        print(f"{label:<22}{a:>8.2f} [{ma:.1f}]{b:>10.2f} [{mb:.1f}]{a / b:>7.2f}x")
    if backend == "iptables":
        a, b = os.path.getsize(f"{ours_dir}/portmap") / 1024, os.path.getsize(f"{ref_dir}/portmap") / 1024
        print(f"{'portmap size KiB':<22}{a:>12.0f}{b:>15.0f}{a / b:>7.2f}x")


def main():
    data = tempfile.mkdtemp(prefix="podnet-bench-")
    sh(f"ip netns add {host}")
    pod_names = [f"podnet-bench-p{i}" for i in range(pods)]
    try:
        for p in pod_names:
            sh(f"ip netns add {p}")
        fd = os.open(f"/run/netns/{host}", os.O_RDONLY)
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            sys.exit("setns failed: errno %d" % ctypes.get_errno())
        impls = [("podnet", ours_dir), ("reference", ref_dir)]
        rows = []
        rss = {}
        for v, (label, masq, backend) in enumerate(VARIANTS):
            conf = config(masq, data, backend)
            times = {name: [] for name, _ in impls}
            phases = {"ADD": [], "DEL": []}  # podnet's, for the floor
            # Warm-up: creates the bridge and loads page caches for both.
            for name, d in impls:
                for cmd in ("ADD", "DEL"):
                    invoke(d, "bridge", cmd, conf, "warm", f"/run/netns/{pod_names[0]}")
            for i, p in enumerate(pod_names):
                order = impls if i % 2 == 0 else impls[::-1]
                for name, d in order:
                    cid = f"bench-{name}-{v}-{i}"
                    ta, sa, oa = invoke(d, "bridge", "ADD", conf, cid, f"/run/netns/{p}")
                    td, sd, od = invoke(d, "bridge", "DEL", conf, cid, f"/run/netns/{p}")
                    if sa or sd:
                        sys.exit(f"{name} failed (ADD {sa}, DEL {sd}): {oa.decode()} {od.decode()}")
                    times[name].append(ta + td)
                    if name == "podnet":
                        phases["ADD"].append(ta); phases["DEL"].append(td)
            rows.append((label, masq, times, phases))
        # The kernel floor for the same objects, pod by pod (the bridge exists by now).
        floors = {masq: [floor_add_del(i, p, masq) for i, p in enumerate(pod_names)] for masq in (False, True)}
        netns = f"/run/netns/{pod_names[0]}"
        for name, d in impls:
            conf = config(True, data)
            for typ in ("bridge", "host-local"):
                rss[(name, typ)] = max(peak_rss(d, typ, "ADD", conf, "rss", netns),
                                       peak_rss(d, typ, "DEL", conf, "rss", netns))
    finally:
        for p in pod_names + [host]:
            subprocess.run(["ip", "netns", "delete", p], stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", data])

    print(f"bench plugins: bridge + host-local, ADD+DEL per pod, {pods} pods, interleaved")
    print(f"{'config':<22}{'podnet ms':>12}{'reference ms':>15}{'ratio':>8}   (median; mean in brackets)")
    for label, masq, times, _ in rows:
        a, b = statistics.median(times["podnet"]) * 1e3, statistics.median(times["reference"]) * 1e3
        ma, mb = statistics.mean(times["podnet"]) * 1e3, statistics.mean(times["reference"]) * 1e3
        print(f"{label:<22}{a:>8.2f} [{ma:.1f}]{b:>10.2f} [{mb:.1f}]{a / b:>7.2f}x")
    print(f"{'binary':<22}{'podnet KiB':>12}{'reference KiB':>15}{'ratio':>8}")
    # Per name, the file's own size: podnet's names are all the one executable.
    for typ in ("bridge", "host-local", "loopback"):
        a, b = os.path.getsize(f"{ours_dir}/{typ}") / 1024, os.path.getsize(f"{ref_dir}/{typ}") / 1024
        print(f"{typ + ' size':<22}{a:>12.0f}{b:>15.0f}{a / b:>7.2f}x")
    (a, na), (b, nb) = set_size(ours_dir), set_size(ref_dir)
    print(f"{f'plugin set on disk':<22}{a:>12.0f}{b:>15.0f}{a / b:>7.2f}x   (du: each inode once; "
          f"podnet {na} names, reference {nb} of {', '.join(PLUGINS)})")
    for typ in ("bridge", "host-local"):
        a, b = rss[("podnet", typ)], rss[("reference", typ)]
        label = f"{typ} peak RSS KiB"
        print(f"{label:<22}{a:>12}{b:>15}{a / b:>7.2f}x")
    print("kernel floor: the same objects per pod made and removed by ip -batch (host side, pod side)")
    print("plus nft -f with ipMasq. The floor's DEL waits for the kernel to unregister the veth (RCU,")
    print("10-20 ms); podnet's DEL hands that to a detached helper (PluginKernel/DeferredUnregister)")
    print(f"{'config':<22}{'podnet ms':>12}{'floor ms':>15}{'ratio':>8}   (median)")
    for label, masq, _, phases in rows:
        for phase in ("ADD", "DEL"):
            a = statistics.median(phases[phase]) * 1e3
            f = statistics.median([x[0 if phase == "ADD" else 1] for x in floors[masq]]) * 1e3
            row = {"no ipMasq": "no ipMasq ", "ipMasq (iptables)": "ipMasq (nft floor) ",
                   "ipMasq (nftables)": "nftables (floor) "}[label] + phase
            print(f"{row:<22}{a:>12.2f}{f:>15.2f}{a / f:>7.2f}x")
    bench_portmap(ours_dir, ref_dir, pods, "iptables")
    bench_portmap(ours_dir, ref_dir, pods, "nftables")


main()
