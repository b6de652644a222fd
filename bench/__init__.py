"""``make bench``: spendCredits per second over real HTTP beside the raw-SQL ceiling of the same writes.

For SQLite and PostgreSQL in turn: a fresh database with 1,000 funded accounts and a service token, the
real server (``creditline serve``, uvicorn) driven by wrk with 16 connections, then the same writes issued
straight through asyncpg/aiosqlite by 16 asyncio workers (no ORM, no HTTP, no GraphQL). The ratio of the
two is the API's efficiency; the target is at least 0.5 of the ceiling.

Settings (environment): ``BENCH_SECONDS`` (10, each measured run), ``BENCH_HEALTH_SECONDS`` (3, the wrk
no-op check), ``BENCH_CONNECTIONS`` (16), ``BENCH_ACCOUNTS`` (1000), ``BENCH_BACKENDS`` ("sqlite,postgres"),
``BENCH_POSTGRES_URL`` (postgresql://postgres@127.0.0.1:5432/test, where the scratch database is created).
"""
