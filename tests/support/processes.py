"""For tests that run ``warta serve`` as separate OS processes: ports and API tokens."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import sqlalchemy as sa

from gateway.auth import issue_token
from gateway.config import DatabaseConfig
from gateway.db.engine import create_engine
from gateway.db.schema import agencies
from gateway.domain import Role


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def seed_tokens(database_url: str, *, slug: str) -> dict[Role, str]:
    """One agency named ``slug`` with an author, approver and operator token each."""
    engine = create_engine(DatabaseConfig(url=database_url))
    try:
        async with engine.begin() as conn:
            now = datetime.now(UTC)
            agency_id = await conn.scalar(
                sa.insert(agencies)
                .values(slug=slug, name=f"{slug.title()} Test Agency", created_at=now)
                .returning(agencies.c.id)
            )
            assert agency_id is not None
            tokens = {}
            for role in (Role.AUTHOR, Role.APPROVER, Role.OPERATOR):
                issued = await issue_token(
                    conn, agency_id=agency_id, role=role, name=str(role), now=now
                )
                tokens[role] = issued.token
            return tokens
    finally:
        await engine.dispose()
