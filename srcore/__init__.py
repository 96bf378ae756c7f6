"""srcore."""
