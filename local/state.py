"""The local stack's state directory (.local/ by default, never committed): generated secrets and the
endpoints file. Secrets are created on first use with owner-only permissions."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path(__file__).resolve().parent.parent / ".local"
LOCAL_STACK = "Streaming-local"


@dataclass(frozen=True)
class LocalCredentials:
    access_key_id: str
    secret_access_key: str


class LocalState:
    def __init__(self, directory: Path = DEFAULT_DIR) -> None:
        self.directory = directory

    @property
    def endpoints_file(self) -> Path:
        return self.directory / "endpoints.json"

    def jwt_secret(self) -> str:
        """The HS256 signing secret of locally issued tokens."""
        return self._secret("jwt-secret", lambda: secrets.token_urlsafe(48))

    def credentials(self) -> LocalCredentials:
        """The one IAM identity the local publish endpoint accepts SigV4 signatures from."""
        raw = self._secret(
            "publisher-credentials.json",
            lambda: json.dumps(
                {
                    "access_key_id": "LOCAL" + secrets.token_hex(8).upper(),
                    "secret_access_key": secrets.token_urlsafe(30),
                }
            ),
        )
        return LocalCredentials(**json.loads(raw))

    def write_endpoints(self, outputs: dict[str, Any]) -> None:
        """Same shape as `cdk deploy --outputs-file`: {stack name: {output key: value}}."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.endpoints_file.write_text(json.dumps({LOCAL_STACK: outputs}, indent=2) + "\n")

    def _secret(self, name: str, create: Any) -> str:
        path = self.directory / name
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(create())
        return path.read_text().strip()
