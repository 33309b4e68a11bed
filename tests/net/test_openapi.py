"""/openapi.json documents exactly the routes the app serves."""

from __future__ import annotations

import re

from tests.conftest import Running

AUTOMATIC = {"HEAD", "OPTIONS"}
NOT_OURS = {"/static/<path:filename>"}  # Quart's default static route (no folder: 404)


async def test_every_route_is_documented_and_nothing_else(server: Running) -> None:
    document = (await server.http.get("/openapi.json")).json()
    documented = {
        (path, method.upper())
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = set()
    for rule in server.info.app.url_map.iter_rules():
        if rule.rule in NOT_OURS:
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in set(rule.methods) - AUTOMATIC:
            served.add((path, method))
    assert served == documented


async def test_every_operation_has_an_id_and_error_responses_share_one_schema(
    server: Running,
) -> None:
    document = (await server.http.get("/openapi.json")).json()
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for name, response in document["components"]["responses"].items():
        assert name.startswith("E")
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
