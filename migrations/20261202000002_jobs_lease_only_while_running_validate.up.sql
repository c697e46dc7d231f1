-- Checks the rows written before the constraint existed (SHARE UPDATE EXCLUSIVE: writes go on).
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_lease_only_while_running;
