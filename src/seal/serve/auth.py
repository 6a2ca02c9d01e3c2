"""API keys: `SEAL_API_KEY` reads and writes, `SEAL_READ_KEY` (optional) only reads, both sent as
`Authorization: Bearer KEY`. Without SEAL_API_KEY the server makes one, once, in DATA/api_key (mode 0600),
and prints where it is, so that no server ever runs open by accident."""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

KEY_FILE = "api_key"


@dataclass(frozen=True)
class Keys:
    write: str
    read: str | None = None

    def access(self, authorization: str | None) -> str | None:
        """'write', 'read', or None for a missing or wrong key. Compared in constant time."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        if hmac.compare_digest(token.strip().encode(), self.write.encode()):
            return "write"
        if self.read and hmac.compare_digest(token.strip().encode(), self.read.encode()):
            return "read"
        return None


def load_keys(data_dir: Path) -> tuple[Keys, Path | None]:
    """The keys from the environment, else from (or newly written to) DATA/api_key; returns the file used, if any."""
    read = os.environ.get("SEAL_READ_KEY") or None
    if os.environ.get("SEAL_API_KEY"):
        return Keys(os.environ["SEAL_API_KEY"], read), None
    path = data_dir / KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return Keys(path.read_text().strip(), read), path


def client_key() -> str | None:
    """The key a CLI client sends: SEAL_API_KEY."""
    return os.environ.get("SEAL_API_KEY") or None
