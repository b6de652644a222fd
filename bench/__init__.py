"""``make bench``: spendCredits per second over real HTTP beside the raw-SQL ceiling of the same writes.

For SQLite and PostgreSQL in turn: a fresh database with 1,000 funded accounts and a service token, the
real server (``creditline serve``, uvicorn) driven by wrk with 16 connections, then the same writes issued
straight through asyncpg/aiosqlite by 16 asyncio workers (no ORM, no HTTP, no GraphQL). The ratio of the
two is the API's efficiency; the target is at least 0.5 of the ceiling.

Settings (environment): ``BENCH_SECONDS`` (10, each measured run), ``BENCH_HEALTH_SECONDS`` (3, the wrk
no-op check), ``BENCH_CONNECTIONS`` (16), ``BENCH_ACCOUNTS`` (1000), ``BENCH_BACKENDS`` ("sqlite,postgres"),
``BENCH_POSTGRES_URL`` (postgresql://postgres@127.0.0.1:5432/test, where the scratch database is created).

Then live balance subscriptions (see ``bench/live.py``): 1,000 ``balanceChanged`` subscribers on one
server process, resident memory per idle subscriber (target at most 40 KB), p50/p99 from commit to receipt
for a steady stream of spends (target p99 at most 50 ms), and the same across two processes through Redis.
Settings: ``BENCH_SUBSCRIBERS`` (1000), ``BENCH_SUB_SPENDS`` (2000), ``BENCH_SUB_RATE`` (200 spends/s),
``BENCH_REDIS_URL`` (redis://127.0.0.1:6379/0). ``BENCH_PARTS`` ("spend,batch,live,reports,queries,webhooks") picks
the parts.

Then the usage reports (``bench/reports.py``) and the costliest document the query limits admit
(``bench/query_cost.py``: a search over the schema, the server CPU per request of the worst one found,
target at most 100 ms; ``BENCH_QUERY_SECONDS``, ``BENCH_QUERY_SEED``).
"""
