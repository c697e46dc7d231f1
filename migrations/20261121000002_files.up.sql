-- Uploaded and generated files (DESIGN §6 Files). The bytes live in object storage under
-- `object_key`; a row exists only once its object is complete.
CREATE TABLE files (
    id           uuid        PRIMARY KEY,
    tenant       text        NOT NULL,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    content_type text        NOT NULL,
    size         bigint      NOT NULL CHECK (size >= 0),
    sha256       text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    object_key   text        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Listing is keyset-paginated per tenant by id (UUIDv7, so time-ordered).
CREATE INDEX files_tenant_idx ON files (tenant, id DESC);
