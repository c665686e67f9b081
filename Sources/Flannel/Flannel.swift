// Placeholder until the flannel plugin lands.
