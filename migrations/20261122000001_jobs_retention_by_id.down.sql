CREATE INDEX IF NOT EXISTS jobs_finished_idx ON jobs (finished_at) WHERE status IN ('succeeded', 'failed', 'cancelled');
