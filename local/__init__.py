"""The embedded local stack: moto server for AWS, the real handlers behind loopback HTTP endpoints."""

import sys
from pathlib import Path

# As in Lambda, where the asset root is on sys.path, the handler code imports as `streaming`/`handlers`.
_LAMBDA_ROOT = str(Path(__file__).resolve().parent.parent / "lambdas")
if _LAMBDA_ROOT not in sys.path:
    sys.path.insert(0, _LAMBDA_ROOT)
