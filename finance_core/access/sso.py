"""Single sign-on roles: what an OpenID Connect identity may do, from an email map or groups.

The identity provider says who someone is; the deployment says what they may do, in
`.streamlit/secrets.toml` beside `[auth]`:

    [dashboard_roles]            # email address -> role or roles
    "ana@example.com" = ["admin"]

    [dashboard_groups]           # optional: roles from a claim listing the user's groups
    claim = "groups"             # the ID token claim that holds them
    [dashboard_groups.roles]     # group -> role or roles
    "finance-team" = "finance"

An identity's roles are the union of both. Nothing else grants a role: an identity neither map
knows has none, and the dashboard shows it the no-access page. Emails count only when the
provider does not say they are unverified (`email_verified` false), and are compared
case-insensitively; group names are compared exactly (providers' group ids are case-sensitive).
Both maps are read again on every page run, so removing someone takes effect at their next click.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

EMAIL_ROLES_SECTION = "dashboard_roles"
GROUPS_SECTION = "dashboard_groups"


@dataclass(frozen=True, slots=True)
class RoleMaps:
    """The two maps, as configured."""

    email_roles: Mapping[str, Any]
    groups_claim: str | None
    group_roles: Mapping[str, Any]

    @classmethod
    def from_secrets(cls, secrets: Mapping[str, Any]) -> "RoleMaps":
        """The maps from the secrets' `dashboard_roles` and `dashboard_groups` sections."""
        email_roles = secrets.get(EMAIL_ROLES_SECTION, {})
        groups = secrets.get(GROUPS_SECTION, {})
        if not isinstance(groups, Mapping):
            groups = {}
        claim = groups.get("claim")
        group_roles = groups.get("roles", {})
        return cls(
            email_roles=email_roles if isinstance(email_roles, Mapping) else {},
            groups_claim=str(claim) if claim else None,
            group_roles=group_roles if isinstance(group_roles, Mapping) else {},
        )


def _role_names(roles: Any) -> set[str]:
    listed = [roles] if isinstance(roles, str) else list(roles or ())
    return {str(role).strip().lower() for role in listed if str(role).strip()}


def roles_for_email(email: str, email_roles: Mapping[str, Any]) -> tuple[str, ...]:
    """The roles the email map grants an address (case-insensitive)."""
    wanted = email.strip().lower()
    if not wanted:
        return ()
    for address, roles in email_roles.items():
        if str(address).strip().lower() == wanted:
            return tuple(sorted(_role_names(roles)))
    return ()


def claimed_groups(claims: Mapping[str, Any], claim: str) -> list[str]:
    """The groups a claim lists: a list of names, or one name."""
    value = claims.get(claim)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(group) for group in value]
    return []


def sign_in_expired(claims: Mapping[str, Any], *, now: float, max_age_seconds: float) -> bool:
    """Whether the identity's ID token was issued (`iat`) longer ago than a sign-in may last.

    Streamlit's identity cookie lives 30 days whatever happens; bounding it by the ID token's
    issue time makes a copy of it worthless after DASHBOARD_COOKIE_EXPIRY_DAYS, as for the
    password sign-in's cookie. A token without `iat` (every OpenID provider sets it) is expired.
    """
    issued = claims.get("iat")
    if isinstance(issued, bool) or not isinstance(issued, int | float):
        return True
    return now - issued > max_age_seconds


def roles_for_identity(claims: Mapping[str, Any], maps: RoleMaps) -> tuple[str, ...]:
    """The roles of a signed-in identity (its ID token's claims): email map and groups claim."""
    roles: set[str] = set()
    if claims.get("email_verified") is not False:
        roles.update(roles_for_email(str(claims.get("email") or ""), maps.email_roles))
    if maps.groups_claim:
        for group in claimed_groups(claims, maps.groups_claim):
            if group in maps.group_roles:
                roles.update(_role_names(maps.group_roles[group]))
    return tuple(sorted(roles))
