"""Domain code of the streaming backend: event model, role matrix, cursor, event store, publish path.

Everything here is shipped to Lambda and runs unchanged in the local stack. Nothing here imports aws_cdk
or stacks/, and nothing here builds an AWS client or an executor: the composition root
(handlers/composition.py) builds them and passes them in.
"""
