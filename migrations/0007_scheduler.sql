-- The scheduler (DESIGN.md section 7): one leader at a time through a lease row, and per
-- schedule the last tick submitted, so no tick is submitted twice by two leaders, a restart or a
-- retry (src/schedule).

-- The leader lease. Expiry is in the database's clock, so instances need not agree on time.
CREATE TABLE scheduler_leader (
    name       text PRIMARY KEY,
    leader_id  text NOT NULL,
    elected_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- The newest tick of each schedule that was submitted (or, for a new schedule, from which it
-- starts). A tick is submitted in the transaction that moves `last_tick` forward.
CREATE TABLE schedule_runs (
    schedule     text PRIMARY KEY,
    last_tick    timestamptz NOT NULL,
    last_job_ids bigint[] NOT NULL DEFAULT '{}',
    submitted_by text,
    submitted_at timestamptz NOT NULL DEFAULT now()
);
