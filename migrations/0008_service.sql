-- Unattended operation (issue 12): job timeouts, the workers an operator sees in `minion status`,
-- and the look-up the planner's unfinished-tasks rule makes on every plan.

-- Per-submission timeout of an attempt; NULL means the kind's default (`minion job kinds`).
ALTER TABLE jobs ADD COLUMN timeout_seconds double precision
    CHECK (timeout_seconds IS NULL OR timeout_seconds > 0);

-- Unfinished jobs of a table by kind: the planner skips a table whose compaction jobs are not
-- done, and `minion status` counts them. Only unfinished rows are indexed, so finished jobs
-- leave it at once.
CREATE INDEX jobs_unfinished_table_idx ON jobs ((args ->> 'table'), kind)
    WHERE state IN ('available', 'scheduled', 'running', 'retryable');

-- Every worker and scheduler process, refreshed by its heartbeat; `minion status` shows those
-- seen recently. Rows of processes gone for a day are removed by `prune`.
CREATE TABLE workers (
    id           text PRIMARY KEY,
    role         text NOT NULL CHECK (role IN ('worker', 'scheduler')),
    version      text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    -- Worker slots and the jobs running now (0 for a scheduler).
    concurrency  integer NOT NULL DEFAULT 0,
    running      integer NOT NULL DEFAULT 0,
    queues       text[] NOT NULL DEFAULT '{}',
    stopped_at   timestamptz
);
