"""What the fuzz suite shares: its Hypothesis profiles, the inputs it generates and the rule every
answer is judged by.

Two profiles: `ci` (the default; `make test`: derandomized, so a run is reproducible, and small enough
to stay quick) and `fuzz` (`make fuzz`: many more examples, random each run). FUZZ_PROFILE chooses.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from streaming.errors import ErrorCode

# The fixtures (one moto table per test) are reused by every example on purpose: that is what keeps an
# example cheap, and a refusal must leave them as they were anyway.
_SHARED = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
}
settings.register_profile("ci", max_examples=1000, derandomize=True, **_SHARED)  # type: ignore[arg-type]
settings.register_profile("fuzz", max_examples=5_000, **_SHARED)  # type: ignore[arg-type]
PROFILE = os.environ.get("FUZZ_PROFILE", "ci")


def fuzzed(share: float = 1.0) -> settings:
    """The profile's settings for a test that takes `share` of its examples: an entry point that
    costs several moto calls an input takes fewer than one that is pure computation."""
    profile = settings.get_profile(PROFILE)
    return settings(profile, max_examples=max(1, int(profile.max_examples * share)))


# Every documented refusal; internal_error is the server's fault and never an answer to bad input.
REFUSALS = {error.code: error.status for error in ErrorCode if error is not ErrorCode.INTERNAL_ERROR}


def assert_refused(error: dict[str, Any], status: int | None = None) -> str:
    """An error body (`{"code", "message"}`) with a documented code, and its status if one was
    answered; returns the code."""
    assert error["code"] in REFUSALS, error
    assert isinstance(error["message"], str) and error["message"]
    if status is not None:
        assert status == REFUSALS[error["code"]], (status, error)
    return str(error["code"])


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


def nested(depth: int, leaf: str = "1") -> str:
    """A JSON document `depth` arrays and objects deep."""
    opening = "".join('{"a":[' for _ in range(depth // 2))
    return opening + leaf + "]}" * (depth // 2)


deep_documents = st.integers(min_value=50, max_value=4000).map(nested)
huge_documents = st.integers(min_value=8_000, max_value=300_000).map(lambda n: json.dumps({"x": "y" * n}))
# Bytes that are not UTF-8: a lone continuation byte, an overlong encoding, a surrogate, a truncation.
invalid_utf8 = st.tuples(
    st.binary(max_size=40), st.sampled_from([b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xff"])
).map(lambda parts: b'{"action": "' + parts[0] + parts[1] + b'"}')


def documents(structured: st.SearchStrategy[Any]) -> st.SearchStrategy[str | bytes]:
    """A raw body or message: `structured` (an almost-right shape) or any JSON, text, bytes, invalid
    UTF-8, deeply nested or huge."""
    return st.one_of(
        structured.map(json.dumps),
        json_values.map(json.dumps),
        st.text(max_size=200),
        st.binary(max_size=200),
        invalid_utf8,
        deep_documents,
        huge_documents,
    )
