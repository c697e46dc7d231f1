-- The job queue's own statements with no application around them: claim a batch (the
-- UPDATE … FOR UPDATE SKIP LOCKED of src/jobs/queue.rs claim()) and complete it (the
-- unnest UPDATE of complete_many()), committed per statement like the app, in a loop inside
-- Postgres until the queue is empty. bench/run.sh times it after seeding the same jobs as
-- the burn-down: the app's jobs/s divided by this is how close the worker pool gets to what
-- Postgres itself can do with these statements. Keep in step with src/jobs/queue.rs.
-- Setting bench.batch (the JOB_CLAIM_BATCH to mirror) comes from the session: SET bench.batch = 256.
DO $$
DECLARE ids uuid[];
BEGIN
  LOOP
    WITH c AS (
      UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = 'ceiling',
             locked_until = now() + interval '30 s', started_at = now(), updated_at = now()
      WHERE id = ANY(ARRAY(SELECT id FROM jobs WHERE status = 'queued' AND run_at <= now()
                   ORDER BY priority DESC, run_at, id LIMIT current_setting('bench.batch')::int FOR UPDATE SKIP LOCKED))
      RETURNING id)
    SELECT array_agg(id) INTO ids FROM c;
    EXIT WHEN ids IS NULL;
    COMMIT;
    UPDATE jobs j SET status = 'succeeded', result = '{}'::jsonb, finished_at = now(), updated_at = now(),
           locked_until = NULL, locked_by = NULL
      FROM unnest(ids) AS r(id) WHERE j.id = r.id AND j.locked_by = 'ceiling';
    COMMIT;
  END LOOP;
END $$;
