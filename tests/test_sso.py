"""Single sign-on roles (finance_core.access.sso): the email map, the groups claim, nothing else."""

from finance_core.access.sso import RoleMaps, roles_for_identity

SECRETS = {
    "auth": {"client_id": "x"},
    "dashboard_roles": {"Ana@Example.com": ["Admin"], "bob@example.com": "finance", "eve@x": []},
    "dashboard_groups": {"claim": "groups", "roles": {"finance-team": "finance", "Ops": ["admin"]}},
}
MAPS = RoleMaps.from_secrets(SECRETS)


def test_roles_come_from_the_email_map_case_insensitively():
    assert roles_for_identity({"email": " ana@example.COM "}, MAPS) == ("admin",)
    assert roles_for_identity({"email": "bob@example.com"}, MAPS) == ("finance",)
    assert roles_for_identity({"email": "eve@x"}, MAPS) == ()


def test_roles_come_from_the_groups_claim_exactly_and_add_up_with_the_map():
    assert roles_for_identity({"email": "z@x", "groups": ["finance-team"]}, MAPS) == ("finance",)
    assert roles_for_identity({"groups": "Ops"}, MAPS) == ("admin",)
    assert roles_for_identity({"groups": ["ops", "FINANCE-TEAM"]}, MAPS) == ()
    both = {"email": "bob@example.com", "groups": ["Ops"]}
    assert roles_for_identity(both, MAPS) == ("admin", "finance")


def test_nothing_else_grants_a_role():
    assert roles_for_identity({"email": "mallory@example.com", "groups": ["marketing"]}, MAPS) == ()
    # An address the provider calls unverified counts for nothing; groups still do.
    unverified = {"email": "ana@example.com", "email_verified": False, "groups": ["finance-team"]}
    assert roles_for_identity(unverified, MAPS) == ("finance",)
    # Without a configured claim, a groups claim grants nothing.
    no_claim = RoleMaps.from_secrets({"dashboard_groups": {"roles": {"finance-team": "admin"}}})
    assert roles_for_identity({"groups": ["finance-team"]}, no_claim) == ()
    assert roles_for_identity({"email": "ana@example.com"}, RoleMaps.from_secrets({})) == ()
