"""Process environment for the local runtime: state dir, defaults, embedded Redis.

Everything here only fills gaps: a variable the developer exported always wins,
so pointing the runtime at a real Postgres/Redis/LocalStack is just `export`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("infra.local.environment")

JWT_SECRET_FILE = "jwt_secret"
#: secrets.token_urlsafe(48) -> 64 characters, well over config.MIN_SECRET_BYTES.
JWT_SECRET_BYTES = 48


def prepare_state_dir(path: str | os.PathLike[str]) -> Path:
    """Create the state dir owner-only: it holds the JWT secret and the embedded Postgres data."""
    state_dir = Path(path).expanduser().resolve()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)  # mkdir's mode is masked by umask and ignored if it existed
    return state_dir


def load_or_create_jwt_secret(state_dir: Path) -> str:
    """Reuse the persisted secret so tokens survive restarts; create it 0600 otherwise."""
    path = state_dir / JWT_SECRET_FILE
    try:
        secret = path.read_text(encoding="utf-8").strip()
        if len(secret) >= JWT_SECRET_BYTES:
            os.chmod(path, 0o600)
            return secret
        log.warning("%s is too short; generating a new JWT secret", path)
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(JWT_SECRET_BYTES)
    # Write to a temp file created 0600 (never world-readable, not even briefly),
    # then rename so a crash cannot leave a truncated secret behind.
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secret + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    log.info("generated a new JWT secret in %s", path)
    return secret


def apply_defaults(state_dir: Path) -> list[str]:
    """Set development defaults for unset variables; returns the names that were set."""
    defaults: dict[str, str] = {
        "YMERA_STAGE": "development",
        "YMERA_QUEUE_PREFIX": "ymera-local",
        "AWS_DEFAULT_REGION": "us-east-1",
        # Emulators accept any credentials, but botocore refuses to sign without some.
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        # Like a Lambda cold start: a bad configuration stops `make run` at once, not at the first request.
        "YMERA_CHECK_SETTINGS_AT_IMPORT": "1",
    }
    applied = [k for k, v in defaults.items() if _setdefault(k, v)]
    # The secret is only read/generated when needed, and never logged.
    if not os.environ.get("YMERA_JWT_SECRET"):
        os.environ["YMERA_JWT_SECRET"] = load_or_create_jwt_secret(state_dir)
        applied.append("YMERA_JWT_SECRET")
    return applied


#: .chalice/config.json variables a local run never takes (see apply_chalice_config_env).
DEPLOYED_ONLY_SUFFIX = "_SECRET_ARN"


def apply_chalice_config_env(project_dir: Path, stage: str = "dev") -> list[str]:
    """Pick up non-secret knobs from .chalice/config.json, like `chalice local` does.

    Unlike `chalice local` these never override the shell or the local defaults:
    the deployed stage's queue prefix or stage name must not leak into local runs.
    """
    path = project_dir / ".chalice" / "config.json"
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return []
    env: dict[str, str] = dict(data.get("environment_variables") or {})
    env.update((data.get("stages", {}).get(stage) or {}).get("environment_variables") or {})
    # Names of the deployed stage's secrets: the local runtime has its own database, Redis and JWT secret.
    return [k for k, v in env.items() if not k.endswith(DEPLOYED_ONLY_SUFFIX) and _setdefault(k, str(v))]


def _setdefault(name: str, value: str) -> bool:
    if os.environ.get(name):
        return False
    os.environ[name] = value
    return True


def mask_url(url: str) -> str:
    """Hide the password of a URL (postgresql://u:pw@h/db -> postgresql://u:***@h/db)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class EmbeddedRedis:
    """fakeredis speaking RESP over TCP, so app code uses a plain redis:// URL."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        # Imported lazily: only needed when no REDIS_URL was given.
        from fakeredis import TcpFakeServer

        class Server(TcpFakeServer):  # type: ignore[misc]
            # socketserver's default listen backlog is 5: when the API, consumers and schedules connect at
            # once, SYNs are dropped, a connect takes > 1 s (the client's timeout) and the rate limiter's
            # breaker trips, so logins fail closed for a few seconds. A real Redis listens with 511.
            request_queue_size = 512

        # Port 0: the kernel picks a free port at bind time (no probe-then-bind race).
        self._server = Server((host, port), server_type="redis")
        # Connection threads must not keep the process alive after shutdown (set after __init__, which resets it).
        self._server.daemon_threads = True
        self.host: str = str(self._server.server_address[0])
        self.port: int = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name="fakeredis", daemon=True,
        )

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self._thread.start()
        self._preload_scripts()
        return self

    def _preload_scripts(self) -> None:
        """Load the app's Lua scripts before any request runs them.

        fakeredis's TCP server sometimes raises a NOSCRIPT reply inside its connection loop and then closes
        the connection, so redis-py's EVALSHA -> SCRIPT LOAD fallback fails with "Connection closed by
        server" (measured: 2-23 of 60 fresh servers). Real Redis never does this; with the scripts already
        loaded, EVALSHA never misses here.
        """
        import redis

        from chalicelib.ratelimit import LUA_SCRIPTS

        client = redis.Redis.from_url(self.url, socket_connect_timeout=5, socket_timeout=5)
        try:
            for script in LUA_SCRIPTS:
                client.script_load(script)
        finally:
            client.close()

    def stop(self) -> None:
        self._server.shutdown()  # also tells connection handlers to leave their loops
        self._server.server_close()
        self._thread.join(timeout=5)


def ensure_redis() -> EmbeddedRedis | None:
    """Start embedded Redis and export REDIS_URL unless the developer gave one."""
    if os.environ.get("REDIS_URL"):
        return None
    redis = EmbeddedRedis().start()
    os.environ["REDIS_URL"] = redis.url
    return redis
