"""A minimal CRI client (runtime.v1 over gRPC on a unix socket), standing in for crictl, which
Debian 12 does not package. It speaks only what the runtime suite needs: pod sandboxes, containers
in them, and ExecSync. The messages are generated from cri.proto (gen-cri.sh).

As a command: python3 cri.py SOCKET version|pods  (for looking at a running containerd by hand).
"""

import json
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cri_pb2 as pb  # noqa: E402
import cri_pb2_grpc as pb_grpc  # noqa: E402


class CRIClient:
    def __init__(self, socket, timeout=60):
        self.channel = grpc.insecure_channel("unix://" + socket)
        self.runtime = pb_grpc.RuntimeServiceStub(self.channel)
        self.timeout = timeout

    def close(self):
        self.channel.close()

    def version(self):
        return self.runtime.Version(pb.VersionRequest(version="v1"), timeout=self.timeout)

    @staticmethod
    def sandbox_config(name, uid, log_dir, ports=()):
        """`ports`: (host_port, container_port, protocol name) tuples, as a kubelet passes hostPorts."""
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="podnet-rt", attempt=0),
            hostname=name, log_directory=log_dir,
            port_mappings=[pb.PortMapping(host_port=h, container_port=c, protocol=pb.Protocol.Value(p.upper()))
                           for h, c, p in ports],
            labels={"podnet-rt": "1"})

    def run_pod(self, config):
        return self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=self.timeout).pod_sandbox_id

    def pod_status(self, pod_id):
        """(state name, IP, verbose info parsed as JSON)."""
        r = self.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True),
                                          timeout=self.timeout)
        info = json.loads(r.info["info"]) if "info" in r.info else {}
        return pb.PodSandboxState.Name(r.status.state), r.status.network.ip, info

    def stop_pod(self, pod_id):
        self.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=self.timeout)

    def remove_pod(self, pod_id):
        self.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=self.timeout)

    def pods(self):
        return list(self.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=self.timeout).items)

    def run_container(self, pod_id, sandbox_config, name, image, command):
        """Creates and starts a container in the pod; returns its ID."""
        config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
                                    command=command, log_path=name + ".log")
        cid = self.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config,
                                                                     sandbox_config=sandbox_config),
                                           timeout=self.timeout).container_id
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=self.timeout)
        return cid

    def exec_sync(self, container_id, cmd, timeout=10):
        """(exit code, stdout, stderr) of `cmd` run in the container."""
        r = self.runtime.ExecSync(pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout),
                                  timeout=timeout + self.timeout)
        return r.exit_code, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


if __name__ == "__main__":
    client = CRIClient(sys.argv[1])
    if sys.argv[2] == "version":
        print(client.version())
    elif sys.argv[2] == "pods":
        for p in client.pods():
            print(p.id, p.metadata.name, pb.PodSandboxState.Name(p.state))
