//! Every statement of the job queue, in one place, each small and named for what it does.
//!
//! Fencing: every statement that moves a job out of `running` matches `(id, attempt)` and
//! `state = 'running'`, so a worker whose lease expired (and whose job was rescued, or claimed again
//! with a higher attempt) changes nothing.

/// Inserts a job; with a unique key already held by an unfinished job, inserts nothing.
/// $1 kind, $2 args, $3 queue, $4 priority, $5 state, $6 max_attempts, $7 scheduled_at, $8 unique_key,
/// $9 timeout_seconds.
pub const INSERT: &str = "
    INSERT INTO jobs (kind, args, queue, priority, state, max_attempts, scheduled_at, unique_key,
                      timeout_seconds)
    VALUES ($1, $2, $3, $4, $5::job_state, $6, $7, $8, $9)
    ON CONFLICT (unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable')
        DO NOTHING
    RETURNING id";

/// Inserts $4 identical jobs of kind $1, args $2, queue $3 (bulk submissions, benchmarks).
pub const INSERT_BULK: &str = "
    INSERT INTO jobs (kind, args, queue) SELECT $1, $2, $3 FROM generate_series(1, $4)";

/// Deletes every job of queue $1, whatever its state (benchmark clean-up).
pub const DELETE_QUEUE: &str = "DELETE FROM jobs WHERE queue = $1";

/// Pickup latency (claim time minus the time the job became runnable) of the completed jobs of
/// queue $1, in milliseconds, sorted.
pub const PICKUP_LATENCIES: &str = "
    SELECT (extract(epoch FROM attempted_at - greatest(created_at, scheduled_at)) * 1000)::float8 AS ms
    FROM jobs WHERE queue = $1 AND state = 'completed' ORDER BY ms";

/// The unfinished job holding a unique key. $1 unique_key.
pub const SELECT_UNIQUE_HOLDER: &str = "
    SELECT id FROM jobs
    WHERE unique_key = $1 AND state IN ('available', 'scheduled', 'running', 'retryable')";

/// Wakes idle workers of a queue; delivered when the inserting transaction commits. $1 queue.
pub const NOTIFY_INSERT: &str = "SELECT pg_notify('minion_jobs', $1)";

/// Claims up to $2 runnable jobs of queues $1 for worker $3 with a lease of $4 milliseconds.
/// SKIP LOCKED lets concurrent claimers pass each other instead of waiting or double-claiming.
///
/// One ordered index scan per queue (the LATERAL subquery), so a claim reads about as many
/// index entries as it claims, whatever the backlog. `queue = ANY($1)` in one scan would keep
/// Postgres from walking `jobs_claim_idx` in order: it read and sorted the whole backlog (50k
/// runnable jobs: a seq scan and an on-disk sort, 42.9 ms per claim). With one scan per queue
/// (50k backlog, 50 claimed, 0.23 ms):
///
/// ```text
/// Limit -> Sort (quicksort, 50 rows)
///   -> Nested Loop -> Function Scan on unnest q
///      -> Subquery Scan -> Limit -> LockRows
///         -> Index Scan using jobs_claim_idx on jobs (rows=50)
///              Index Cond: ((queue = q.name) AND (scheduled_at <= now()))
/// ```
///
/// Rows a queue's scan locked but the outer LIMIT dropped are unlocked when the statement ends.
/// Run unprepared (`Queue::claim`): a cached generic plan, made without knowing the LIMIT,
/// sorted the backlog on disk at 200k runnable jobs.
pub const CLAIM: &str = "
    WITH next AS (
        SELECT j.id FROM unnest($1::text[]) AS q(name)
        CROSS JOIN LATERAL (
            SELECT id, priority, scheduled_at FROM jobs
            WHERE state IN ('available', 'scheduled', 'retryable')
              AND queue = q.name
              AND scheduled_at <= now()
            ORDER BY priority DESC, scheduled_at, id
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        ) j
        ORDER BY j.priority DESC, j.scheduled_at, j.id
        LIMIT $2
    )
    UPDATE jobs SET
        state = 'running',
        attempt = jobs.attempt + 1,
        attempted_at = now(),
        attempted_by = $3,
        lease_expires_at = now() + $4::float8 * interval '1 millisecond'
    FROM next
    WHERE jobs.id = next.id
    RETURNING jobs.id, jobs.kind, jobs.args, jobs.queue, jobs.attempt, jobs.max_attempts,
              jobs.scheduled_at, jobs.attempted_at, jobs.timeout_seconds";

/// Extends the leases of the (id, attempt) pairs $1/$2 still held by this worker, by $3 ms.
/// Returns the jobs still held, and whether cancellation was requested for them.
pub const HEARTBEAT: &str = "
    UPDATE jobs SET lease_expires_at = now() + $3::float8 * interval '1 millisecond'
    FROM unnest($1::bigint[], $2::int[]) AS held(id, attempt)
    WHERE jobs.id = held.id AND jobs.attempt = held.attempt AND jobs.state = 'running'
    RETURNING jobs.id, jobs.cancel_requested";

/// Completes the (id, attempt) pairs $1/$2 with outputs $3, in one statement for a batch.
pub const COMPLETE_MANY: &str = "
    UPDATE jobs SET state = 'completed', finalized_at = now(), lease_expires_at = NULL,
                    output = done.output
    FROM unnest($1::bigint[], $2::int[], $3::jsonb[]) AS done(id, attempt, output)
    WHERE jobs.id = done.id AND jobs.attempt = done.attempt AND jobs.state = 'running'
    RETURNING jobs.id";

/// Records a failed attempt of ($1, $2) with error text $3. Retries at now() + $4 ms unless $5
/// (permanent) or the attempts are used up, in which case the job is discarded.
pub const FAIL: &str = "
    UPDATE jobs SET
        state = CASE WHEN $5 OR attempt >= max_attempts THEN 'discarded'::job_state
                     ELSE 'retryable'::job_state END,
        scheduled_at = CASE WHEN $5 OR attempt >= max_attempts THEN scheduled_at
                            ELSE now() + $4::float8 * interval '1 millisecond' END,
        finalized_at = CASE WHEN $5 OR attempt >= max_attempts THEN now() ELSE NULL END,
        lease_expires_at = NULL,
        errors = errors || jsonb_build_array(jsonb_build_object(
            'attempt', attempt, 'at', now(), 'error', $3::text, 'permanent', $5))
    WHERE id = $1 AND attempt = $2 AND state = 'running'
    RETURNING state::text";

/// Ends a running ($1, $2) as cancelled, recording why ($3).
pub const FINISH_CANCELLED: &str = "
    UPDATE jobs SET state = 'cancelled', finalized_at = now(), lease_expires_at = NULL,
        errors = errors || jsonb_build_array(jsonb_build_object(
            'attempt', attempt, 'at', now(), 'error', $3::text, 'permanent', true))
    WHERE id = $1 AND attempt = $2 AND state = 'running'
    RETURNING id";

/// Gives a running ($1, $2) back without burning its attempt (graceful shutdown).
pub const RELEASE: &str = "
    UPDATE jobs SET state = 'available', attempt = attempt - 1, lease_expires_at = NULL,
                    attempted_by = NULL, scheduled_at = now()
    WHERE id = $1 AND attempt = $2 AND state = 'running'
    RETURNING id";

/// Returns up to $1 jobs whose lease expired: the attempt counts, so a job past max_attempts is
/// discarded with "lease expired". The retry waits $2 ms doubled per attempt so far.
pub const RESCUE_EXPIRED: &str = "
    WITH expired AS (
        SELECT id FROM jobs
        WHERE state = 'running' AND lease_expires_at < now()
        ORDER BY lease_expires_at
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs SET
        state = CASE WHEN jobs.attempt >= jobs.max_attempts THEN 'discarded'::job_state
                     ELSE 'retryable'::job_state END,
        scheduled_at = now() + ($2::float8 * power(2, least(jobs.attempt - 1, 12))) * interval '1 millisecond',
        finalized_at = CASE WHEN jobs.attempt >= jobs.max_attempts THEN now() ELSE NULL END,
        lease_expires_at = NULL,
        errors = jobs.errors || jsonb_build_array(jsonb_build_object(
            'attempt', jobs.attempt, 'at', now(), 'permanent', false,
            'error', 'lease expired (worker ' || coalesce(jobs.attempted_by, '?') || ' stopped heartbeating)'))
    FROM expired
    WHERE jobs.id = expired.id
    RETURNING jobs.id, jobs.state::text";

/// The state of job $1 if its attempt is still $2: how a transition whose answer was lost learns
/// whether it happened (no other worker can move attempt $2 to a finished state but its holder).
pub const ATTEMPT_STATE: &str = "SELECT state::text FROM jobs WHERE id = $1 AND attempt = $2";

/// Cancels job $1: an unstarted job ends at once; a running one is flagged for its worker.
/// Returns the state after the statement. Finished jobs are left alone.
pub const CANCEL: &str = "
    UPDATE jobs SET
        state = CASE WHEN state = 'running' THEN state ELSE 'cancelled'::job_state END,
        finalized_at = CASE WHEN state = 'running' THEN finalized_at ELSE now() END,
        cancel_requested = true
    WHERE id = $1 AND state IN ('available', 'scheduled', 'running', 'retryable')
    RETURNING state::text";

/// Tells the worker running job $1 to stop.
pub const NOTIFY_CANCEL: &str = "SELECT pg_notify('minion_job_cancel', $1::bigint::text)";

/// Makes a discarded or cancelled job $1 run again with a fresh set of attempts.
pub const RETRY: &str = "
    UPDATE jobs SET state = 'available', attempt = 0, scheduled_at = now(), finalized_at = NULL,
                    cancel_requested = false
    WHERE id = $1 AND state IN ('discarded', 'cancelled', 'completed')
    RETURNING id";

/// Deletes up to $2 finished jobs finalized before $1; called in a loop until none are left.
pub const PRUNE_BATCH: &str = "
    DELETE FROM jobs WHERE id IN (
        SELECT id FROM jobs
        WHERE state IN ('completed', 'discarded', 'cancelled') AND finalized_at < $1
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )";

/// One job, every column. $1 id.
pub const SELECT_ONE: &str =
    "SELECT id, kind, args, queue, priority, state::text AS state, attempt,
    max_attempts, scheduled_at, attempted_at, attempted_by, lease_expires_at, finalized_at, errors,
    output, unique_key, cancel_requested, created_at, timeout_seconds FROM jobs WHERE id = $1";

/// Jobs filtered by state $1 and kind $2 (either may be NULL), newest first, at most $3.
pub const SELECT_MANY: &str =
    "SELECT id, kind, args, queue, priority, state::text AS state, attempt,
    max_attempts, scheduled_at, attempted_at, attempted_by, lease_expires_at, finalized_at, errors,
    output, unique_key, cancel_requested, created_at, timeout_seconds FROM jobs
    WHERE ($1::text IS NULL OR state::text = $1) AND ($2::text IS NULL OR kind = $2)
    ORDER BY id DESC LIMIT $3";

/// Counts of jobs per state, for metrics and `bench`.
pub const COUNT_BY_STATE: &str = "SELECT state::text, count(*) FROM jobs GROUP BY state";

/// Unfinished jobs of table $1 whose kind is one of $2, by kind (the planner's unfinished-tasks
/// rule; walks `jobs_unfinished_table_idx`).
pub const UNFINISHED_FOR_TABLE: &str = "
    SELECT kind, count(*) FROM jobs
    WHERE args ->> 'table' = $1 AND kind = ANY($2)
      AND state IN ('available', 'scheduled', 'running', 'retryable')
    GROUP BY kind";

/// Jobs by state and kind, for the states an operator acts on (finished jobs other than
/// discarded ones are history, and counting them would read the whole table).
pub const DEPTH: &str = "
    SELECT state::text, kind, count(*) FROM jobs
    WHERE state IN ('available', 'scheduled', 'running', 'retryable', 'discarded')
    GROUP BY state, kind";

/// Per queue, the oldest runnable job waiting to be claimed: its id, kind and since when it
/// could run (walks the claim index).
pub const OLDEST_AVAILABLE: &str = "
    SELECT DISTINCT ON (queue) queue, id, kind, scheduled_at FROM jobs
    WHERE state IN ('available', 'scheduled', 'retryable') AND scheduled_at <= now()
    ORDER BY queue, scheduled_at, id";

/// Records that process $1 (role $2, version $3, $4 slots, $5 running, queues $6) is alive.
pub const WORKER_SEEN: &str = "
    INSERT INTO workers (id, role, version, concurrency, running, queues)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (id) DO UPDATE SET last_seen_at = now(), running = EXCLUDED.running,
                                   concurrency = EXCLUDED.concurrency, stopped_at = NULL";

/// Process $1 stopped cleanly.
pub const WORKER_STOPPED: &str =
    "UPDATE workers SET stopped_at = now(), running = 0, last_seen_at = now() WHERE id = $1";

/// Processes seen within $1 seconds and not stopped, with the jobs each is running (the lease
/// condition, implied by `running`, lets the planner find them in `jobs_lease_idx`).
pub const WORKERS_RECENT: &str = "
    SELECT w.id, w.role, w.version, w.started_at, w.last_seen_at, w.concurrency, w.queues,
           coalesce(array_agg(j.id ORDER BY j.id) FILTER (WHERE j.id IS NOT NULL), '{}') AS running_jobs
    FROM workers w
    LEFT JOIN jobs j ON j.state = 'running' AND j.lease_expires_at IS NOT NULL
                    AND j.attempted_by = w.id
    WHERE w.stopped_at IS NULL AND w.last_seen_at > now() - $1 * interval '1 second'
    GROUP BY w.id ORDER BY w.role, w.id";

/// Forgets processes not seen since $1.
pub const WORKERS_PRUNE: &str = "DELETE FROM workers WHERE last_seen_at < $1";

/// Dead tuple versions in `jobs`, and rows changed since its statistics were last gathered, as
/// the statistics system counts them (it counts with autovacuum off too).
pub const DEAD_TUPLES: &str = "
    SELECT coalesce(n_dead_tup, 0), coalesce(n_mod_since_analyze, 0)
    FROM pg_stat_user_tables WHERE relid = 'jobs'::regclass";

/// Removes dead tuples from `jobs` and from every index, the claim index included (the default
/// would skip index cleanup when few pages hold dead tuples). No truncation: giving empty pages
/// back takes an exclusive lock that would stall every claim meanwhile.
/// Statistics are gathered too: the planner walks the claim index in order only while it knows
/// how many runnable jobs a queue has (with stale statistics it sorted a 200k backlog on disk).
pub const VACUUM: &str = "VACUUM (ANALYZE, INDEX_CLEANUP ON, TRUNCATE OFF) jobs";

/// Statistics only, when rows were inserted or changed but few died.
pub const ANALYZE: &str = "ANALYZE jobs";

/// One page of the job list, newest first: jobs filtered by state $1, kind $2 and table $3 (each
/// may be NULL) with ids below $4 (NULL: from the newest), at most $5. Keyset pagination walks the
/// primary key backwards, so a page costs the rows it shows plus those its filter skips, never an
/// offset's worth (the bound is a plain `id <` so it is the scan's index condition, also in a
/// generic plan). The large columns (args, errors, output) stay out; the job page reads them.
pub const JOB_PAGE: &str = "
    SELECT id, kind, queue, state::text AS state, attempt, max_attempts,
           args ->> 'table' AS table_name, scheduled_at, attempted_at, attempted_by,
           finalized_at, created_at, jsonb_array_length(errors)::int AS error_count
    FROM jobs
    WHERE ($1::text IS NULL OR state = $1::text::job_state) AND ($2::text IS NULL OR kind = $2)
      AND ($3::text IS NULL OR args ->> 'table' = $3)
      AND id < coalesce($4::bigint, 9223372036854775807)
    ORDER BY id DESC LIMIT $5";

/// The $1 most recent failures: retryable and discarded jobs, newest attempt first, with the
/// last error's message.
pub const RECENT_FAILURES: &str = "
    SELECT id, kind, state::text AS state, attempt, args ->> 'table' AS table_name,
           coalesce(finalized_at, attempted_at, scheduled_at) AS failed_at,
           errors -> -1 ->> 'error' AS last_error
    FROM jobs
    WHERE state IN ('retryable', 'discarded')
    ORDER BY coalesce(finalized_at, attempted_at, scheduled_at) DESC, id DESC LIMIT $1";

/// Records a depth sample taken at $1: states $2, kinds $3, counts $4 (parallel arrays).
pub const RECORD_DEPTH: &str = "
    INSERT INTO queue_samples (sampled_at, state, kind, jobs)
    SELECT $1, s::job_state, k, n FROM unnest($2::text[], $3::text[], $4::bigint[]) AS u(s, k, n)
    ON CONFLICT DO NOTHING";

/// When the oldest depth sample was taken (the primary key's first entry).
pub const OLDEST_DEPTH: &str = "SELECT min(sampled_at) FROM queue_samples";

/// Forgets depth samples taken before $1.
pub const PRUNE_DEPTH: &str = "DELETE FROM queue_samples WHERE sampled_at < $1";

/// Reclaims the pruned samples' space (the queue does not rely on autovacuum).
pub const VACUUM_DEPTH: &str = "VACUUM (TRUNCATE OFF) queue_samples";

/// Depth samples taken since $1, summed over kinds: (sampled_at, state, jobs), oldest first.
pub const DEPTH_HISTORY: &str = "
    SELECT sampled_at, state::text AS state, sum(jobs)::bigint FROM queue_samples
    WHERE sampled_at >= $1 GROUP BY sampled_at, state ORDER BY sampled_at";

/// The outputs of the $2 newest completed prebuilds of table $1, newest first (for the table
/// page's history: each names its partition, segments, rows and valid docs).
pub const PREBUILD_REPORTS: &str = "
    SELECT finalized_at, output FROM jobs
    WHERE kind = 'prebuild' AND state = 'completed' AND args ->> 'table' = $1
      AND output IS NOT NULL
    ORDER BY finalized_at DESC LIMIT $2";
