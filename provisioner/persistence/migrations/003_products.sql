-- What the provisioner has converged each data product to. Never a secret: only access key ids.
CREATE TABLE provisioner_products (
    product_id    text PRIMARY KEY,
    namespace     text NOT NULL,
    name          text NOT NULL DEFAULT '',
    state         text NOT NULL CHECK (state IN ('provisioned', 'deleted')),
    access_key_id text,                         -- the key written into the project's .env
    read_prefixes text[] NOT NULL DEFAULT '{}', -- producer namespaces this product may read
    seeded        boolean NOT NULL DEFAULT false,
    fingerprint   text,                         -- desired state at the last successful converge
    verified_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- One live product per namespace; a deleted product's namespace may be reused.
CREATE UNIQUE INDEX provisioner_products_live_namespace
    ON provisioner_products (namespace) WHERE state = 'provisioned';

-- Read grants: the consumer may read the producer's prefix because of this approved input port.
CREATE TABLE provisioner_grants (
    consumer_id        text NOT NULL,
    output_port_id     text NOT NULL,
    producer_id        text NOT NULL,
    producer_namespace text NOT NULL,
    output_port_namespace text NOT NULL DEFAULT '',
    tokenize_run_id    text,
    tokenize_note      text NOT NULL DEFAULT '',
    granted_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_id, output_port_id)
);
CREATE INDEX provisioner_grants_producer ON provisioner_grants (producer_id);

-- The last tokenization outcome per output port, for `provisioner grants`.
CREATE TABLE provisioner_tokenize_outcomes (
    output_port_id text PRIMARY KEY,
    producer_id    text NOT NULL,
    status         text NOT NULL,
    run_id         text,
    rows_changed   bigint NOT NULL DEFAULT 0,
    error          text,
    finished_at    timestamptz NOT NULL DEFAULT now()
);
