// Fuzz target `subnet-env`: the subnet.env file flanneld or podnetd writes, read as the flannel
// plugin reads it, and turned into the delegate config as flannel ADD does.

import CNI
import Flannel

public enum SubnetEnvFuzz {
    /// flannel configs as kube-flannel ships them: with the defaults, and with an ipam section and
    /// a delegate that sets its own keys.
    static let configs: [FlannelConfig] = [
        #"{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}"#,
        #"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","ipam":{"routes":[{"dst":"0.0.0.0/0"}]},"delegate":{"mtu":1400,"ipMasq":false}}"#,
    ].compactMap { text in
        let env = try? CNIEnvironment([
            "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "fuzz", "CNI_NETNS": "/run/netns/fuzz",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
        ])
        guard let env, let request = try? Request(env: env, stdin: Array(text.utf8), supported: SpecVersion.allCases)
        else {
            return nil
        }
        return try? FlannelConfig(request)
    }

    public static func run(_ bytes: [UInt8]) {
        guard let env = try? SubnetEnv.parse(bytes, path: "subnet.env") else { return }
        for config in configs { _ = try? config.delegateConfig(env) }
    }
}
