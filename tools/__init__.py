"""Developer tools: generators for checked-in docs."""

import os
import sys
from pathlib import Path

# stacks.config imports the CDK, whose jsii runtime prints a banner on Node 20 (as the Makefile does).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

# The tools read the shipped code, which imports as `streaming` (as in Lambda, where lambdas/ is the root).
_LAMBDA_ROOT = str(Path(__file__).resolve().parent.parent / "lambdas")
if _LAMBDA_ROOT not in sys.path:
    sys.path.insert(0, _LAMBDA_ROOT)
