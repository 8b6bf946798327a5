"""The two roles: `finance` reads everything; `admin` may also act and administer."""

from collections.abc import Iterable

FINANCE = "finance"
ADMIN = "admin"
READ_ROLES = frozenset({FINANCE, ADMIN})


class RoleError(ValueError):
    """A role name was refused; the message names it."""


def parse_roles(text: str) -> list[str]:
    """Roles stored as comma-separated text."""
    return [role for role in (part.strip() for part in text.split(",")) if role]


def format_roles(roles: Iterable[str]) -> str:
    """Roles as stored, once each; any other name than the two is refused, naming them."""
    cleaned = sorted({role.strip().lower() for role in roles if role.strip()})
    unknown = [role for role in cleaned if role not in READ_ROLES]
    if unknown:
        # A typo ("fiance") would otherwise give a role that grants nothing, silently.
        raise RoleError(
            f"unknown role {', '.join(repr(role[:64]) for role in unknown)}: "
            f"a role is {FINANCE!r} or {ADMIN!r}"
        )
    return ",".join(cleaned)


def describe_roles(roles: Iterable[str]) -> str:
    """Roles in words, for messages and the audit log: "admin, finance", or "none"."""
    return ", ".join(sorted(set(roles))) or "none"


def can_read(roles: Iterable[str]) -> bool:
    """`finance` may read everything; `admin` may too."""
    return bool(READ_ROLES.intersection(roles))


def is_admin(roles: Iterable[str]) -> bool:
    return ADMIN in set(roles)
