-- A lease (locked_by) exists only while a job runs: every statement that ends a run clears it.
-- Completions rely on this to find their rows by primary key and locked_by alone (see
-- queue::complete_many). NOT VALID takes the table lock only for an instant; the next
-- migration checks the existing rows without blocking writes.
ALTER TABLE jobs ADD CONSTRAINT jobs_lease_only_while_running
    CHECK (locked_by IS NULL OR status = 'running') NOT VALID;
