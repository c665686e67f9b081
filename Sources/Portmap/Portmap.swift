// Placeholder until the portmap plugin lands.
