// Placeholder until the etcd client lands.
