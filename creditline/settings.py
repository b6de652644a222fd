"""Settings read once from ``CREDITLINE_*`` environment variables.

Every setting is listed, with its default, in the README.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from models.credits import parse_credits

MICRO = 1_000_000
"""Micro-credits in one credit."""
MIN_SECRET_KEY_LENGTH = 32
MIN_SECRET_KEY_DISTINCT = 10
"""Different characters a production secret key must have at the least (``secrets.token_urlsafe(32)`` has ~30)."""
STRIPE_SECRET_KEY_PREFIXES = ("sk_", "rk_")
ENVIRONMENTS = ("development", "production")
"""Production's shortest ``CREDITLINE_SECRET_KEY``: it signs invoice links (32 random hex characters are
128 bits)."""
JWT_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "ES256K", "EdDSA",
)  # fmt: skip
"""What ``CREDITLINE_JWT_ALGORITHMS`` may name: signatures by a key pair only. ``none`` is no signature, and
with an HS* algorithm the "secret" would be the identity provider's public key, which anyone can fetch."""
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
DEFAULT_WEB_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"
"""Where ``npm --prefix web run build`` writes the My Credit page, next to the package in a checkout."""
_FRAME_SOURCE = re.compile(r"^(https?://(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?:|'self')$")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from exc


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value <= 0:
        raise SystemExit(f"{name} must be a positive whole number, got {value}")
    return value


def _non_negative(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 0:
        raise SystemExit(f"{name} must be 0 or a positive whole number, got {value}")
    return value


def _days(env: Mapping[str, str], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        days = tuple(int(part) for part in raw.split(","))
    except ValueError as exc:
        raise SystemExit(f"{name} must be whole numbers of days separated by commas, got {raw!r}") from exc
    if any(day <= 0 for day in days) or list(days) != sorted(set(days)):
        raise SystemExit(f"{name} must be increasing positive days, got {raw!r}")
    return days


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from exc
    if not value > 0 or value == float("inf"):
        raise SystemExit(f"{name} must be a positive number, got {raw!r}")
    return value


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    """``CREDITLINE_CORS_ORIGINS``: exact origins (``scheme://host[:port]``) separated by commas, or ``*``."""
    raw = env.get("CREDITLINE_CORS_ORIGINS", "").strip()
    if not raw:
        return ()
    origins = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    if "*" in origins:
        if origins != ("*",):
            raise SystemExit(f"CREDITLINE_CORS_ORIGINS is either * alone or a list of origins, got {raw!r}")
        return origins
    for origin in origins:
        scheme, sep, host = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not host or any(c in host for c in "/?#* "):
            raise SystemExit(
                f"CREDITLINE_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port], e.g. https://app.example.com)"
            )
    return origins


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{name} must be 1 or 0, got {raw!r}")


def _environment(env: Mapping[str, str]) -> str:
    """``development`` (the default) or ``production``, exactly: anything else, such as ``Production`` or
    ``prod``, would silently serve with development's introspection, GraphiQL and sandbox."""
    raw = env.get("CREDITLINE_ENV", "")
    if raw == "":
        return "development"
    if raw not in ENVIRONMENTS:
        raise SystemExit(f"CREDITLINE_ENV must be development or production, got {raw!r}")
    return raw


def _publishable_key(env: Mapping[str, str]) -> str:
    """``CREDITLINE_STRIPE_PUBLISHABLE_KEY``: sent to every browser that opens the page, so only a key of the
    publishable form (``pk_...``) is taken; anything else (a secret key pasted in the wrong setting) stops every
    command, without echoing it."""
    raw = env.get("CREDITLINE_STRIPE_PUBLISHABLE_KEY", "").strip()
    if raw and not raw.startswith("pk_"):
        raise SystemExit(
            "CREDITLINE_STRIPE_PUBLISHABLE_KEY must be a Stripe publishable key (pk_...): it is sent to browsers"
        )
    return raw


def _looks_random(key: str) -> bool:
    return not any(char.isspace() for char in key) and len(set(key)) >= MIN_SECRET_KEY_DISTINCT


def _credits(env: Mapping[str, str], name: str, default: str) -> int:
    raw = env.get(name) or default
    try:
        return parse_credits(raw)
    except ValueError as exc:
        raise SystemExit(f"{name}: {exc}") from exc


def _names(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name, "")
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    return names or default


def _frame_ancestors(env: Mapping[str, str]) -> tuple[str, ...]:
    """``CREDITLINE_FRAME_ANCESTORS``: origins (``https://app.example.com``, ``https://*.example.com``),
    ``'self'``, or ``'none'`` alone, separated by spaces or commas; anything else could inject a directive."""
    raw = env.get("CREDITLINE_FRAME_ANCESTORS", "")
    sources = tuple(part for part in re.split(r"[\s,]+", raw) if part)
    if not sources:
        return ("'none'",)
    if sources == ("'none'",):
        return sources
    if bad := [source for source in sources if not _FRAME_SOURCE.match(source)]:
        raise SystemExit(
            "CREDITLINE_FRAME_ANCESTORS must be 'none', or origins such as https://app.example.com"
            f" (https://*.example.com for its subdomains) and 'self', got {' '.join(bad)!r}"
        )
    return sources


def _log_format(env: Mapping[str, str]) -> str:
    raw = env.get("CREDITLINE_LOG_FORMAT", "").strip().lower() or "text"
    if raw not in ("text", "json"):
        raise SystemExit(f"CREDITLINE_LOG_FORMAT must be text or json, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite://creditline.sqlite3"
    redis_url: str = ""
    redis_channel: str = "creditline:balance"
    """The Redis pub/sub channel of the events: deployments sharing one Redis each need their own."""
    gateway: str = "sandbox"
    env: str = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    signup_bonus: int = 100 * MICRO
    """Free credit granted to every new user, in micro-credits."""
    signup_bonus_days: int = 30
    hold_timeout_seconds: int = 3600
    sweep_interval_seconds: int = 30
    max_query_depth: int = 12
    max_query_tokens: int = 2000
    max_query_bytes: int = 32 * 1024
    """The longest document text accepted, in UTF-8 bytes, checked before it is parsed: the token limit does
    not count comments or the length of strings, and graphql-core's lexer, pure Python, took 130-210 ms of CPU
    for a megabyte of them (an outside attack held the server with 20 such requests a second, unauthenticated).
    A registered document (persisted documents) is not bounded by it."""
    persisted_documents: str = "off"
    """``off``, ``allow`` or ``only`` (creditline/persisted.py)."""
    documents_file: str = ""
    """The registered documents: a JSON file or a directory of ``.graphql`` files."""
    max_aliases: int = 15
    token_cache_seconds: int = 5
    token_recheck_seconds: int = 30
    """How often a live subscription re-checks that its token was not revoked."""
    token_usage_flush_seconds: int = 60
    """How often the tokens used since the last time get their ``last_used_at`` written (one statement)."""
    ws_init_timeout_seconds: int = 10
    max_subscriptions_per_connection: int = 20
    max_subscriptions_per_feed: int = 10
    """Live subscriptions one user (or one service or admin token) may hold in a process on the same feed (one
    account's balance, alerts; one organization's usage), over all its websockets and tokens: each renders
    every event of the feed."""
    access_log: bool = False
    currency: str = "USD"
    price_per_100_credits: int = 100
    """Minor units of ``currency`` that buy 100 credits (default: USD 1.00)."""
    top_up_min_credits: int = 10
    top_up_max_credits: int = 100_000
    rate_card: str = ""
    """Path of a TOML rate card; empty: the built-in one."""
    plans: str = ""
    """Path of a TOML file of subscription plans; empty: the built-in ones."""
    secret_key: str = ""
    """Signs invoice links; empty: a random key per process (links stop working when it restarts)."""
    invoice_link_days: int = 7
    """How long a signed invoice link works."""
    subscription_retry_days: tuple[int, ...] = (1, 3, 5)
    """Days after a failed renewal's due date on which it is charged again, before the subscription ends."""
    stripe_secret_key: str = field(default="", repr=False)
    """Empty: the stripe and legacy gateways start, answer billingConfig, and refuse payments."""
    stripe_webhook_secret: str = field(default="", repr=False)
    stripe_publishable_key: str = ""
    """``pk_...``: the legacy gateway's page enters cards with Stripe.js (billingConfig.stripePublishableKey);
    empty: the page asks for a PaymentMethod id made elsewhere."""
    stripe_api_base: str = ""
    """Where the Stripe SDK sends requests; empty: Stripe itself (tests point it at a local stand-in)."""
    public_url: str = "http://127.0.0.1:8000"
    """Base of the pages Stripe sends people back to after Checkout and the customer portal."""
    webhook_tolerance_seconds: int = 300
    """A signed webhook timestamp further than this in the past or the future is refused."""
    # Issue 9, point 8 (membership by invitation).
    invitation_days: int = 7
    """How long an invitation to an organization can be accepted."""
    # Replays (issue 9, point 12)
    replay_wait_seconds: int = 10
    """How long a resent topUp or subscribe waits for the first call with its key to learn the payment's
    outcome; past it, while that call may still be running, the resend is told to send again."""
    # Issue 9, points 4, 10, 11 and 18: the HTTP/ASGI transport (bodies, connections, logs, rate limits).
    batch_max_events: int = 1_000
    """Most events one ``spendCreditsBatch`` may carry."""
    max_body_bytes: int = 1 << 20
    """Largest request body, on every route; a larger one gets 413 before it is read."""
    ws_max_message_bytes: int = 64 << 10
    """Largest websocket message (graphql-transport-ws messages are a query and its variables)."""
    header_timeout_seconds: float = 10.0
    """A request's headers must arrive within this, or the connection is closed (slowloris)."""
    body_timeout_seconds: float = 30.0
    """A request's body must arrive within this after its headers, or it gets 408."""
    worker_healthcheck_seconds: int = 60
    """``serve --workers N``: how long a worker may take to answer the supervisor's health check, and a new
    one to start serving, before it is killed and replaced. A spawned worker answers only once it has imported
    the application (seconds of wall time on a loaded machine: 9 s were seen at a load of 8 on 2 cores), so
    uvicorn's 5 s default killed workers still starting, in a loop."""
    keep_alive_seconds: int = 5
    """An idle keep-alive connection is closed after this."""
    max_connections: int = 4096
    """Open connections (websockets included) past which new requests get 503; kept below the file limit."""
    max_header_bytes: int = 64 << 10
    """Largest request head (request line and headers); a larger one gets 431."""
    log_format: str = "text"
    """``text`` or ``json`` (one object per line)."""
    rate_limit: bool = True
    rate_limit_token_per_second: float = 1000.0
    rate_limit_token_burst: int = 2000
    rate_limit_anonymous_per_second: float = 20.0
    rate_limit_anonymous_burst: int = 100
    rate_limit_websocket_per_second: float = 20.0
    rate_limit_websocket_burst: int = 2000
    rate_limit_prefix: str = "creditline:ratelimit"
    """Key prefix of the buckets in Redis: deployments sharing one Redis each need their own."""
    # Live subscriptions (issue 9, points 16 and 17): slow readers, version order across processes.
    ws_send_timeout_seconds: int = 10
    """A websocket that has not taken a message within this is closed (4413) and dropped."""
    ws_max_buffered_bytes: int = 1_048_576
    """A websocket with more than this waiting unsent in the server's write buffer is closed (4413) and dropped."""
    live_reorder_ms: int = 100
    """How long a balance event that came before the versions it follows waits for them (then: the ledger)."""
    # Hostile documents (issue 9, points 1-3): limits checked before a document runs (creditline/query_limits.py).
    max_query_cost: int = 1_600
    """Most objects one operation may produce, by static analysis (lists count their page size)."""
    max_fragments: int = 20
    max_fragment_spreads: int = 50
    max_directives: int = 20
    allow_get_queries: bool = False
    """Queries over GET in production (development always allows them; mutations never)."""
    # Issue 9, points 6, 13 and 14: production refuses unsafe settings; every wait on the database is
    # bounded; readiness.
    allow_sandbox_in_production: bool = False
    """The sandbox gateway grants PAID credit for test tokens: production refuses it unless this is set."""
    db_acquire_timeout_seconds: float = 5.0
    """How long a request waits for a pooled PostgreSQL connection (and to open one) before it is refused."""
    db_statement_timeout_ms: int = 5_000
    """PostgreSQL's ``statement_timeout`` (the client gives up 1 s after it); SQLite's busy timeout."""
    readiness_timeout_seconds: float = 2.0
    """How long ``/readyz`` waits for the database and Redis before it answers 503."""
    # Issue 11, points 6 and 7: portal sessions (My Credit sign-in links) and CORS.
    portal_code_seconds: int = 600
    """How long the code of a portal link (createPortalSession) can be exchanged, once."""
    portal_idle_seconds: int = 3600
    """A portal session ends after this long without a request (sliding expiry)."""
    portal_session_max_seconds: int = 12 * 3600
    """A portal session ends this long after it was opened, however active."""
    cors_origins: tuple[str, ...] = ()
    """Origins whose pages may call the API from a browser (``*``: any); empty: CORS is off."""
    # JWT sign-in (issue 11, point 5): the platform's identity provider signs users in (creditline/jwt_keys.py,
    # resolvers/jwt_sign_in.py).
    jwt_jwks_url: str = ""
    """Where the identity provider publishes its public keys (a JWKS); or ``jwt_public_key``: one of the two
    turns JWT sign-in on."""
    jwt_public_key: str = field(default="", repr=False)
    """One PEM public key that signs every token (instead of a JWKS)."""
    jwt_issuer: str = ""
    jwt_audience: tuple[str, ...] = ()
    """A token's ``aud`` must name one of these."""
    jwt_algorithms: tuple[str, ...] = ("RS256",)
    jwt_leeway_seconds: int = 30
    """Clock skew allowed on ``exp``, ``nbf`` and ``iat``."""
    jwt_create_users: bool = False
    """Create the user of an unknown ``sub`` on first sight (with the signup bonus; it needs ``jwt_email_claim``)."""
    jwt_email_claim: str = "email"
    jwt_jwks_refresh_seconds: int = 30
    """At most one fetch of the JWKS within this: an unknown ``kid`` refreshes it, a flood of them no more often."""
    jwt_jwks_max_age_seconds: int = 3600
    """Keys older than this are fetched again on the next token (a key the provider removed stops working)."""

    # Issue 13: events for the platform (models/outbox.py), alerts, webhook delivery (creditline/webhooks/).
    default_low_balance_credits: int = 0
    """The low-balance alert level, in micro-credits, of an account that set none (``setBalanceAlerts``); 0: none."""
    credit_expiring_days: int = 7
    """``credit.expiring`` is emitted once per lot when it will expire within this many days."""
    runs_out_soon_days: int = 3
    """``balance.runs_out_soon`` is emitted when the forecast says the credit runs out within this many days."""
    event_retention_days: int = 30
    """Events (and their delivery log) older than this are pruned by the sweep."""
    webhook_allow_private: bool = False
    """Allow webhook URLs that resolve to private, loopback or link-local addresses (tests, local development)."""
    webhook_timeout_seconds: float = 10.0
    """A delivery not answered within this is a failed attempt."""
    webhook_retry_hours: int = 72
    """How long a failing delivery is retried (exponential back-off with jitter); an endpoint failing this long
    is disabled."""
    webhook_secret_grace_seconds: int = 86_400
    """After ``rotateWebhookSecret``, deliveries are signed with the old secret too for this long."""
    webhook_poll_seconds: float = 1.0
    """How often the delivery worker looks for due deliveries when nothing woke it sooner."""
    # Issue 14: the My Credit page (creditline/web_page.py).
    web_dist: str = str(DEFAULT_WEB_DIST)
    """The page's build output (``npm --prefix web run build``): index.html, graphiql.html and assets/."""
    frame_ancestors: tuple[str, ...] = ("'none'",)
    """Which pages may embed /my-credit/ in a frame (the CSP's frame-ancestors); ``'none'``: no page may."""

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def get_queries(self) -> bool:
        """Whether /graphql answers queries sent with GET."""
        return not self.production or self.allow_get_queries

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def problems(self) -> list[str]:
        """What makes these settings unsafe to serve with (production only); empty: safe."""
        if not self.production:
            return []
        found = []
        if self.gateway == "sandbox" and not self.allow_sandbox_in_production:
            found.append(
                "the sandbox gateway grants credit for test card tokens: set CREDITLINE_GATEWAY=stripe (or legacy)"
                " with its keys, or CREDITLINE_ALLOW_SANDBOX_IN_PRODUCTION=1 for a demo"
            )
        if len(self.secret_key) < MIN_SECRET_KEY_LENGTH:
            found.append(
                f"CREDITLINE_SECRET_KEY must be a secret of at least {MIN_SECRET_KEY_LENGTH} characters"
                f" ({'it is empty' if not self.secret_key else f'it has {len(self.secret_key)}'})"
            )
        elif not _looks_random(self.secret_key):
            # A key of spaces or one repeated letter has the length and none of the secrecy.
            found.append(
                "CREDITLINE_SECRET_KEY must be random, without spaces and of at least"
                f" {MIN_SECRET_KEY_DISTINCT} different characters (e.g. the output of"
                " `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        if self.gateway in ("stripe", "legacy"):
            if not self.stripe_secret_key:
                found.append(f"the {self.gateway} gateway needs CREDITLINE_STRIPE_SECRET_KEY")
            elif not self.stripe_secret_key.startswith(STRIPE_SECRET_KEY_PREFIXES):
                found.append(
                    "CREDITLINE_STRIPE_SECRET_KEY must be a Stripe secret or restricted key (sk_... or rk_...)"
                )
        if self.gateway == "stripe":
            if not self.stripe_webhook_secret:
                found.append("the stripe gateway needs CREDITLINE_STRIPE_WEBHOOK_SECRET (its webhooks finish payments)")
            elif not self.stripe_webhook_secret.startswith("whsec_"):
                found.append("CREDITLINE_STRIPE_WEBHOOK_SECRET must be a Stripe webhook signing secret (whsec_...)")
        return found

    @property
    def jwt_enabled(self) -> bool:
        return bool(self.jwt_jwks_url or self.jwt_public_key)

    def jwt_problems(self) -> list[str]:
        """What makes JWT sign-in unsafe or unusable as configured (in every environment); empty: fine or off."""
        if not self.jwt_enabled:
            return []
        found = []
        if self.jwt_jwks_url and self.jwt_public_key:
            found.append("set one of CREDITLINE_JWT_JWKS_URL and CREDITLINE_JWT_PUBLIC_KEY, not both")
        if self.jwt_jwks_url:
            url = urlsplit(self.jwt_jwks_url)
            if not url.hostname or not (
                url.scheme == "https" or (url.scheme == "http" and url.hostname in _LOOPBACK_HOSTS)
            ):
                found.append("CREDITLINE_JWT_JWKS_URL must be an https:// URL (http:// only for a loopback host)")
        if not self.jwt_issuer:
            found.append("JWT sign-in needs CREDITLINE_JWT_ISSUER (the iss its tokens must carry)")
        if not self.jwt_audience:
            found.append("JWT sign-in needs CREDITLINE_JWT_AUDIENCE (the aud its tokens must carry)")
        if not self.jwt_algorithms:
            found.append("CREDITLINE_JWT_ALGORITHMS names no algorithm")
        if refused := [name for name in self.jwt_algorithms if name not in JWT_ALGORITHMS]:
            found.append(
                f"CREDITLINE_JWT_ALGORITHMS may not name {', '.join(refused)}: only the key-pair algorithms"
                f" {', '.join(JWT_ALGORITHMS)} (never none, never HS*: its secret would be the public key)"
            )
        if self.jwt_create_users and not self.jwt_email_claim:
            found.append("CREDITLINE_JWT_CREATE_USERS needs CREDITLINE_JWT_EMAIL_CLAIM (the claim of the email)")
        return found

    def refusal(self) -> str | None:
        """The one message that refuses to start with unsafe settings, or ``None``."""
        found = self.problems()
        jwt = self.jwt_problems()
        if found:
            return "creditline: refusing to start with CREDITLINE_ENV=production: " + "; ".join(found + jwt)
        if jwt:
            return "creditline: refusing to start: " + "; ".join(jwt)
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        gateway = env.get("CREDITLINE_GATEWAY", "sandbox")
        if gateway not in ("sandbox", "stripe", "legacy"):
            raise SystemExit(f"CREDITLINE_GATEWAY must be sandbox, stripe or legacy, got {gateway!r}")
        return cls(
            database_url=env.get("CREDITLINE_DATABASE_URL") or cls.database_url,
            redis_url=env.get("CREDITLINE_REDIS_URL", ""),
            redis_channel=env.get("CREDITLINE_REDIS_CHANNEL") or cls.redis_channel,
            gateway=gateway,
            env=_environment(env),
            host=env.get("CREDITLINE_HOST", cls.host),
            port=_int(env, "CREDITLINE_PORT", cls.port),
            signup_bonus=_credits(env, "CREDITLINE_SIGNUP_BONUS_CREDITS", "100"),
            signup_bonus_days=_int(env, "CREDITLINE_SIGNUP_BONUS_DAYS", cls.signup_bonus_days),
            hold_timeout_seconds=_int(env, "CREDITLINE_HOLD_TIMEOUT_SECONDS", cls.hold_timeout_seconds),
            sweep_interval_seconds=_int(env, "CREDITLINE_SWEEP_INTERVAL_SECONDS", cls.sweep_interval_seconds),
            max_query_depth=_int(env, "CREDITLINE_MAX_QUERY_DEPTH", cls.max_query_depth),
            max_query_tokens=_int(env, "CREDITLINE_MAX_QUERY_TOKENS", cls.max_query_tokens),
            max_query_bytes=_positive(env, "CREDITLINE_MAX_QUERY_BYTES", cls.max_query_bytes),
            persisted_documents=env.get("CREDITLINE_PERSISTED_DOCUMENTS", "").strip().lower() or "off",
            documents_file=env.get("CREDITLINE_DOCUMENTS_FILE", "").strip(),
            max_aliases=_int(env, "CREDITLINE_MAX_ALIASES", cls.max_aliases),
            token_cache_seconds=_int(env, "CREDITLINE_TOKEN_CACHE_SECONDS", cls.token_cache_seconds),
            token_recheck_seconds=_int(env, "CREDITLINE_TOKEN_RECHECK_SECONDS", cls.token_recheck_seconds),
            token_usage_flush_seconds=_positive(
                env, "CREDITLINE_TOKEN_USAGE_FLUSH_SECONDS", cls.token_usage_flush_seconds
            ),
            ws_init_timeout_seconds=_int(env, "CREDITLINE_WS_INIT_TIMEOUT_SECONDS", cls.ws_init_timeout_seconds),
            access_log=_flag(env, "CREDITLINE_ACCESS_LOG", _log_format(env) == "json"),
            rate_card=env.get("CREDITLINE_RATE_CARD", ""),
            plans=env.get("CREDITLINE_PLANS", ""),
            secret_key=env.get("CREDITLINE_SECRET_KEY", ""),
            invoice_link_days=_int(env, "CREDITLINE_INVOICE_LINK_DAYS", cls.invoice_link_days),
            subscription_retry_days=_days(env, "CREDITLINE_SUBSCRIPTION_RETRY_DAYS", cls.subscription_retry_days),
            stripe_secret_key=env.get("CREDITLINE_STRIPE_SECRET_KEY", "").strip(),
            stripe_webhook_secret=env.get("CREDITLINE_STRIPE_WEBHOOK_SECRET", "").strip(),
            stripe_publishable_key=_publishable_key(env),
            stripe_api_base=env.get("CREDITLINE_STRIPE_API_BASE", "").rstrip("/"),
            public_url=(env.get("CREDITLINE_PUBLIC_URL") or cls.public_url).rstrip("/"),
            webhook_tolerance_seconds=_int(env, "CREDITLINE_WEBHOOK_TOLERANCE_SECONDS", cls.webhook_tolerance_seconds),
            replay_wait_seconds=_int(env, "CREDITLINE_REPLAY_WAIT_SECONDS", cls.replay_wait_seconds),
            currency=env.get("CREDITLINE_CURRENCY", cls.currency).upper(),
            price_per_100_credits=_int(env, "CREDITLINE_PRICE_PER_100_CREDITS", cls.price_per_100_credits),
            top_up_min_credits=_int(env, "CREDITLINE_TOP_UP_MIN_CREDITS", cls.top_up_min_credits),
            top_up_max_credits=_int(env, "CREDITLINE_TOP_UP_MAX_CREDITS", cls.top_up_max_credits),
            batch_max_events=_int(env, "CREDITLINE_BATCH_MAX_EVENTS", cls.batch_max_events),
            max_subscriptions_per_connection=_int(
                env, "CREDITLINE_MAX_SUBSCRIPTIONS_PER_CONNECTION", cls.max_subscriptions_per_connection
            ),
            max_subscriptions_per_feed=_positive(
                env, "CREDITLINE_MAX_SUBSCRIPTIONS_PER_FEED", cls.max_subscriptions_per_feed
            ),
            # Issue 9, point 8.
            invitation_days=_positive(env, "CREDITLINE_INVITATION_DAYS", cls.invitation_days),
            # Issue 9, points 4, 10, 11 and 18.
            max_body_bytes=_positive(env, "CREDITLINE_MAX_BODY_BYTES", cls.max_body_bytes),
            ws_max_message_bytes=_positive(env, "CREDITLINE_WS_MAX_MESSAGE_BYTES", cls.ws_max_message_bytes),
            header_timeout_seconds=_float(env, "CREDITLINE_HEADER_TIMEOUT_SECONDS", cls.header_timeout_seconds),
            body_timeout_seconds=_float(env, "CREDITLINE_BODY_TIMEOUT_SECONDS", cls.body_timeout_seconds),
            keep_alive_seconds=_positive(env, "CREDITLINE_KEEP_ALIVE_SECONDS", cls.keep_alive_seconds),
            worker_healthcheck_seconds=_positive(
                env, "CREDITLINE_WORKER_HEALTHCHECK_SECONDS", cls.worker_healthcheck_seconds
            ),
            max_connections=_positive(env, "CREDITLINE_MAX_CONNECTIONS", cls.max_connections),
            max_header_bytes=_positive(env, "CREDITLINE_MAX_HEADER_BYTES", cls.max_header_bytes),
            log_format=_log_format(env),
            rate_limit=_flag(env, "CREDITLINE_RATE_LIMIT", cls.rate_limit),
            rate_limit_token_per_second=_float(
                env, "CREDITLINE_RATE_LIMIT_TOKEN_PER_SECOND", cls.rate_limit_token_per_second
            ),
            rate_limit_token_burst=_positive(env, "CREDITLINE_RATE_LIMIT_TOKEN_BURST", cls.rate_limit_token_burst),
            rate_limit_anonymous_per_second=_float(
                env, "CREDITLINE_RATE_LIMIT_ANONYMOUS_PER_SECOND", cls.rate_limit_anonymous_per_second
            ),
            rate_limit_anonymous_burst=_positive(
                env, "CREDITLINE_RATE_LIMIT_ANONYMOUS_BURST", cls.rate_limit_anonymous_burst
            ),
            rate_limit_websocket_per_second=_float(
                env, "CREDITLINE_RATE_LIMIT_WEBSOCKET_PER_SECOND", cls.rate_limit_websocket_per_second
            ),
            rate_limit_websocket_burst=_positive(
                env, "CREDITLINE_RATE_LIMIT_WEBSOCKET_BURST", cls.rate_limit_websocket_burst
            ),
            rate_limit_prefix=env.get("CREDITLINE_RATE_LIMIT_PREFIX") or cls.rate_limit_prefix,
            # Live subscriptions (issue 9, points 16 and 17).
            ws_send_timeout_seconds=_int(env, "CREDITLINE_WS_SEND_TIMEOUT_SECONDS", cls.ws_send_timeout_seconds),
            ws_max_buffered_bytes=_int(env, "CREDITLINE_WS_MAX_BUFFERED_BYTES", cls.ws_max_buffered_bytes),
            live_reorder_ms=_int(env, "CREDITLINE_LIVE_REORDER_MS", cls.live_reorder_ms),
            # Hostile documents (issue 9, points 1-3)
            max_query_cost=_int(env, "CREDITLINE_MAX_QUERY_COST", cls.max_query_cost),
            max_fragments=_int(env, "CREDITLINE_MAX_FRAGMENTS", cls.max_fragments),
            max_fragment_spreads=_int(env, "CREDITLINE_MAX_FRAGMENT_SPREADS", cls.max_fragment_spreads),
            max_directives=_int(env, "CREDITLINE_MAX_DIRECTIVES", cls.max_directives),
            allow_get_queries=env.get("CREDITLINE_ALLOW_GET_QUERIES", "0") in ("1", "true", "yes"),
            # Issue 9, points 6, 13 and 14.
            allow_sandbox_in_production=_flag(env, "CREDITLINE_ALLOW_SANDBOX_IN_PRODUCTION", False),
            db_acquire_timeout_seconds=_float(
                env, "CREDITLINE_DB_ACQUIRE_TIMEOUT_SECONDS", cls.db_acquire_timeout_seconds
            ),
            db_statement_timeout_ms=_int(env, "CREDITLINE_DB_STATEMENT_TIMEOUT_MS", cls.db_statement_timeout_ms),
            readiness_timeout_seconds=_float(
                env, "CREDITLINE_READINESS_TIMEOUT_SECONDS", cls.readiness_timeout_seconds
            ),
            # Issue 11, points 6 and 7.
            portal_code_seconds=_positive(env, "CREDITLINE_PORTAL_CODE_SECONDS", cls.portal_code_seconds),
            portal_idle_seconds=_positive(env, "CREDITLINE_PORTAL_IDLE_SECONDS", cls.portal_idle_seconds),
            portal_session_max_seconds=_positive(
                env, "CREDITLINE_PORTAL_SESSION_MAX_SECONDS", cls.portal_session_max_seconds
            ),
            cors_origins=_origins(env),
            # Issue 11, point 5.
            jwt_jwks_url=env.get("CREDITLINE_JWT_JWKS_URL", "").strip(),
            jwt_public_key=env.get("CREDITLINE_JWT_PUBLIC_KEY", "").strip(),
            jwt_issuer=env.get("CREDITLINE_JWT_ISSUER", "").strip(),
            jwt_audience=_names(env, "CREDITLINE_JWT_AUDIENCE", ()),
            jwt_algorithms=_names(env, "CREDITLINE_JWT_ALGORITHMS", cls.jwt_algorithms),
            jwt_leeway_seconds=_non_negative(env, "CREDITLINE_JWT_LEEWAY_SECONDS", cls.jwt_leeway_seconds),
            jwt_create_users=_flag(env, "CREDITLINE_JWT_CREATE_USERS", cls.jwt_create_users),
            jwt_email_claim=env.get("CREDITLINE_JWT_EMAIL_CLAIM", cls.jwt_email_claim).strip(),
            jwt_jwks_refresh_seconds=_positive(
                env, "CREDITLINE_JWT_JWKS_REFRESH_SECONDS", cls.jwt_jwks_refresh_seconds
            ),
            jwt_jwks_max_age_seconds=_positive(
                env, "CREDITLINE_JWT_JWKS_MAX_AGE_SECONDS", cls.jwt_jwks_max_age_seconds
            ),
            # Issue 13.
            default_low_balance_credits=_credits(env, "CREDITLINE_DEFAULT_LOW_BALANCE_CREDITS", "0"),
            credit_expiring_days=_positive(env, "CREDITLINE_CREDIT_EXPIRING_DAYS", cls.credit_expiring_days),
            runs_out_soon_days=_positive(env, "CREDITLINE_RUNS_OUT_SOON_DAYS", cls.runs_out_soon_days),
            event_retention_days=_positive(env, "CREDITLINE_EVENT_RETENTION_DAYS", cls.event_retention_days),
            webhook_allow_private=_flag(env, "CREDITLINE_WEBHOOK_ALLOW_PRIVATE", cls.webhook_allow_private),
            webhook_timeout_seconds=_float(env, "CREDITLINE_WEBHOOK_TIMEOUT_SECONDS", cls.webhook_timeout_seconds),
            webhook_retry_hours=_positive(env, "CREDITLINE_WEBHOOK_RETRY_HOURS", cls.webhook_retry_hours),
            webhook_secret_grace_seconds=_non_negative(
                env, "CREDITLINE_WEBHOOK_SECRET_GRACE_SECONDS", cls.webhook_secret_grace_seconds
            ),
            webhook_poll_seconds=_float(env, "CREDITLINE_WEBHOOK_POLL_SECONDS", cls.webhook_poll_seconds),
            # Issue 14.
            web_dist=env.get("CREDITLINE_WEB_DIST") or cls.web_dist,
            frame_ancestors=_frame_ancestors(env),
        )
