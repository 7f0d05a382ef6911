-- The job queue (DESIGN.md section 7, Queue). All of its SQL lives in src/queue/sql.rs.

CREATE TYPE job_state AS ENUM (
    'available',  -- ready to run once scheduled_at has passed
    'scheduled',  -- submitted with a delay (--at / --in)
    'running',    -- claimed by a worker holding a lease
    'retryable',  -- failed; runs again at scheduled_at (the backoff)
    'completed',
    'discarded',  -- failed permanently or ran out of attempts; errors kept
    'cancelled'
);

CREATE TABLE jobs (
    id                bigserial PRIMARY KEY,
    kind              text NOT NULL,
    args              jsonb NOT NULL DEFAULT '{}',
    queue             text NOT NULL DEFAULT 'default',
    -- Higher runs first.
    priority          smallint NOT NULL DEFAULT 0,
    state             job_state NOT NULL DEFAULT 'available',
    -- Attempts started so far; a running job's fence is (id, attempt).
    attempt           integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts      integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    scheduled_at      timestamptz NOT NULL DEFAULT now(),
    attempted_at      timestamptz,
    attempted_by      text,
    lease_expires_at  timestamptz,
    finalized_at      timestamptz,
    -- One entry per failed attempt: {"attempt", "at", "error", "permanent"}.
    errors            jsonb NOT NULL DEFAULT '[]',
    output            jsonb,
    unique_key        text,
    cancel_requested  boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (state <> 'running' OR lease_expires_at IS NOT NULL)
);

-- Claiming: only runnable rows are indexed, in claim order.
CREATE INDEX jobs_claim_idx ON jobs (queue, priority DESC, scheduled_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');

-- Rescuing: running jobs by lease expiry.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE state = 'running';

-- At most one unfinished job per unique key (e.g. one prebuild per partition).
CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable');

-- Pruning and listing finished jobs.
CREATE INDEX jobs_finalized_idx ON jobs (finalized_at) WHERE finalized_at IS NOT NULL;
CREATE INDEX jobs_kind_state_idx ON jobs (kind, state);
