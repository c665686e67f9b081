#!/usr/bin/env python3
"""A minimal CNI runtime, doing for the demo and the benchmark what libcni does for containerd
and CRI-O: run a conflist's plugins in order on ADD (each gets the previous result as prevResult)
and in reverse on DEL, inject name/cniVersion and the runtimeConfig of declared capabilities, and
cache the final ADD result for DEL and CHECK.

usage: cni_runtime.py ADD|DEL|CHECK|STATUS|GC CONFLIST [--id ID --netns PATH --ifname IF]
       [--path DIRS] [--cap JSON] [--cache DIR] [--valid JSON]
"""
import argparse, json, os, subprocess, sys


def plugin_conf(lst, plugin, prev, caps):
    conf = dict(plugin)
    conf["name"] = lst["name"]
    conf["cniVersion"] = lst["cniVersion"]
    rc = {k: v for k, v in caps.items() if plugin.get("capabilities", {}).get(k)}
    if rc:
        conf["runtimeConfig"] = rc
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def invoke(command, conf, a):
    env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=a.id, CNI_NETNS=a.netns,
               CNI_IFNAME=a.ifname, CNI_PATH=a.path)
    for d in a.path.split(":"):
        exe = os.path.join(d, conf["type"])
        if os.access(exe, os.X_OK):
            break
    else:
        sys.exit(f"plugin {conf['type']} not found in {a.path}")
    p = subprocess.run([exe], input=json.dumps(conf).encode(), env=env, capture_output=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr.decode())
        sys.exit(f"{conf['type']} {command} failed: {p.stdout.decode().strip()}")
    return json.loads(p.stdout) if p.stdout.strip() else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["ADD", "DEL", "CHECK", "STATUS", "GC"])
    ap.add_argument("conflist")
    ap.add_argument("--id", default="")
    ap.add_argument("--netns", default="")
    ap.add_argument("--ifname", default="eth0")
    ap.add_argument("--path", default="/opt/cni/bin")
    ap.add_argument("--cap", default="{}", help="capability args, e.g. portMappings")
    ap.add_argument("--cache", default="/var/lib/cni/podnet-demo-cache")
    ap.add_argument("--valid", default="[]", help="GC: valid attachments")
    a = ap.parse_args()
    lst = json.load(open(a.conflist))
    caps = json.loads(a.cap)
    cache = os.path.join(a.cache, f"{lst['name']}-{a.id}-{a.ifname}")
    if a.command == "ADD":
        prev = None
        for p in lst["plugins"]:
            prev = invoke("ADD", plugin_conf(lst, p, prev, caps), a)
        os.makedirs(a.cache, mode=0o700, exist_ok=True)
        json.dump({"result": prev, "caps": caps}, open(cache, "w"))
        print(json.dumps(prev, indent=2))
    elif a.command in ("DEL", "CHECK"):
        saved = json.load(open(cache)) if os.path.exists(cache) else {"result": None, "caps": caps}
        plugins = reversed(lst["plugins"]) if a.command == "DEL" else lst["plugins"]
        for p in plugins:
            invoke(a.command, plugin_conf(lst, p, saved["result"], saved["caps"]), a)
        if a.command == "DEL" and os.path.exists(cache):
            os.remove(cache)
    else:
        for p in lst["plugins"]:
            conf = plugin_conf(lst, p, None, {})
            if a.command == "GC":
                conf["cni.dev/valid-attachments"] = json.loads(a.valid)
            invoke(a.command, conf, a)


if __name__ == "__main__":
    main()
