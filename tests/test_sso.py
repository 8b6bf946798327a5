"""Single sign-on roles (finance_core.access.sso): the email map, the groups claim, nothing else."""

import time

import pytest

from finance_core.access.sso import RoleMaps, roles_for_identity, sign_in_expired
from tests.support import apptest
from tests.support.apptest import METRICS, OIDC_SECRETS, app, metrics, populate

dashboard = apptest.dashboard  # the fixture

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


def test_a_sign_in_expires_with_its_id_tokens_issue_time():
    day = 86_400
    assert not sign_in_expired({"iat": 1_000}, now=1_000 + day - 1, max_age_seconds=day)
    assert sign_in_expired({"iat": 1_000}, now=1_000 + day + 1, max_age_seconds=day)
    assert sign_in_expired({}, now=1_000, max_age_seconds=day)
    assert sign_in_expired({"iat": "1000"}, now=1_000, max_age_seconds=day)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_identity_cookie_older_than_the_expiry_shows_no_data(dashboard):
    populate(dashboard)
    for age_days, signed_in in [(0.5, True), (1.5, False)]:
        at = app()
        at.secrets = OIDC_SECRETS
        issued = int(time.time() - age_days * 86_400)
        at.user = {"is_logged_in": True, "email": "alice@example.com", "iat": issued}
        at.run()
        assert not at.exception
        if signed_in:
            assert list(metrics(at)) == METRICS
        else:
            assert not at.metric and [b.label for b in at.button] == ["Sign in again"]
            assert "expired" in at.info[0].value
