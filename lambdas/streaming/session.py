"""One WebSocket connection's life on the server: registered on `$connect`, greeted on its first
message, answered per docs/protocol.md, rate limited, closed when its token expires or it abuses the
limit, forgotten on `$disconnect`. Transport-free: answers go out through a poster.

API Gateway cannot post to a connection before `$connect` has returned, so the `welcome` goes out
just before the answer to the connection's first message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from streaming import codec, protocol
from streaming.connections import Connection, ConnectionRegistry
from streaming.errors import ErrorCode, StreamingError
from streaming.management import GONE, Management, post_with_retry
from streaming.observability import logger, metrics
from streaming.ratelimit import TokenBucket
from streaming.replay import replay_after, replay_latest
from streaming.results import Page
from streaming.roles import RoleMatrix

if TYPE_CHECKING:  # the sweeper closes expired connections with this module and builds no store
    from streaming.store import EventStore

MAX_STRIKES = 20  # refused messages in a row before the server closes the connection


# Close codes (RFC 6455) of a connection someone ended on purpose: normal, going away (also what API
# Gateway says at its idle and 2-hour limits), and a close frame without a status. Anything else (1006:
# lost without a close frame, 1009, 1011, ...) is a disconnect nobody planned.
PLANNED_CLOSE_CODES = frozenset({1000, 1001, 1005})


def disconnect_kind(status_code: int | None) -> str:
    """`planned` or `unplanned`, the dimension of the Disconnects metric."""
    return "planned" if status_code in PLANNED_CLOSE_CODES else "unplanned"


class Session:
    def __init__(
        self,
        registry: ConnectionRegistry,
        store: EventStore,
        roles: RoleMatrix,
        known_types: frozenset[str],
        management: Management,
        bucket: TokenBucket,
        compress_above: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._registry = registry
        self._store = store
        self._roles = roles
        self._known_types = known_types
        self._management = management
        self._bucket = bucket
        self._compress_above = compress_above
        self._sleep = sleep

    def connect(self, connection_id: str, authorizer: Mapping[str, Any]) -> Connection:
        """Register a connection the authorizer allowed; its context carries sub, role and exp."""
        return self._registry.connect(
            connection_id, str(authorizer["sub"]), str(authorizer["role"]), int(authorizer["exp"])
        )

    def disconnect(self, connection_id: str) -> None:
        self._registry.remove(connection_id)

    def receive(self, connection_id: str, body: str | bytes | None) -> None:
        """Answer one client message. Every problem is answered with an error message; none escapes."""
        request_id = protocol.request_id_of(body)
        try:
            self._receive(connection_id, body, request_id)
        except Exception:  # a store or AWS failure: the client still gets an answer it can match
            logger.exception("message failed", extra={"connection_id": connection_id})
            failure = StreamingError(ErrorCode.INTERNAL_ERROR, "internal error; try again")
            self._send(connection_id, protocol.error(failure, request_id))

    def _receive(self, connection_id: str, body: str | bytes | None, request_id: str | None) -> None:
        try:
            connection, admission = self._registry.admit(connection_id, self._bucket)
        except LookupError:
            # Gone, or its token expired: the server closes it (a no-op if it is already closed).
            logger.info("connection gone or expired; closing it", extra={"connection_id": connection_id})
            self._management.delete(connection_id)
            return
        if admission.first:
            self._send(connection_id, self._welcome(connection))
        if not admission.allowed:
            self._refuse(connection_id, admission.strikes, request_id)
            return
        try:
            request = protocol.parse(body or "", self._known_types)
            self._answer(connection, request)
        except StreamingError as failure:
            self._send(connection_id, protocol.error(failure, request_id))

    def _answer(self, connection: Connection, request: protocol.Request) -> None:
        connection_id = connection.connection_id
        if isinstance(request, protocol.Subscribe):
            allowed = self._roles.allowed(connection.role)
            try:
                types = self._registry.subscribe(connection, request.types)
            except LookupError:
                _gone_meanwhile(connection_id)
                return
            # Read after the subscription is stored: every event after these heads is found by fan-out
            # with everything the connection now subscribes to.
            position = self._store.heads(allowed)
            answer = protocol.subscribed(types, request.types - allowed, position, request.request_id)
        elif isinstance(request, protocol.Unsubscribe):
            try:
                types = self._registry.unsubscribe(connection, request.types)
            except LookupError:
                _gone_meanwhile(connection_id)
                return
            answer = protocol.unsubscribed(types, request.request_id)
        elif isinstance(request, protocol.Ping):
            answer = protocol.pong(
                self._store.heads(self._roles.allowed(connection.role)), request.request_id
            )
        else:
            page, types = self._replay(connection, request)
            metrics.add_metric(name="Replays", unit=MetricUnit.Count, value=1)
            metrics.add_metric(name="EventsReplayed", unit=MetricUnit.Count, value=len(page.events))
            for frame in codec.event_frames(page.events, types, self._compress_above):
                status = self._post(connection_id, frame)
                if not 200 <= status < 300:
                    # No summary: the client asks again from the last cursor it got.
                    logger.warning("replay stopped", extra={"connection_id": connection_id, "status": status})
                    return
            answer = protocol.replayed(page, request.request_id)
        self._send(connection_id, answer)

    def _replay(self, connection: Connection, request: protocol.Replay) -> tuple[Page, frozenset[str]]:
        """The page, and the types its events' `prev` is among: those asked for (a type the role may
        not see is refused, as SSE refuses it) and the subscriptions, so that a replay of fewer types
        than the connection gets live never moves a client past a live event still on its way."""
        allowed = self._roles.allowed(connection.role)
        subscribed = connection.types & allowed
        types = request.types if request.types is not None else subscribed
        if not types:
            raise StreamingError(ErrorCode.INVALID_MESSAGE, "subscribe first, or name the types to replay")
        forbidden = sorted(types - allowed)
        if forbidden:
            raise StreamingError(
                ErrorCode.TYPE_NOT_ALLOWED, f"role {connection.role} may not see {forbidden}"
            )
        if request.cursor is not None:
            page = replay_after(
                self._store, self._roles, connection.role, request.cursor, types, request.limit
            )
        else:
            assert request.last is not None
            page = replay_latest(self._store, self._roles, connection.role, request.last, types)
        return page, types | subscribed

    def _welcome(self, connection: Connection) -> dict[str, Any]:
        return protocol.welcome(
            connection.connection_id,
            connection.role,
            self._roles.allowed(connection.role),
            self._store.heads(self._roles.allowed(connection.role)),  # only the streams it may see
            connection.expires_at,
        )

    def _refuse(self, connection_id: str, strikes: int, request_id: str | None) -> None:
        refusal = StreamingError(
            ErrorCode.RATE_LIMITED,
            f"more than {self._bucket.rate:g} messages per second (burst {self._bucket.burst}); "
            f"{MAX_STRIKES} refusals before the bucket refills close the connection",
        )
        metrics.add_metric(name="MessagesRateLimited", unit=MetricUnit.Count, value=1)
        self._send(connection_id, protocol.error(refusal, request_id))
        if strikes >= MAX_STRIKES:
            logger.warning("closing abusive connection", extra={"connection_id": connection_id})
            self._management.delete(connection_id)

    def _send(self, connection_id: str, message: Mapping[str, Any]) -> None:
        self._post(connection_id, codec.dumps(message).encode())

    def _post(self, connection_id: str, data: bytes) -> int:
        status, retries = post_with_retry(self._management, connection_id, data, self._sleep)
        if retries:
            metrics.add_metric(name="DeliveryRetries", unit=MetricUnit.Count, value=retries)
        return status


def _gone_meanwhile(connection_id: str) -> None:
    """$disconnect removed the connection while its message was answered: nobody to answer."""
    logger.info("connection gone while answering", extra={"connection_id": connection_id})


def close_expired(registry: ConnectionRegistry, management: Management) -> int:
    """Close every connection that has expired, its token or its time limit (run on a schedule);
    returns how many. A close that fails keeps its expiry record, so the next run tries again."""
    closed = 0
    for connection_id, expiry_key in registry.expiry.due():
        status = management.delete(connection_id)
        if not (200 <= status < 300 or status == GONE):
            logger.warning("could not close expired connection", extra={"connection_id": connection_id})
            continue
        registry.remove(connection_id)  # $disconnect is best effort
        registry.expiry.forget(expiry_key)
        closed += 1
    if closed:
        logger.info("closed expired connections", extra={"count": closed})
    return closed


def send_reconnect_notices(
    registry: ConnectionRegistry, management: Management, sleep: Callable[[float], None] = time.sleep
) -> int:
    """Tell each connection that expires within the notice window, once, that it will be closed and
    when (run on a schedule, after `close_expired`); returns how many were told. The notice is marked
    sent before it is posted, so two overlapping sweeps never both send it; one that could not be
    posted is unmarked for the next sweep, and a connection that is gone (410) is removed."""
    sent = 0
    for notice in registry.expiry.notices_due():
        if not registry.expiry.claim(notice):
            continue
        message = codec.dumps(protocol.reconnect(notice.reason, notice.at)).encode()
        status, _ = post_with_retry(management, notice.connection_id, message, sleep)
        if status == GONE:
            registry.remove(notice.connection_id)  # $disconnect is best effort
            registry.expiry.forget(notice.expiry_key)
        elif 200 <= status < 300:
            sent += 1
        else:
            logger.warning(
                "could not send reconnect notice",
                extra={"connection_id": notice.connection_id, "status": status},
            )
            registry.expiry.release(notice)
    if sent:
        logger.info("sent reconnect notices", extra={"count": sent})
    return sent
