"""A generated population for the load test: profiles to import, and the ids callers send.

`generate(visitors, accounts, now, seed)` gives the profiles as JSONL records in the import
format (README "Importing profiles") and a manifest of the identities the Locust scenarios
draw from. Traits are set relative to `now` so the sample rules' recency windows hold: every
sample segment has people in it, and some people match none. Deterministic for a seed, so two
runs load the same people.

Accounts cycle through archetypes (customer expanding, top-tier evaluation, mid-tier surge,
dormant ICP, out of ICP, no segment). Visitors are B2B people at those accounts, shoppers,
trial users and anonymous cookies; some gave no consent, some let it expire, some
unsubscribed. A share of the known people (`cold`) is kept out of every warm pool: the
cache-miss scenario uses each of them once, so their first lookup reaches the store.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

Record = dict[str, Any]

# web placements by the kind of person who sees them; email placements by who is sent one
B2B_PAGE = "home_hero"
SHOP_PAGE = "shop_product_hero"
TRIAL_PAGE = "trial_upgrade_banner"
COLD_SHARE = 0.2  # of known visitors, kept cold for the cache-miss scenario


@dataclass
class Manifest:
    """What callers know about the population: ids as they send them, by scenario.

    Web entries are `[placement, identity]`; email entries are `[placement, address]`, the
    address in the case a CRM holds it (the caller lowercases and hashes it)."""

    known: list[list[Any]] = field(default_factory=list)
    anonymous: list[list[Any]] = field(default_factory=list)
    denied: list[list[Any]] = field(default_factory=list)
    recipients: list[list[Any]] = field(default_factory=list)
    cold: list[list[Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, list[list[Any]]]:
        return {
            "known": self.known,
            "anonymous": self.anonymous,
            "denied": self.denied,
            "recipients": self.recipients,
            "cold": self.cold,
        }


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def email_sha256(address: str) -> str:
    """The hash callers send: SHA-256 of the lowercase address, as hex."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


def _account(n: int, now: datetime, rng: random.Random) -> Record:
    def ago(days: float) -> str:
        return stamp(now - timedelta(days=days))

    roles = ["vp", "practitioner", "economic_buyer", "champion", "manager"]
    traits: Record = {
        "name": f"Company {n}",
        "industry": rng.choice(["software", "logistics", "retail", "healthcare", "finance"]),
        "employees": rng.randint(10, 20_000),
        "lifecycle": "prospect",
    }
    archetype = n % 6
    if archetype == 0:  # b2b_expansion
        traits |= {
            "fit_score": rng.randint(70, 99),
            "stage": "post_purchase",
            "lifecycle": "customer",
            "last_seen_at": ago(rng.uniform(0.1, 5)),
            "committee_roles_seen": rng.sample(roles, 2),
            "expansion_topics": rng.sample(["sso", "audit_log", "emea rollout", "seats"], 2),
        }
    elif archetype == 1:  # b2b_top_tier_evaluation
        traits |= {
            "fit_score": rng.randint(80, 99),
            "stage": "evaluation",
            "last_seen_at": ago(rng.uniform(0.1, 10)),
            "committee_roles_seen": rng.sample(roles, rng.randint(3, 5)),
        }
    elif archetype == 2:  # b2b_mid_tier_surge
        traits |= {
            "fit_score": rng.randint(50, 79),
            "stage": "vendor_aware",
            "last_seen_at": ago(rng.uniform(0.1, 3)),
            "intent_surge_at": ago(rng.uniform(0.5, 5)),
            "intent_topics": ["pricing", "comparison"],
            "committee_roles_seen": rng.sample(roles, 1),
        }
    elif archetype == 3:  # b2b_icp_awareness_dormant
        traits |= {
            "fit_score": rng.randint(50, 90),
            "stage": rng.choice(["awareness", "problem_aware"]),
            "last_seen_at": ago(rng.uniform(35, 120)),
            "committee_roles_seen": rng.sample(roles, 1),
        }
    elif archetype == 4:  # b2b_out_of_icp
        traits |= {
            "fit_score": rng.randint(5, 39),
            "stage": "awareness",
            "last_seen_at": ago(rng.uniform(0.1, 20)),
            "committee_roles_seen": [],
        }
    else:  # fits no segment: mid fit, recently seen, early stage
        traits |= {
            "fit_score": rng.randint(40, 49),
            "stage": "problem_aware",
            "last_seen_at": ago(rng.uniform(0.1, 20)),
            "committee_roles_seen": rng.sample(roles, 2),
        }
    flags = ["legal_hold"] if rng.random() < 0.01 else []
    return {"kind": "account", "id": f"acc-{n:05d}", "flags": flags, "traits": traits}


def _consent(
    now: datetime, rng: random.Random, purposes: list[str], *, expired: bool = False
) -> list[Record]:
    """Consent records for `purposes`, granted months ago; `expired`: and lapsed since."""
    granted = now - timedelta(days=rng.uniform(100, 400))
    expires = stamp(now - timedelta(days=rng.uniform(1, 60))) if expired else None
    return [
        {"purpose": p, "basis": "consent", "granted_at": stamp(granted), "expires_at": expires}
        for p in purposes
    ]


def _shop(now: datetime, rng: random.Random) -> Record:
    kind = rng.randrange(3)
    categories = ["running", "hiking", "swim", "cycling", "yoga"]
    if kind == 0:  # shop_high_intent
        return {
            "session_at": stamp(now - timedelta(hours=rng.uniform(0.1, 20))),
            "direct_product_entry": True,
            "products_viewed": 1,
            "categories_viewed": rng.sample(categories, 1),
            "cart_adds": rng.randint(1, 3),
            "cart_removes": 0,
        }
    if kind == 1:  # shop_comparison
        return {
            "session_at": stamp(now - timedelta(days=rng.uniform(1.1, 6))),
            "direct_product_entry": False,
            "products_viewed": rng.randint(3, 12),
            "categories_viewed": rng.sample(categories, 1),
            "cart_adds": rng.randint(2, 5),
            "cart_removes": rng.randint(1, 2),
        }
    return {  # shop_browser
        "session_at": stamp(now - timedelta(days=rng.uniform(0.1, 6))),
        "direct_product_entry": False,
        "products_viewed": rng.randint(2, 15),
        "categories_viewed": rng.sample(categories, rng.randint(2, 4)),
        "cart_adds": 0,
        "cart_removes": 0,
    }


def _trial(now: datetime, rng: random.Random) -> Record:
    started = now - timedelta(days=rng.uniform(4, 13))
    kind = rng.randrange(3)
    trial: Record = {"started_at": stamp(started)}
    if kind == 0:  # trial_fast_activator
        trial["core_activated_at"] = stamp(started + timedelta(hours=rng.uniform(2, 70)))
        trial["features_explored"] = rng.randint(1, 8)
        trial["last_active_at"] = stamp(now - timedelta(hours=rng.uniform(1, 30)))
    elif kind == 1:  # trial_stalled
        trial["features_explored"] = rng.randint(0, 3)
        trial["last_active_at"] = stamp(now - timedelta(days=rng.uniform(4.5, 8)))
    else:  # trial_explorer
        trial["features_explored"] = rng.randint(4, 10)
        trial["last_active_at"] = stamp(now - timedelta(hours=rng.uniform(1, 60)))
    return trial


def generate(
    visitors: int, accounts: int, now: datetime, seed: int = 10
) -> tuple[list[Record], Manifest]:
    """`accounts` account and `visitors` visitor records, and who callers may ask about."""
    rng = random.Random(seed)
    records = [_account(n, now, rng) for n in range(accounts)]
    manifest = Manifest()
    for n in range(visitors):
        cookie = f"c-{rng.getrandbits(64):016x}"  # the visitor id is the first-party cookie
        draw = rng.random()
        record: Record = {"kind": "visitor", "id": cookie, "flags": [], "traits": {}}
        if draw < 0.15:
            # anonymous: a cookie with a consent banner answer and a shop session, no login
            record["consent"] = _consent(now, rng, ["personalization"])
            record["traits"] = {"shop": _shop(now, rng)}
            manifest.anonymous.append([SHOP_PAGE, {"visitor_id": cookie}])
            records.append(record)
            continue
        user_id = f"u-{n:06d}"
        address = f"Person.{n:06d}@Mail{n % 7}.Example"  # as a CRM keeps it: mixed case
        record["user_ids"] = [user_id]
        record["email_sha256"] = [email_sha256(address)]
        if draw < 0.60 and accounts:
            account = rng.randrange(accounts)
            record["account_id"] = f"acc-{account:05d}"
            record["traits"] = {
                "role": rng.choice(["vp", "practitioner", "manager", "champion"]),
                "last_seen_at": stamp(now - timedelta(days=rng.uniform(0.1, 30))),
            }
            page, email = B2B_PAGE, "nurture_email"
        elif draw < 0.80:
            record["traits"] = {"shop": _shop(now, rng)}
            page, email = SHOP_PAGE, "shop_promo_email"
        else:
            record["traits"] = {"trial": _trial(now, rng)}
            page, email = TRIAL_PAGE, "trial_email"
        consent = rng.random()
        if consent < 0.12:  # never consented
            record["consent"] = []
        elif consent < 0.15:  # consented once; it has expired
            record["consent"] = _consent(
                now, rng, ["personalization", "email_marketing"], expired=True
            )
        else:
            record["consent"] = _consent(now, rng, ["personalization", "email_marketing"])
        if rng.random() < 0.04:
            record["flags"] = [rng.choice(["unsubscribed", "bounced", "do_not_contact"])]
        records.append(record)
        identity = {"user_id": user_id, "visitor_id": cookie}
        if rng.random() < COLD_SHARE:  # asked about once, by the cache-miss scenario
            manifest.cold.append([page, identity])
            continue
        if consent < 0.15:
            manifest.denied.append([page, identity])
        else:
            manifest.known.append([page, identity])
        if email in ("nurture_email", "trial_email"):
            manifest.recipients.append([email, address])
    return records, manifest
