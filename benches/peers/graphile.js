// graphile-worker, batched (local queue, batched completion), as a peer of `minion bench queue`.
// Usage: node graphile.js DATABASE_URL JOBS WORKERS CONCURRENCY   (prints one JSON line)
//        node graphile.js --worker DATABASE_URL CONCURRENCY       (one worker process)
const { run, makeWorkerUtils } = require("graphile-worker");
const { spawn } = require("child_process");

const preset = {
  worker: {
    localQueue: { size: 500 },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
  },
};

async function worker(connectionString, concurrency) {
  const runner = await run({
    connectionString,
    concurrency,
    maxPoolSize: concurrency,
    pollInterval: 500,
    noHandleSignals: false,
    taskList: { noop: async () => {} },
    preset,
  });
  await runner.promise;
}

async function main() {
  const [connectionString, jobs, workers, concurrency] = process.argv.slice(2);
  const utils = await makeWorkerUtils({ connectionString });
  await utils.migrate();
  const query = (text, values) => utils.withPgClient((client) => client.query(text, values));
  await query(
    `select graphile_worker.add_jobs(array(
       select json_populate_record(null::graphile_worker.job_spec,
                json_build_object('identifier', 'noop', 'payload', '{}'::json))
       from generate_series(1, $1)))`,
    [Number(jobs)],
  );
  const started = process.hrtime.bigint();
  const children = [];
  for (let i = 0; i < Number(workers); i++) {
    children.push(
      spawn(process.execPath, [__filename, "--worker", connectionString, concurrency], {
        stdio: ["ignore", "ignore", "inherit"],
      }),
    );
  }
  for (;;) {
    const { rows } = await query(
      "select exists(select 1 from graphile_worker._private_jobs) as left",
    );
    if (!rows[0].left) break;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  for (const child of children) child.kill("SIGTERM");
  await utils.release();
  const manifest = require("path").join(require.resolve("graphile-worker"), "../../package.json");
  const { version } = JSON.parse(require("fs").readFileSync(manifest, "utf8"));
  console.log(
    JSON.stringify({ peer: "graphile-worker", version, jobs: Number(jobs), seconds,
                     jobs_per_second: Number(jobs) / seconds }),
  );
}

if (process.argv[2] === "--worker") {
  worker(process.argv[3], Number(process.argv[4])).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
