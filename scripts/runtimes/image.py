"""Builds the suite's container image as a docker-archive tarball (what `docker save` writes, and
what `podman load` and `ctr images import` read), because no registry is reachable.

The root file system is Debian's static busybox (package busybox-static) and links for the applets
the suite runs: sh, sleep, ping, ip and httpd (serving /www/index.html). The image's default
command sleeps, so it also serves containerd as the pod sandbox ("pause") image.
"""

import hashlib
import io
import json
import sys
import tarfile

BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "sleep", "ping", "httpd", "ip", "cat"]
PAGE = b"podnet-runtime-suite\n"


def _add(tar, name, data=None, mode=0o644, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.mode, info.type, info.linkname, info.mtime = mode, kind, link, 0
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _layer():
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ["bin", "dev", "etc", "proc", "sys", "tmp", "www", "run"]:
            _add(tar, d, mode=0o1777 if d == "tmp" else 0o755, kind=tarfile.DIRTYPE)
        _add(tar, "bin/busybox", busybox, mode=0o755)
        for a in APPLETS:
            _add(tar, "bin/" + a, kind=tarfile.SYMTYPE, link="busybox")
        _add(tar, "etc/passwd", b"root:x:0:0:root:/:/bin/sh\n")
        _add(tar, "etc/group", b"root:x:0:\n")
        _add(tar, "www/index.html", PAGE)
    return buf.getvalue()


def build(path, tag):
    """Writes the image tagged `tag` (e.g. "podnet.test/busybox:1") to `path`."""
    layer = _layer()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sleep", "2147483647"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "podnet scripts/runtimes/image.py"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "layer", mode=0o755, kind=tarfile.DIRTYPE)
        _add(tar, "layer/layer.tar", layer)
        _add(tar, config_name, config)
        _add(tar, "manifest.json", manifest)


if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2])
