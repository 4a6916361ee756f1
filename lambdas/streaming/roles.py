"""The role matrix: which event types each role may see. Deny by default; the matrix is configuration."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from streaming.errors import ErrorCode, StreamingError


class RoleMatrix:
    def __init__(self, grants: Mapping[str, Iterable[str]]) -> None:
        self._grants = {role: frozenset(types) for role, types in grants.items()}

    @property
    def names(self) -> list[str]:
        return sorted(self._grants)

    def allowed(self, role: str) -> frozenset[str]:
        """Types the role may see; an unknown role sees nothing."""
        return self._grants.get(role, frozenset())

    def visible(self, role: str, requested: Iterable[str] | None = None) -> frozenset[str]:
        """What a subscriber sees: its role's grant, narrowed to the requested types if any."""
        if role not in self._grants:
            raise StreamingError(
                ErrorCode.UNKNOWN_ROLE, f"unknown role {role!r}; known: {sorted(self._grants)}"
            )
        allowed = self._grants[role]
        return allowed if requested is None else allowed & frozenset(requested)
