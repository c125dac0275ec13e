from gateway.domain import Role


async def test_create_and_get(world):
    created = await world.announce(facts={"what": "Perbaikan jalan", "where": "Jalan Merdeka"})
    assert created["status"] == "draft"
    got = await world.call("GET", f"/api/v1/announcements/{created['id']}", role=Role.AUTHOR)
    assert got.status == 200, got.body
    assert got.body["verification_code"] == created["verification_code"]
