-- Issue 18: provisioning targets beside S3 (BigQuery first). Each target keeps its own state here.

-- The last outcome of each target for each product, per aspect: 'resources' (ensure, clean up) or 'grants' (the
-- reads the product holds as a consumer). A failed row makes the next resync converge that product again.
CREATE TABLE provisioner_target_state (
    target      text NOT NULL,
    product_id  text NOT NULL,
    aspect      text NOT NULL CHECK (aspect IN ('resources', 'grants')),
    state       text NOT NULL CHECK (state IN ('converged', 'failed', 'deleted', 'waiting', 'skipped')),
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, product_id, aspect)
);
CREATE INDEX provisioner_target_state_failed ON provisioner_target_state (state) WHERE state <> 'converged';

-- Reads a target granted (or is about to grant: written before the grant, so a crash never leaves one unknown):
-- the consumer's principal on the producer's resource. Removing an entry comes first, forgetting its row after.
CREATE TABLE provisioner_target_grants (
    target       text NOT NULL,
    consumer_id  text NOT NULL,
    producer_id  text NOT NULL,
    resource     text NOT NULL,
    principal    text NOT NULL,
    granted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, consumer_id, producer_id, resource, principal)
);
CREATE INDEX provisioner_target_grants_producer ON provisioner_target_grants (target, producer_id);
