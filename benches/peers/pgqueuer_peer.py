"""pgqueuer as a peer of `minion bench queue`: N pre-inserted no-op jobs burned down by W worker
processes, each running at most C jobs at once (dequeued C/2 at a time). Prints one JSON line.

Usage: python pgqueuer_peer.py DATABASE_URL JOBS WORKERS CONCURRENCY
       python pgqueuer_peer.py --worker DATABASE_URL CONCURRENCY
"""

import asyncio
import json
import subprocess
import sys
import time
from datetime import timedelta
from importlib.metadata import version

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries


async def worker(dsn: str, concurrency: int) -> None:
    connection = await asyncpg.connect(dsn)
    queuer = PgQueuer(AsyncpgDriver(connection))

    @queuer.entrypoint("noop", concurrency_limit=concurrency)
    async def noop(job) -> None:
        return None

    await queuer.run(
        # pgqueuer requires max_concurrent_tasks >= 2 x batch_size.
        batch_size=max(1, concurrency // 2),
        max_concurrent_tasks=concurrency,
        dequeue_timeout=timedelta(seconds=0.5),
    )


async def main(dsn: str, jobs: int, workers: int, concurrency: int) -> None:
    subprocess.run(
        [sys.executable, "-m", "pgqueuer", "--pg-dsn", dsn, "install"],
        check=True,
        capture_output=True,
    )
    connection = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(connection))
    for start in range(0, jobs, 10_000):
        n = min(10_000, jobs - start)
        await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    started = time.perf_counter()
    children = [
        subprocess.Popen([sys.executable, __file__, "--worker", dsn, str(concurrency)])
        for _ in range(workers)
    ]
    while await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pgqueuer WHERE status IN ('queued', 'picked'))"
    ):
        await asyncio.sleep(0.005)
    seconds = time.perf_counter() - started
    for child in children:
        child.terminate()
    for child in children:
        child.wait()
    print(json.dumps({"peer": "pgqueuer", "version": version("pgqueuer"), "jobs": jobs,
                      "seconds": seconds, "jobs_per_second": jobs / seconds}))


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        asyncio.run(worker(sys.argv[2], int(sys.argv[3])))
    else:
        asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
