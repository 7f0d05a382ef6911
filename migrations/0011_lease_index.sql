-- The lease index holds the rows that have a lease, which are exactly the running jobs (the CHECK
-- on `jobs` and every transition out of `running` clearing the lease make it so), but it is no
-- longer partial on `state = 'running'`. With that predicate, the statements that find running
-- jobs by id (the batched completion and the heartbeat: `id = done.id AND state = 'running'`)
-- could use it, and after an ANALYZE that saw few running jobs their generic plans did: a
-- nested loop over the whole lease index, whose dead entries (one per claim since the last
-- vacuum) made one completion of 500 jobs take 1.5-7.5 s at a 1M backlog. Now only statements
-- that constrain `lease_expires_at` (the rescue: `lease_expires_at < now()`) can use it, and a
-- completion is a primary-key lookup per job.
DROP INDEX jobs_lease_idx;
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
