#!/bin/sh
# The Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap) starts this, then proxies each
# invocation to the port and streams the response back (AWS_LWA_INVOKE_MODE=response_stream).
# The function's code and the Powertools layer (/opt/python) must be importable, as for a handler.
# No access log: a browser's EventSource sends its token in the query string.
cd "${LAMBDA_TASK_ROOT:-$(dirname "$0")/..}" || exit 1
export PYTHONPATH="${PWD}:/opt/python${PYTHONPATH:+:$PYTHONPATH}"
exec python -m uvicorn sse.app:app --host 127.0.0.1 --port "${PORT:-8080}" --no-access-log --log-level warning
