"""``make bench``: spendCredits per second over HTTP beside the raw-SQL ceilings of the same writes.

For SQLite and PostgreSQL in turn: a fresh database with four sets of 1,000 funded accounts (plain; a
second plain set, the control; two balance-alert levels never crossed; three spend limits applying, account,
agent and token, never reached) and one hot account, a service token, and the real server (``creditline
serve``, uvicorn). Then rounds (bench/interleave.py says why): one wrk run with 16 connections whose time is
cut into one-second slots, one variant's accounts per slot (bench/slots.lua), then the raw-SQL spends
straight through asyncpg/aiosqlite by 16 asyncio workers (no ORM, no HTTP, no GraphQL): the app's
statements (bench/ceiling.py) and the minimal spend, on the plain accounts and on the hot account. Every
ratio is taken within a cycle or a round and reported as median (min-max); targets: limits / plain at least
0.9, alert levels / plain at least 0.95, HTTP / minimal ceiling at least 0.5, on 1,000 accounts and on the
hot one.

Settings (environment): ``BENCH_ROUNDS`` (6), ``BENCH_CYCLES`` (2 per round), ``BENCH_SLOT_MS`` (1000),
``BENCH_SECONDS`` (2, each raw-SQL run), ``BENCH_HEALTH_SECONDS`` (3, the wrk no-op check),
``BENCH_CONNECTIONS`` (16), ``BENCH_ACCOUNTS`` (1000 per set), ``BENCH_BACKENDS`` ("sqlite,postgres"),
``BENCH_POSTGRES_URL`` (postgresql://postgres@127.0.0.1:5432/test, where the scratch database is created),
``BENCH_WORKERS`` (1: the server's ``serve --workers``, PostgreSQL only; its CPU counts every worker's).

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
