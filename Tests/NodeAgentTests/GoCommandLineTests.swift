// flanneld's command lines and FLANNELD_* variables, rewritten for podnetd's parser: every flag in
// every Go spelling, the environment under the command line, and the flags podnetd cannot honour.

import NodeAgent
import Testing

@Suite struct GoCommandLineTests {
    let podnetd = GoCommandLine.podnetd

    func rewrite(_ arguments: [String], _ environment: [String: String] = [:]) throws -> [String] {
        try podnetd.rewrite(arguments, environment: environment)
    }

    /// Every flag that takes a value, in Go's four spellings and from the environment.
    @Test func everyValueFlagInEverySpelling() throws {
        let valued = podnetd.flags.subtracting(podnetd.booleans).sorted()
        #expect(valued.count == 22)
        for flag in valued {
            let want = ["--\(flag)=x"]
            #expect(try rewrite(["-\(flag)=x"]) == want, "\(flag)")
            #expect(try rewrite(["--\(flag)=x"]) == want, "\(flag)")
            #expect(try rewrite(["-\(flag)", "x"]) == want, "\(flag)")
            #expect(try rewrite(["--\(flag)", "x"]) == want, "\(flag)")
            #expect(try rewrite([], [GoCommandLine.environmentName(flag): "x"]) == want, "\(flag)")
        }
    }

    /// Booleans: bare, or `=` with any of Go's spellings; never a separate value.
    @Test func everyBooleanInEverySpelling() throws {
        let booleans = [
            "ip-masq", "ip-masq-fully-random-disable", "iptables-forward-rules", "ip-blackhole-route",
            "exit-on-lease-loss",
        ]
        #expect(podnetd.booleans.isSuperset(of: booleans))
        for flag in booleans {
            for on in ["-\(flag)", "--\(flag)", "-\(flag)=true", "--\(flag)=1", "-\(flag)=t", "-\(flag)=TRUE"] {
                #expect(try rewrite([on]) == ["--\(flag)"], "\(on)")
            }
            for off in ["-\(flag)=false", "--\(flag)=0", "-\(flag)=F", "-\(flag)=False"] {
                #expect(try rewrite([off]) == ["--no-\(flag)"], "\(off)")
            }
            #expect(try rewrite([], [GoCommandLine.environmentName(flag): "true"]) == ["--\(flag)"])
            #expect(try rewrite([], [GoCommandLine.environmentName(flag): "0"]) == ["--no-\(flag)"])
        }
        // Go: a boolean takes no separate value, so "false" ends the flags (and podnetd's parser
        // then refuses it as an unexpected argument).
        #expect(try rewrite(["-ip-masq", "false", "-iface", "eth0"]) == ["--ip-masq", "false", "-iface", "eth0"])
        #expect(throws: GoCommandLine.Problem("invalid boolean value \"yes\" for -ip-masq")) {
            try rewrite(["-ip-masq=yes"])
        }
    }

    /// A command line from a flanneld unit, as the reference document shows them.
    @Test func aFlanneldUnitsCommandLine() throws {
        let line = [
            "-etcd-endpoints=http://192.168.1.12:2379,http://192.168.1.13:2379", "-iface=ens3", "-iface", "10.0.0.5",
            "--iface-regex=^eth[0-9]+$", "-ip-masq", "-subnet-file", "/run/flannel/subnet.env", "-v=2",
        ]
        #expect(
            try rewrite(line) == [
                "--etcd-endpoints=http://192.168.1.12:2379,http://192.168.1.13:2379", "--iface=ens3",
                "--iface=10.0.0.5", "--iface-regex=^eth[0-9]+$", "--ip-masq",
                "--subnet-file=/run/flannel/subnet.env", "--v=2",
            ])
    }

    /// Every flag of flanneld's etcd mode (reference §7), as a unit for flanneld would write them.
    @Test func everyFlanneldFlagOfTheEtcdMode() throws {
        let line = [
            "-etcd-endpoints=http://10.0.0.1:2379", "-etcd-prefix=/coreos.com/network", "-etcd-keyfile=/k",
            "-etcd-certfile=/c", "-etcd-cafile=/ca", "-etcd-username=u", "-etcd-password=p", "-iface=10.0.0.5",
            "-iface-regex=^10\\.0\\.", "-iface-can-reach=10.0.0.1", "-public-ip=203.0.113.5",
            "-public-ipv6=2001:db8::5",
            "-subnet-file=/run/flannel/subnet.env", "-subnet-lease-renew-margin=60", "-ip-masq",
            "-ip-masq-fully-random-disable", "-iptables-resync=5", "-iptables-forward-rules=false",
            "-ip-blackhole-route", "-healthz-ip=0.0.0.0", "-healthz-port=8285", "-v=1",
            "-kube-subnet-mgr=false",
        ]
        #expect(
            try rewrite(line) == [
                "--etcd-endpoints=http://10.0.0.1:2379", "--etcd-prefix=/coreos.com/network", "--etcd-keyfile=/k",
                "--etcd-certfile=/c", "--etcd-cafile=/ca", "--etcd-username=u", "--etcd-password=p", "--iface=10.0.0.5",
                "--iface-regex=^10\\.0\\.", "--iface-can-reach=10.0.0.1", "--public-ip=203.0.113.5",
                "--public-ipv6=2001:db8::5", "--subnet-file=/run/flannel/subnet.env", "--subnet-lease-renew-margin=60",
                "--ip-masq", "--ip-masq-fully-random-disable", "--iptables-resync=5", "--no-iptables-forward-rules",
                "--ip-blackhole-route", "--healthz-ip=0.0.0.0", "--healthz-port=8285", "--v=1",
            ])
        // The same from the environment, as flanneld's packaged units set them.
        let environment = ["FLANNELD_IPTABLES_FORWARD_RULES": "false", "FLANNELD_IFACE_CAN_REACH": "10.0.0.1"]
        #expect(try rewrite([], environment) == ["--iface-can-reach=10.0.0.1", "--no-iptables-forward-rules"])
    }

    /// flanneld's SetFlagsFromEnv: a variable counts only for a flag the command line does not set.
    @Test func theCommandLineWinsOverTheEnvironment() throws {
        let environment = [
            "FLANNELD_ETCD_ENDPOINTS": "http://10.0.0.1:2379", "FLANNELD_IFACE": "eth1", "FLANNELD_IP_MASQ": "true",
            "FLANNELD_ETCD_PREFIX": "/podnet/network", "FLANNELD_UNRELATED": "x", "PATH": "/bin",
        ]
        #expect(
            try rewrite(["-iface", "eth0", "-ip-masq=false"], environment) == [
                "--etcd-endpoints=http://10.0.0.1:2379", "--etcd-prefix=/podnet/network", "--iface=eth0",
                "--no-ip-masq",
            ])
    }

    @Test func helpVersionAndTheEndOfTheFlags() throws {
        #expect(try rewrite(["-h"]) == ["--help"])
        #expect(try rewrite(["-help"]) == ["--help"])
        #expect(try rewrite(["-version"]) == ["--version"])
        #expect(try rewrite(["-iface=eth0", "--", "-ip-masq"]) == ["--iface=eth0", "--", "-ip-masq"])
        #expect(try rewrite(["-iface=eth0", "extra", "-ip-masq"]) == ["--iface=eth0", "extra", "-ip-masq"])
    }

    @Test func malformedFlagsAreRefusedInGosWords() {
        #expect(throws: GoCommandLine.Problem("flag provided but not defined: -bogus")) { try rewrite(["-bogus"]) }
        #expect(throws: GoCommandLine.Problem("flag needs an argument: -iface")) { try rewrite(["-iface"]) }
        #expect(throws: GoCommandLine.Problem("bad flag syntax: ---iface")) { try rewrite(["---iface"]) }
        #expect(throws: GoCommandLine.Problem("bad flag syntax: -=x")) { try rewrite(["-=x"]) }
    }

    /// A flanneld flag podnetd cannot honour is an error that names it, on the command line and in
    /// the environment, unless it asks for what podnetd does anyway.
    @Test func flagsPodnetdCannotHonourAreNamed() throws {
        #expect(
            throws: GoCommandLine.Problem(
                "-kube-subnet-mgr is not supported by podnetd: podnetd reads leases from etcd only")
        ) {
            try rewrite(["-kube-subnet-mgr"])
        }
        #expect(try rewrite(["-kube-subnet-mgr=false"]) == [])
        #expect(
            throws: GoCommandLine.Problem(
                "-net-config-path is not supported by podnetd: podnetd reads the network config from etcd (<etcd-prefix>/config)"
            )
        ) {
            try rewrite(["-net-config-path=/etc/kube-flannel/net-conf.json"])
        }
        #expect(
            throws: GoCommandLine.Problem(
                "FLANNELD_KUBE_SUBNET_MGR is set, but -kube-subnet-mgr is not supported by podnetd: podnetd reads leases from etcd only"
            )
        ) {
            try rewrite([], ["FLANNELD_KUBE_SUBNET_MGR": "true"])
        }
        #expect(try rewrite([], ["FLANNELD_KUBE_SUBNET_MGR": "false"]) == [])
        for flag in podnetd.unsupported.keys {
            #expect(podnetd.flags.contains(flag) == false, "\(flag) is both podnetd's and unsupported")
        }
    }
}
