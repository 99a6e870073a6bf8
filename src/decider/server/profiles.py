"""The profile write API: create, replace, merge and erase profiles in the embedded store, and
tell the service that a profile API's profile changed.

Reads need an API key with the profiles-read scope (or profiles-write), writes one with
profiles-write. A write is normalized as an import is (decider.traits), lands in the store,
is applied to this process's caches at once, and reaches every other process through the
store's change feed before its next decision.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar import Request, Router, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath
from litestar.types import Middleware

from decider.errors import InvalidRequest, ProfileSourceError, ReadOnlySource
from decider.model import PROBLEM_JSON, Identity, ProblemDetails, decode_body
from decider.profile import AccountProfile, VisitorProfile, normalized
from decider.profiles.resolver import Resolver
from decider.profiles.sources.base import ProfileSource, ProfileStore
from decider.server.auth import REFUSED, REQUIREMENT
from decider.server.openapi import body_operation
from decider.server.peers import Peers
from decider.service import Decider
from decider.traits import TraitError

P = TypeVar("P", VisitorProfile, AccountProfile)
T = TypeVar("T")


class ProfilePatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A merge: top-level traits set (null removes one), flags added and removed."""

    traits: dict[str, Any] = {}
    add_flags: frozenset[str] = frozenset()
    remove_flags: frozenset[str] = frozenset()


class Forgotten(msgspec.Struct, frozen=True):
    """How many cached entries an invalidation dropped, by kind."""

    visitors: int
    accounts: int
    aliases: int


def _answers(*statuses: int) -> dict[int, ResponseSpec]:
    words = {
        400: "The body is not JSON (or not UTF-8), or the path is not an id",
        404: "No such profile",
        409: "Read-only source, or a user id or email hash another visitor holds",
        413: "The body is larger than DECIDER_MAX_BODY_BYTES",
        422: "A field is wrong; `field` names it",
        503: "The profile store is unavailable",
    }
    bodies = (413,) if 422 in statuses else ()
    specs = {
        status: ResponseSpec(
            ProblemDetails,
            generate_examples=False,
            media_type=PROBLEM_JSON,
            description=words[status],
        )
        for status in (400, *statuses, *bodies, 503)
    }
    return {**specs, **REFUSED}


@get("/visitors/{visitor_id:path}", operation_id="getVisitor", responses=_answers(404))
async def get_visitor(
    visitor_id: FromPath[str], source: NamedDependency[ProfileSource]
) -> VisitorProfile:
    """A stored visitor, as the rules see it (right of access)."""
    return _found(await _store(source).visitor(_id(visitor_id)))


@get("/accounts/{account_id:path}", operation_id="getAccount", responses=_answers(404))
async def get_account(
    account_id: FromPath[str], source: NamedDependency[ProfileSource]
) -> AccountProfile:
    return _found(await _store(source).account(_id(account_id)))


@put(
    "/visitors/{visitor_id:path}",
    operation_id="putVisitor",
    operation_class=body_operation(VisitorProfile),
    responses=_answers(409, 422),
)
async def put_visitor(
    visitor_id: FromPath[str],
    request: Request[Any, Any, Any],
    source: NamedDependency[ProfileSource],
    resolver: NamedDependency[Resolver],
    decider: NamedDependency[Decider],
) -> VisitorProfile:
    """Create or replace a visitor; its user ids and email hashes become exactly these."""
    profile = _decode(await request.body(), VisitorProfile, _id(visitor_id))
    return await _write(_store(source), profile, resolver, decider)


@put(
    "/accounts/{account_id:path}",
    operation_id="putAccount",
    operation_class=body_operation(AccountProfile),
    responses=_answers(409, 422),
)
async def put_account(
    account_id: FromPath[str],
    request: Request[Any, Any, Any],
    source: NamedDependency[ProfileSource],
    resolver: NamedDependency[Resolver],
    decider: NamedDependency[Decider],
) -> AccountProfile:
    profile = _decode(await request.body(), AccountProfile, _id(account_id))
    return await _write(_store(source), profile, resolver, decider)


@patch(
    "/visitors/{visitor_id:path}",
    operation_id="patchVisitor",
    operation_class=body_operation(ProfilePatch),
    responses=_answers(404, 409, 422),
)
async def patch_visitor(
    visitor_id: FromPath[str],
    request: Request[Any, Any, Any],
    source: NamedDependency[ProfileSource],
    resolver: NamedDependency[Resolver],
    decider: NamedDependency[Decider],
) -> VisitorProfile:
    """Merge traits and flags into a stored visitor (an unsubscribe: add_flags), with no
    other write between the read and the write."""
    changes = _decode(await request.body(), ProfilePatch)
    store = _store(source)
    return await _merge(
        store, VisitorProfile, _id(visitor_id), changes, resolver=resolver, decider=decider
    )


@patch(
    "/accounts/{account_id:path}",
    operation_id="patchAccount",
    operation_class=body_operation(ProfilePatch),
    responses=_answers(404, 409, 422),
)
async def patch_account(
    account_id: FromPath[str],
    request: Request[Any, Any, Any],
    source: NamedDependency[ProfileSource],
    resolver: NamedDependency[Resolver],
    decider: NamedDependency[Decider],
) -> AccountProfile:
    changes = _decode(await request.body(), ProfilePatch)
    store = _store(source)
    return await _merge(
        store, AccountProfile, _id(account_id), changes, resolver=resolver, decider=decider
    )


@delete("/visitors/{visitor_id:path}", operation_id="deleteVisitor", responses=_answers(404, 409))
async def delete_visitor(
    visitor_id: FromPath[str],
    source: NamedDependency[ProfileSource],
    resolver: NamedDependency[Resolver],
) -> None:
    """Erase a visitor, its user ids and email hashes (right to erasure)."""
    change = await _store(source).delete(VisitorProfile, _id(visitor_id))
    resolver.apply(_found(change))


@delete("/accounts/{account_id:path}", operation_id="deleteAccount", responses=_answers(404, 409))
async def delete_account(
    account_id: FromPath[str],
    source: NamedDependency[ProfileSource],
    resolver: NamedDependency[Resolver],
) -> None:
    change = await _store(source).delete(AccountProfile, _id(account_id))
    resolver.apply(_found(change))


@post(
    "/invalidate",
    operation_id="invalidate",
    status_code=200,
    operation_class=body_operation(Identity),
    responses=_answers(422),
)
async def invalidate(
    request: Request[Any, Any, Any],
    resolver: NamedDependency[Resolver],
    peers: NamedDependency[Peers],
) -> Forgotten:
    """A profile changed at its source (a profile API's webhook): forget every cached entry
    of the person the ids name, in every worker, so the next decision fetches them anew.
    Counts are this worker's; a 503 if another worker did not confirm (send it again)."""
    identity = _decode(await request.body(), Identity)
    change = resolver.forget(identity)
    unconfirmed = await peers.tell(msgspec.json.encode(identity))
    if unconfirmed:
        workers = ", ".join(map(str, unconfirmed))
        raise ProfileSourceError(f"workers {workers} did not confirm they forgot; send it again")
    return Forgotten(len(change.visitors), len(change.accounts), len(change.aliases))


def profiles_router(door: Middleware) -> Router:
    """The profile routes behind `door`."""
    return Router(
        path="/v1/profiles",
        route_handlers=[
            get_visitor,
            get_account,
            put_visitor,
            put_account,
            patch_visitor,
            patch_account,
            delete_visitor,
            delete_account,
            invalidate,
        ],
        middleware=[door],
        security=REQUIREMENT,
        tags=["profiles"],
    )


async def _write(store: ProfileStore, profile: P, resolver: Resolver, decider: Decider) -> P:
    try:
        profile = normalized(profile, decider.ruleset.schema)
    except TraitError as exc:
        raise InvalidRequest(exc.path, exc.message) from None
    resolver.apply(await store.put(profile))
    return profile


async def _merge(
    store: ProfileStore,
    kind: type[P],
    key: str,
    changes: ProfilePatch,
    *,
    resolver: Resolver,
    decider: Decider,
) -> P:
    """`changes` merged into a stored profile at once (ProfileStore.patch), normalized."""
    schema = decider.ruleset.schema

    def update(current: P) -> P:
        return normalized(_merged(current, changes), schema)

    try:
        done = await store.patch(kind, key, update)
    except TraitError as exc:
        raise InvalidRequest(exc.path, exc.message) from None
    profile, change = _found(done)
    resolver.apply(change)
    return profile


def _merged(current: P, changes: ProfilePatch) -> P:
    traits = {**current.traits, **changes.traits}
    traits = {key: value for key, value in traits.items() if value is not None}
    flags = (current.flags | changes.add_flags) - changes.remove_flags
    return msgspec.structs.replace(current, traits=traits, flags=flags)


_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(kind)
    for kind in (VisitorProfile, AccountProfile, ProfilePatch, Identity)
}


def _decode(body: bytes, kind: type[T], path_id: str | None = None) -> T:
    """The body, strictly, as `kind`; errors name the field. A profile's `id` must be the
    path's."""
    value: T = decode_body(body, _DECODERS[kind])
    if path_id is not None and getattr(value, "id", path_id) != path_id:
        raise InvalidRequest("id", "must be the id in the path")
    return value


def _id(path: str) -> str:
    """An id from the path: a `path` parameter, so ids may hold `/` (sent as %2F)."""
    return path.removeprefix("/")


def _store(source: ProfileSource) -> ProfileStore:
    if not isinstance(source, ProfileStore):
        raise ReadOnlySource(
            "the http profile source is read-only: change the profile in your profile API, "
            "then POST /v1/profiles/invalidate"
        )
    return source


def _found(value: T | None) -> T:
    if value is None:
        raise NotFoundException("no such profile")
    return value
