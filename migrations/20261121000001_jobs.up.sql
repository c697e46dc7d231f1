-- Durable background jobs (DESIGN §6). Statuses are the lowercase words of the API.
CREATE TABLE jobs (
    id               uuid        PRIMARY KEY,
    tenant           text        NOT NULL,
    kind             text        NOT NULL,
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status           text        NOT NULL DEFAULT 'queued'
                                 CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         smallint    NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 25),
    run_at           timestamptz NOT NULL DEFAULT now(),
    locked_until     timestamptz,
    locked_by        text,
    cancel_requested boolean     NOT NULL DEFAULT false,
    result           jsonb,
    last_error       text,
    idempotency_key  text,
    request_hash     text,
    trace_id         text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);

-- Claiming reads only queued rows in priority order: finished jobs are never scanned.
CREATE INDEX jobs_claim_idx ON jobs (priority DESC, run_at, id) WHERE status = 'queued';
-- The reaper looks for running jobs whose lease expired.
CREATE INDEX jobs_lease_idx ON jobs (locked_until) WHERE status = 'running';
-- Listing is keyset-paginated per tenant by id (UUIDv7, so time-ordered).
CREATE INDEX jobs_tenant_idx ON jobs (tenant, id DESC);
-- Idempotency-Key is unique per tenant.
CREATE UNIQUE INDEX jobs_idempotency_idx ON jobs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Retention deletes finished jobs by age.
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE status IN ('succeeded', 'failed', 'cancelled');
