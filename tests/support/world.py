"""A running gateway for tests: the real app on a real database, two agencies, a token per role."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.appkeys import CLOCK, ENGINE
from gateway.auth import issue_token
from gateway.clock import Clock
from gateway.config import WartaConfig
from gateway.db.schema import agencies
from gateway.domain import Role

AGENCY_SLUGS = ("alpha", "beta")


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class World:
    client: TestClient[Any, Any]
    app: web.Application
    tokens: list[dict[Role, str]]
    agency_ids: list[int]

    @classmethod
    async def start(
        cls, aiohttp_client: Any, config: WartaConfig, *, clock: Clock | None = None
    ) -> World:
        app = create_app(config, clock=clock)
        client = await aiohttp_client(app)
        tokens, ids = await seed_agencies(app)
        return cls(client=client, app=app, tokens=tokens, agency_ids=ids)

    @property
    def engine(self) -> Any:
        return self.app[ENGINE]

    async def call(
        self,
        method: str,
        path: str,
        *,
        role: Role | None = Role.ADMIN,
        agency: int = 0,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        all_headers = dict(headers or {})
        if role is not None:
            all_headers["Authorization"] = f"Bearer {self.tokens[agency][role]}"
        async with self.client.request(
            method, path, json=json, data=data, headers=all_headers
        ) as response:
            text = await response.text()
            try:
                import json as json_module

                body: Any = json_module.loads(text) if text else None
            except ValueError:
                body = text
            return Answer(response.status, body, dict(response.headers))

    async def announce(self, agency: int = 0, **fields: Any) -> dict[str, Any]:
        """Create a draft as the agency's author; returns the created announcement."""
        body = {
            "title": "Jalan ditutup",
            "body": "Jalan Merdeka ditutup untuk perbaikan.",
            "channels": ["sms"],
        }
        body.update(fields)
        answer = await self.call(
            "POST", "/api/v1/announcements", role=Role.AUTHOR, agency=agency, json=body
        )
        assert answer.status == 201, answer.body
        created: dict[str, Any] = answer.body
        return created

    async def subscribe(self, phone: str, agency: int = 0, **fields: Any) -> Answer:
        body = {"phone": phone, **fields}
        return await self.call(
            "POST", "/api/v1/subscribers", role=Role.OPERATOR, agency=agency, json=body
        )


async def seed_agencies(app: web.Application) -> tuple[list[dict[Role, str]], list[int]]:
    now = app[CLOCK].now()
    tokens: list[dict[Role, str]] = []
    ids: list[int] = []
    async with app[ENGINE].begin() as conn:
        for slug in AGENCY_SLUGS:
            agency_id = await conn.scalar(
                sa.insert(agencies)
                .values(slug=slug, name=f"Agency {slug.title()}", created_at=now)
                .returning(agencies.c.id)
            )
            assert agency_id is not None
            ids.append(agency_id)
            per_role = {}
            for role in Role:
                issued = await issue_token(
                    conn, agency_id=agency_id, role=role, name=f"{slug} {role}", now=now
                )
                per_role[role] = issued.token
            tokens.append(per_role)
    return tokens, ids
