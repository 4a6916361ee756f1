"""Developer tools: generators for checked-in docs."""

import sys
from pathlib import Path

# The tools read the shipped code, which imports as `streaming` (as in Lambda, where lambdas/ is the root).
_LAMBDA_ROOT = str(Path(__file__).resolve().parent.parent / "lambdas")
if _LAMBDA_ROOT not in sys.path:
    sys.path.insert(0, _LAMBDA_ROOT)
