"""Domain code of the streaming backend: event model, role matrix, cursor, event store, publish path.

Everything here is shipped to Lambda and runs unchanged in the local stack. Nothing here imports aws_cdk
or stacks/; AWS clients are passed in by the handlers.
"""
