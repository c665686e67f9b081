// Placeholder until the overlay lands.
