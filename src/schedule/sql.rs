//! The scheduler's statements, each small and named for what it does.

/// Takes the lease $1 for instance $2 for $3 milliseconds, if it is free, expired, or already
/// ours (River's leader election: insert on conflict with an expiry). Returns a row when we lead.
pub const ELECT: &str = "
    INSERT INTO scheduler_leader (name, leader_id, elected_at, expires_at)
    VALUES ($1, $2, now(), now() + $3 * interval '1 millisecond')
    ON CONFLICT (name) DO UPDATE SET
        leader_id = EXCLUDED.leader_id,
        elected_at = CASE WHEN scheduler_leader.leader_id = EXCLUDED.leader_id
                          THEN scheduler_leader.elected_at ELSE now() END,
        expires_at = EXCLUDED.expires_at
    WHERE scheduler_leader.expires_at < now() OR scheduler_leader.leader_id = EXCLUDED.leader_id
    RETURNING leader_id";

/// Extends our lease $1/$2 by $3 milliseconds from now; no row when we no longer lead.
pub const RENEW: &str = "
    UPDATE scheduler_leader SET expires_at = now() + $3 * interval '1 millisecond'
    WHERE name = $1 AND leader_id = $2 AND expires_at >= now()
    RETURNING leader_id";

/// Gives the lease $1 up, if instance $2 holds it, so another takes over at once.
pub const RESIGN: &str = "DELETE FROM scheduler_leader WHERE name = $1 AND leader_id = $2";

/// Who leads lease $1, and until when (NULL when nobody holds an unexpired lease).
pub const LEADER: &str = "
    SELECT leader_id, elected_at, expires_at FROM scheduler_leader
    WHERE name = $1 AND expires_at >= now()";

/// Schedule $1's last tick, locked until the transaction ends (one submission per tick).
pub const LOCK_RUN: &str = "SELECT last_tick FROM schedule_runs WHERE schedule = $1 FOR UPDATE";

/// Starts schedule $1 at tick $2 without submitting it (a new schedule's first run is its next
/// tick); by instance $3.
pub const START_RUN: &str = "
    INSERT INTO schedule_runs (schedule, last_tick, submitted_by) VALUES ($1, $2, $3)
    ON CONFLICT (schedule) DO NOTHING";

/// Moves schedule $1's last tick forward to $2, recording instance $3 and the jobs $4 it
/// submitted in the same transaction.
pub const ADVANCE: &str = "
    UPDATE schedule_runs SET last_tick = $2, submitted_by = $3, last_job_ids = $4,
                             submitted_at = now()
    WHERE schedule = $1 AND last_tick < $2";

/// Every schedule's last run.
pub const RUNS: &str =
    "SELECT schedule, last_tick, last_job_ids, submitted_by, submitted_at FROM schedule_runs";
