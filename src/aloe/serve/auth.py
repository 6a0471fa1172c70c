"""Who may talk to `aloe serve`: its token, kept in a 0600 file of the run, and origins.

Recording writes training data, so it always needs the token, on loopback too: a server
given none makes one (`secrets.token_urlsafe`) and, as Jupyter does, prints it and writes
it to `RUN/serve.token` (owner read/write only), where `aloe robot` finds it. Tokens are
compared in constant time. A request with an `Origin` header comes from a web page, which
must not reach a robot's policy or its data: it is refused unless its origin is allowed.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import re
import secrets
from pathlib import Path

TOKEN_FILE = "serve.token"
MIN_TOKEN = 16  # characters: a guessable token is no protection
MAX_TOKEN = 512
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: fits a header


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def new_token() -> str:
    """A random token that does not start with "-": `aloe robot --token T` would read such
    a T as an option (token_urlsafe draws one in 64 that way)."""
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return token


def token_problem(token: str) -> str | None:
    """Why `token` cannot be one (None: it can)."""
    if not MIN_TOKEN <= len(token) <= MAX_TOKEN:
        return f"must be {MIN_TOKEN} to {MAX_TOKEN} characters"
    if not _TOKEN_CHARS.fullmatch(token):
        return "must be printable ASCII without spaces"
    if token.startswith("-"):
        return 'must not start with "-" (a command line reads it as an option)'
    return None


def matches(header: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries `token` (openpi's `Api-Key <token>`)."""
    given = (header or "").encode(errors="replace")
    return hmac.compare_digest(given, f"Api-Key {token}".encode())


def write_token_file(run_dir: Path, token: str) -> Path:
    """`token` into `run_dir/serve.token`, readable by its owner only, replaced atomically."""
    path = Path(run_dir) / TOKEN_FILE
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an old tmp file of another mode
        os.write(fd, f"{token}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def remove_token_file(path: Path, token: str) -> None:
    """Remove `path` if it still holds `token` (another server may have replaced it)."""
    with contextlib.suppress(OSError, ValueError):
        if read_token_file(path) == token:
            path.unlink()


def read_token_file(path: Path) -> str:
    """The token in `path`; ValueError if it does not hold one."""
    with open(path, "rb") as f:  # bounded: the path may name something endless
        token = f.read(MAX_TOKEN + 2).decode("ascii", errors="replace").strip()
    problem = token_problem(token)
    if problem:
        raise ValueError(f"{path} does not hold a token: a token {problem}")
    return token
