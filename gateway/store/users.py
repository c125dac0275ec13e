"""Dashboard users: created by an administrator (``warta users add``), signed in by password.

Passwords are hashed with argon2id (argon2-cffi's defaults: memory-hard, salted, parameters
inside the encoded hash, so raising them later only needs ``needs_rehash`` at the next login).
Hashing costs tens of milliseconds of CPU, so callers on the event loop run it in a thread.

Each user acts through a credential row of their own in ``api_tokens``: its random secret is
thrown away at creation, so nobody can use it as an API token, but its id is what announcements
(``created_by``, ``approved_by``), the inbox and the audit log already record. A signed-in
author is therefore subject to the very same two-person rule as an author's API token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.auth import Principal, issue_token
from gateway.db.schema import agencies, api_tokens, users
from gateway.domain import Role

_HASHER = PasswordHasher()
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
# Verified against when the e-mail is unknown, so a wrong address costs the same time as a
# wrong password and the answer's timing does not tell which e-mail addresses exist.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(24))


class UserProblem(ValueError):
    """A user cannot be created as asked; the message never contains the password."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    agency_id: int
    agency_slug: str
    email: str
    display_name: str
    role: Role
    token_id: int
    disabled: bool
    sessions_valid_after: datetime | None
    password_hash: str = field(repr=False, default="")
    # Set by an administrator: the user must choose their own before anything else.
    password_temporary: bool = False

    def principal(self) -> Principal:
        return Principal(
            token_id=self.token_id,
            agency_id=self.agency_id,
            role=self.role,
            name=f"user:{self.email}",
        )


def normalise_email(email: str) -> str:
    return email.strip().lower()


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserProblem(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserProblem(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; an unknown user (``None``) costs one verification too."""
    try:
        _HASHER.verify(password_hash or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    return _HASHER.check_needs_rehash(password_hash)


def _select() -> sa.Select[tuple[object, ...]]:
    return sa.select(users, agencies.c.slug.label("agency_slug")).join(
        agencies, agencies.c.id == users.c.agency_id
    )


def _user(row: sa.RowMapping) -> User:
    return User(
        id=row["id"],
        agency_id=row["agency_id"],
        agency_slug=row["agency_slug"],
        email=row["email"],
        display_name=row["display_name"],
        role=Role(row["role"]),
        token_id=row["token_id"],
        disabled=row["disabled_at"] is not None,
        sessions_valid_after=row["sessions_valid_after"],
        password_hash=row["password_hash"],
        password_temporary=bool(row["password_temporary"]),
    )


async def create_user(
    conn: AsyncConnection,
    *,
    agency_slug: str,
    email: str,
    display_name: str,
    role: Role,
    password_hash: str,
    now: datetime,
    temporary: bool = False,
) -> User:
    """Insert a user and their own credential row; ``temporary``: the password was chosen
    by an administrator, and the user must replace it at their first sign-in.

    Raises:
        UserProblem: unknown agency, malformed e-mail, or the e-mail is taken in that agency.
    """
    email = normalise_email(email)
    if "@" not in email or len(email) > 254 or any(c.isspace() for c in email):
        raise UserProblem("the e-mail address is not valid")
    agency_id = await conn.scalar(sa.select(agencies.c.id).where(agencies.c.slug == agency_slug))
    if agency_id is None:
        raise UserProblem(f"no agency with the slug {agency_slug!r}")
    issued = await issue_token(
        conn, agency_id=agency_id, role=role, name=f"dashboard {email}"[:100], now=now
    )
    nested = await conn.begin_nested()
    try:
        user_id = await conn.scalar(
            sa.insert(users)
            .values(
                agency_id=agency_id,
                email=email,
                display_name=display_name.strip() or email,
                role=role.value,
                password_hash=password_hash,
                password_temporary=temporary,
                token_id=issued.id,
                created_at=now,
            )
            .returning(users.c.id)
        )
    except IntegrityError:
        await nested.rollback()
        raise UserProblem(f"{email} is already a user of {agency_slug}") from None
    await nested.commit()
    assert user_id is not None
    user = await get_user(conn, int(user_id))
    assert user is not None
    return user


async def find_for_login(conn: AsyncConnection, *, agency_slug: str, email: str) -> User | None:
    row = (
        (
            await conn.execute(
                _select().where(
                    agencies.c.slug == agency_slug.strip().lower(),
                    users.c.email == normalise_email(email),
                )
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else _user(row)


async def get_user(conn: AsyncConnection, user_id: int) -> User | None:
    row = (await conn.execute(_select().where(users.c.id == user_id))).mappings().first()
    return None if row is None else _user(row)


async def record_login(
    conn: AsyncConnection, *, user_id: int, now: datetime, new_hash: str | None = None
) -> None:
    values: dict[str, object] = {"last_login_at": now}
    if new_hash is not None:
        values["password_hash"] = new_hash
    await conn.execute(sa.update(users).where(users.c.id == user_id).values(**values))


async def end_sessions(conn: AsyncConnection, *, user_id: int, now: datetime) -> None:
    """Every session of this user issued until now stops working (logout, disabling)."""
    await conn.execute(
        sa.update(users).where(users.c.id == user_id).values(sessions_valid_after=now)
    )


async def disable_user(conn: AsyncConnection, *, user_id: int, now: datetime) -> None:
    token_id = await conn.scalar(
        sa.update(users)
        .where(users.c.id == user_id)
        .values(disabled_at=now, sessions_valid_after=now)
        .returning(users.c.token_id)
    )
    if token_id is not None:
        await conn.execute(
            sa.update(api_tokens).where(api_tokens.c.id == token_id).values(revoked_at=now)
        )


# -- management by an agency's administrators (gateway.dashboard.user_views) ----------------


class LastAdmin(UserProblem):
    """The change would leave the agency without an enabled administrator."""


async def list_users(conn: AsyncConnection, *, agency_id: int) -> list[User]:
    rows = await conn.execute(
        _select().where(users.c.agency_id == agency_id).order_by(users.c.email)
    )
    return [_user(row) for row in rows.mappings()]


async def lock_agency_users(conn: AsyncConnection, *, agency_id: int) -> None:
    """Serialise changes to one agency's users until the transaction ends, so two admins
    demoting each other at once cannot both pass the last-admin check (PostgreSQL; SQLite
    has one writer at a time anyway)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(8_000_000 + agency_id)))


async def _other_enabled_admins(conn: AsyncConnection, *, agency_id: int, user_id: int) -> int:
    count = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(users)
        .where(
            users.c.agency_id == agency_id,
            users.c.id != user_id,
            users.c.role == Role.ADMIN.value,
            users.c.disabled_at.is_(None),
        )
    )
    return int(count or 0)


async def change_role(conn: AsyncConnection, *, user: User, role: Role) -> None:
    """Give ``user`` another role (and their credential row with it).

    Raises:
        LastAdmin: ``user`` is the agency's last enabled administrator and ``role`` is not admin.
    """
    await lock_agency_users(conn, agency_id=user.agency_id)
    if (
        user.role is Role.ADMIN
        and role is not Role.ADMIN
        and not user.disabled
        and await _other_enabled_admins(conn, agency_id=user.agency_id, user_id=user.id) == 0
    ):
        raise LastAdmin("the agency's last administrator cannot be given another role")
    await conn.execute(sa.update(users).where(users.c.id == user.id).values(role=role.value))
    await conn.execute(
        sa.update(api_tokens).where(api_tokens.c.id == user.token_id).values(role=role.value)
    )


async def disable_checked(conn: AsyncConnection, *, user: User, now: datetime) -> None:
    """``disable_user``, refused for the agency's last enabled administrator.

    Raises:
        LastAdmin: as it says.
    """
    await lock_agency_users(conn, agency_id=user.agency_id)
    if (
        user.role is Role.ADMIN
        and await _other_enabled_admins(conn, agency_id=user.agency_id, user_id=user.id) == 0
    ):
        raise LastAdmin("the agency's last administrator cannot be disabled")
    await disable_user(conn, user_id=user.id, now=now)


async def enable_user(conn: AsyncConnection, *, user: User) -> None:
    await conn.execute(sa.update(users).where(users.c.id == user.id).values(disabled_at=None))
    await conn.execute(
        sa.update(api_tokens).where(api_tokens.c.id == user.token_id).values(revoked_at=None)
    )


async def set_password(
    conn: AsyncConnection,
    *,
    user_id: int,
    password_hash: str,
    now: datetime,
    temporary: bool = False,
) -> None:
    """A new password; every session the user had ends (they sign in with the new one).
    ``temporary``: an administrator set it, and the user must replace it when signing in."""
    await conn.execute(
        sa.update(users)
        .where(users.c.id == user_id)
        .values(password_hash=password_hash, password_temporary=temporary, sessions_valid_after=now)
    )
