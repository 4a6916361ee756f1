"""Server-Sent Events over Lambda response streaming: an ASGI app that uvicorn serves, locally and
behind the Lambda Web Adapter (run.sh)."""
