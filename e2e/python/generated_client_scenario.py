"""Drives a short scenario through the client that openapi-python-client generated from the
Portunus OpenAPI document: create a user, grant it a port, push a rule as that user, read the
rule's stats. Exits non-zero (with the reason on stderr) when any step does not do what the
document promises.

Inputs (environment): PORTUNUS_BASE_URL, PORTUNUS_TOKEN (a superadmin's API token),
PORTUNUS_CLIENT (a connected client's name), PORTUNUS_PORT (a free port), PORTUNUS_TARGET
(host:port of a backend). The generated package `portunus_client` must be importable.
"""

import json
import os
import sys

from portunus_client import AuthenticatedClient
from portunus_client.api.grants import create_grant
from portunus_client.api.rules import push_rule, rule_stats
from portunus_client.api.users import create_token, create_user
from portunus_client.models import (
    GrantDto,
    MintedTokenDto,
    NewGrantRequest,
    NewTokenRequest,
    NewUserRequest,
    Protocol,
    PushRuleRequest,
    RoleDto,
    RuleDto,
    RuleSpec,
    RuleStatsDto,
    UserDto,
)


def expect(value, kind, step):
    if not isinstance(value, kind):
        sys.exit(f"{step}: expected {kind.__name__}, got {value!r}")
    return value


def main():
    base = os.environ["PORTUNUS_BASE_URL"]
    port = int(os.environ["PORTUNUS_PORT"])
    client_name = os.environ["PORTUNUS_CLIENT"]
    admin = AuthenticatedClient(base_url=base, token=os.environ["PORTUNUS_TOKEN"], timeout=30.0)

    user = expect(create_user.sync(client=admin, body=NewUserRequest(id="pyuser", role=RoleDto.USER)), UserDto, "create user")
    minted = expect(create_token.sync(user.id, client=admin, body=NewTokenRequest(name="generated")), MintedTokenDto, "mint token")
    grant = expect(
        create_grant.sync(
            client=admin,
            body=NewGrantRequest(user=user.id, client=client_name, ports=port, protocols=[Protocol.TCP]),
        ),
        GrantDto,
        "create grant",
    )

    as_user = AuthenticatedClient(base_url=base, token=minted.token, timeout=30.0)
    spec = RuleSpec(listen_port=port, target=os.environ["PORTUNUS_TARGET"])
    rule = expect(push_rule.sync(client=as_user, body=PushRuleRequest(client=client_name, rule=spec)), RuleDto, "push rule")
    if rule.owner != user.id or rule.state != "active":
        sys.exit(f"push rule: unexpected rule {rule.to_dict()}")
    stats = expect(rule_stats.sync(rule.id, client=as_user, per_port=True), RuleStatsDto, "rule stats")
    if stats.rule_id != rule.id or [p.port for p in stats.per_port] != [port]:
        sys.exit(f"rule stats: unexpected {stats.to_dict()}")
    print(json.dumps({"user": user.id, "grant": grant.id, "rule": rule.id, "bytes_in": stats.totals.bytes_in}))


if __name__ == "__main__":
    main()
