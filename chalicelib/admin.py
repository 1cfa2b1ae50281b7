"""Operator commands. The only way to make the first admin (the API never grants a role at registration).

    python -m chalicelib.admin create-admin --username root --email root@example.com

The password comes from YMERA_ADMIN_PASSWORD or an interactive prompt, never
from the command line (argv shows up in `ps` and shell history). It follows
the same rules as registration (8+ characters, at most 72 bytes).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from chalicelib.errors import AppError

PASSWORD_ENV = "YMERA_ADMIN_PASSWORD"


def _read_password(env: Mapping[str, str], prompt: Callable[[str], str]) -> str:
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    first = prompt("Password for the new admin: ")
    if prompt("Repeat the password: ") != first:
        raise SystemExit("error: the passwords do not match")
    return first


def create_admin(username: str, email: str, password: str) -> str:
    """Register an admin through the same service as /auth/register; returns the new user's id."""
    from pydantic import ValidationError

    from chalicelib.container import get_container
    from chalicelib.domain.rbac import Role
    from chalicelib.schemas.users import RegisterRequest
    from chalicelib.services.meta import RequestMeta

    try:
        req = RegisterRequest(username=username, email=email, password=password)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"error: {problems}") from exc
    try:
        user = get_container().users.register(req, RequestMeta(), role=Role.ADMIN, via="cli")
    except AppError as exc:
        raise SystemExit(f"error: {exc.message}") from exc
    return str(user.id)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
         prompt: Callable[[str], str] = getpass.getpass) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.admin", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-admin", help="create a user with the admin role",
                                 description=f"The password is read from ${PASSWORD_ENV} or prompted for.")
    create.add_argument("--username", required=True)
    create.add_argument("--email", required=True)
    args = parser.parse_args(argv)
    password = _read_password(os.environ if env is None else env, prompt)
    user_id = create_admin(args.username, args.email, password)
    print(f"created admin {args.username} ({user_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
