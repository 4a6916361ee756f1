"""Client libraries for the streaming backend."""
