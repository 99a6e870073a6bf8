"""Locust scenarios: the traffic Decider's callers send to POST /v1/decide.

Run by `loadtests/budget.py` (which generates the population, starts the service and judges
the report); by hand, against a service whose store holds that population:

    .venv/bin/python -m locust -f loadtests/locustfile.py --headless --host URL \\
        --population DIR/population.json --rate 200 -u 20 -r 20 -t 60s

Each request is one scenario, named as Locust reports it (and as loadtests/budget.toml
budgets it):

- `web known`: a logged-in person's page view: user_id and their first-party cookie id,
  context from the page (url, referrer, device, country, utm_*); a third also send the
  consent banner's state (needs the `consent` scope);
- `web anonymous`: a cookie id alone, on a product page;
- `web consent-denied`: people who never consented or whose consent expired, some also
  rejecting the banner or sending Sec-GPC;
- `web cache miss`: ids not in the cache: half a known person asked about for the first
  time (each once), half a cookie never seen before;
- `email nurture_email`, `email trial_email`: a renderer at send time, email_sha256 the
  SHA-256 of the lowercase address.

`--misses` is the share of all requests that are cache misses; the rest are drawn from the
warm pools (the runner asked about every one of them before the measured run). The web edge
sends the key in LOADTEST_WEB_KEY (scopes decide and consent), the email renderer the key in
LOADTEST_EMAIL_KEY (decide); with neither, no Authorization header (keyless loopback).

Every user paces itself to `--rate` / users requests per second, so the whole run offers a
fixed rate however fast the answers come. A request fails unless it is a 200 with a decision;
what the decisions were (personalized, suppressed, the segment) is counted per scenario and
written to `--outcomes` when the run ends.
"""

from __future__ import annotations

import csv
import json
import os
import random
import secrets
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from locust import FastHttpUser, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV
from population import B2B_PAGE, email_sha256

PAGES = {
    "home_hero": ["/", "/pricing", "/customers", "/guides/migrating-your-cms", "/blog/abm-2026"],
    "shop_product_hero": ["/products/trail-runner-3", "/products/swim-goggles", "/c/running"],
    "trial_upgrade_banner": ["/app/segments", "/app/placements", "/app/settings/billing"],
}
REFERRERS = ["https://www.google.com/", "https://www.linkedin.com/", "", "https://news.example/"]
CAMPAIGNS = ["q4-comparison-email", "spring-webinar", "brand-search", "retargeting-cart"]
WEB = {"known": 0.50, "anonymous": 0.15, "denied": 0.10}
EMAIL = 0.25  # of the requests that are not misses, as WEB's shares are

outcomes: defaultdict[str, Counter[str]] = defaultdict(Counter)
this_run: list[Environment] = []  # the environment, kept at init for the quit event


def _options(parser: LocustArgumentParser) -> None:
    parser.add_argument("--population", default="", help="population.json of the imported store")
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s, all users together")
    parser.add_argument("--misses", type=float, default=0.1, help="share of cache misses")
    parser.add_argument("--outcomes", default="", help="write decision outcomes here (JSON)")


def _remember(environment: Environment, **_: Any) -> None:
    this_run.append(environment)


def _final_reports(**_: Any) -> None:
    """Locust writes its stats CSV once a second and not after the run stops, so the last
    second's requests (and failures) would be missing from it: write them, once stopped.
    The files are replaced whole, so Locust's own writer, closing, touches the old ones."""
    options = this_run[0].parsed_options if this_run else None
    if options is None:
        return
    if options.outcomes:
        Path(options.outcomes).write_text(json.dumps(outcomes, indent=1, sort_keys=True))
    if options.csv_prefix:
        final = StatsCSV(this_run[0], PERCENTILES_TO_REPORT)
        for suffix, write in (("stats", final.requests_csv), ("failures", final.failures_csv)):
            path = Path(f"{options.csv_prefix}_{suffix}.csv")
            partial = path.with_suffix(".partial")
            with partial.open("w", newline="") as file:
                write(csv.writer(file))
            os.replace(partial, path)


# (Locust's EventHook is untyped)
events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]
events.init.add_listener(_remember)  # type: ignore[no-untyped-call]
events.quit.add_listener(_final_reports)  # type: ignore[no-untyped-call]


class Population:
    """The manifest, loaded once per process; cold ids are handed out once each."""

    loaded: Population | None = None

    def __init__(self, path: str) -> None:
        data = json.loads(Path(path).read_text())
        self.pools: dict[str, list[list[Any]]] = data
        self.cold = list(data["cold"])
        random.shuffle(self.cold)

    @classmethod
    def get(cls, path: str) -> Population:
        if cls.loaded is None:
            cls.loaded = Population(path)
        return cls.loaded


def context_for(placement: str) -> dict[str, Any]:
    """What a page knows about the moment, as a web edge sends it."""
    context: dict[str, Any] = {
        "url": "https://decider.example" + random.choice(PAGES[placement]),
        "device": random.choice(["desktop", "desktop", "mobile", "tablet"]),
        "country": random.choice(["US", "GB", "DE", "FR", "NL", "IN"]),
    }
    if referrer := random.choice(REFERRERS):
        context["referrer"] = referrer
    if random.random() < 0.3:
        context |= {
            "utm_source": random.choice(["newsletter", "google", "linkedin"]),
            "utm_medium": random.choice(["email", "cpc", "social"]),
            "utm_campaign": random.choice(CAMPAIGNS),
        }
    return context


def bearer(variable: str) -> dict[str, str]:
    key = os.environ.get(variable, "")
    return {"Authorization": f"Bearer {key}"} if key else {}


class Caller(FastHttpUser):
    """One connection of a caller: the web edge and the email renderer share the mix."""

    def on_start(self) -> None:
        options = self.environment.parsed_options
        assert options is not None
        self.population = Population.get(options.population)
        self.misses: float = options.misses
        self.interval: float = max(1, options.num_users) / options.rate
        self.next_at: float = time.monotonic() + random.random() * self.interval
        self.web_headers = bearer("LOADTEST_WEB_KEY")
        self.email_headers = bearer("LOADTEST_EMAIL_KEY")

    def wait_time(self) -> float:
        """Constant pacing from a schedule: a slow answer does not lower the offered rate
        until it takes longer than the interval itself."""
        self.next_at += self.interval
        return max(0.0, self.next_at - time.monotonic())

    @task
    def call(self) -> None:
        if random.random() < self.misses:
            self.miss()
            return
        draw = random.random()
        for pool, share in WEB.items():
            if draw < share:
                self.web(pool)
                return
            draw -= share
        self.email()

    def web(self, pool: str) -> None:
        placement, identity = random.choice(self.population.pools[pool])
        body: dict[str, Any] = {
            "placement": placement,
            "identity": identity,
            "context": context_for(placement),
        }
        headers = self.web_headers
        if pool == "denied":
            signal = random.random()
            if signal < 0.4:
                body["consent"] = {"purposes": []}  # the banner's "reject all"
            elif signal < 0.6:
                headers = headers | {"Sec-GPC": "1"}
        elif random.random() < 0.3:
            body["consent"] = {"purposes": ["personalization"]}  # the banner, accepted
        name = {"known": "web known", "anonymous": "web anonymous"}.get(pool, "web consent-denied")
        self.decide(name, body, headers)

    def miss(self) -> None:
        cold = self.population.cold
        if cold and random.random() < 0.5:
            placement, identity = cold.pop()
        else:  # a new visitor: a cookie never seen before
            placement, identity = B2B_PAGE, {"visitor_id": f"c-{secrets.token_hex(8)}"}
        body = {"placement": placement, "identity": identity, "context": context_for(placement)}
        self.decide("web cache miss", body, self.web_headers)

    def email(self) -> None:
        placement, address = random.choice(self.population.pools["recipients"])
        body = {"placement": placement, "identity": {"email_sha256": email_sha256(address)}}
        self.decide(f"email {placement}", body, self.email_headers)

    def decide(self, name: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        with self.client.post(
            "/v1/decide", json=body, headers=headers, name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:300]}")
                return
            try:
                decision = json.loads(response.text or "")
            except ValueError:
                response.failure("the answer is not JSON")
                return
            if "decision_id" not in decision:
                response.failure("the answer holds no decision")
                return
            counts = outcomes[name]
            counts["decisions"] += 1
            counts["personalized"] += bool(decision.get("personalized"))
            counts["suppressed"] += bool(decision.get("suppressed"))
            counts[f"segment {decision.get('segment')}"] += 1
