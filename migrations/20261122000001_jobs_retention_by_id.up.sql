-- Retention now walks the primary key (ids are UUIDv7, creation time first) instead of an
-- index on finished_at. Every completion had to insert into that index; dropping it takes one
-- index write off every finished job.
DROP INDEX IF EXISTS jobs_finished_idx;
