"""The embedded local stack: moto server for AWS, the real handlers behind loopback HTTP endpoints."""
