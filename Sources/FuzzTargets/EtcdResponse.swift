// Fuzz target `etcd-response`: an answer of etcd's HTTP/JSON gateway, decoded as every answer
// podnetd reads (range, txn, lease, watch-stream and keep-alive-stream lines, errors).

import Etcd

public enum EtcdResponseFuzz {
    public static func run(_ bytes: [UInt8]) {
        EtcdWireDecoding.decodeEveryAnswer(bytes)
    }
}
