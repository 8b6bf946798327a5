"""Roles are free-form names; two of them grant something."""

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
    cleaned = sorted({role.strip().lower() for role in roles if role.strip()})
    for role in cleaned:
        if "," in role or len(role) > 64:
            raise RoleError(f"invalid role name {role!r}: no commas, at most 64 characters")
    return ",".join(cleaned)


def describe_roles(roles: Iterable[str]) -> str:
    """Roles in words, for messages and the audit log: "admin, finance", or "none"."""
    return ", ".join(sorted(set(roles))) or "none"


def can_read(roles: Iterable[str]) -> bool:
    """`finance` may read everything; `admin` may too."""
    return bool(READ_ROLES.intersection(roles))


def is_admin(roles: Iterable[str]) -> bool:
    return ADMIN in set(roles)
