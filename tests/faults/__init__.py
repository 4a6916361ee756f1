"""The fault-injection suite (marker `faults`): each listed fault, what it must not lose, and the
metric that counts it."""
