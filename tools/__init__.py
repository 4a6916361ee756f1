"""Developer tools: generators for checked-in docs."""
