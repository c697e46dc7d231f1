ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_lease_only_while_running;
