-- Issue 14 §2: one source of truth per fact.

-- (1) tokenize_runs, the run records of the tokenization engine (provisioner.tokenize.records) and of the tools built
-- on it (profile, the residual-PII gate), becomes a versioned table of this database. The engine used to create it on
-- first use; a database where it did keeps its table and rows (IF NOT EXISTS), and a table made by an older engine
-- gets the later columns. Used on its own, the library still creates the same table itself (its SCHEMA; a test
-- compares the two), and inside the provisioner it finds the table complete and runs no DDL.
CREATE TABLE IF NOT EXISTS tokenize_runs (
    run_id         uuid PRIMARY KEY,
    tenant         text NOT NULL,
    policy         text NOT NULL DEFAULT '',
    dry_run        boolean NOT NULL,
    state          text NOT NULL CHECK (state IN ('RUNNING', 'COMPLETE')),
    result         text CHECK (result IN ('SUCCESS', 'FAILURE')),
    tables         jsonb NOT NULL DEFAULT '[]'::jsonb,
    rows_by_column jsonb NOT NULL DEFAULT '{}'::jsonb,
    total_rows     bigint NOT NULL DEFAULT 0,
    error          text,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    duration_ms    double precision
);
CREATE INDEX IF NOT EXISTS tokenize_runs_started ON tokenize_runs (started_at DESC);
ALTER TABLE tokenize_runs ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'tokenize';  -- tokenize, profile, gate
ALTER TABLE tokenize_runs ADD COLUMN IF NOT EXISTS detail jsonb NOT NULL DEFAULT '{}'::jsonb;  -- other kinds' counts
-- The process running the run (migration 006): a RUNNING run whose process stopped beating becomes a FAILURE.
ALTER TABLE tokenize_runs ADD COLUMN IF NOT EXISTS owner text;

-- (2) What a product may read was stored twice, in separate transactions: as grant decisions (provisioner_grants)
-- and again as provisioner_products.read_prefixes. Every value of the column was computed from those grant rows (a
-- deleted product had none, and its rows went with it), so the rows are the source and the column goes; `provisioner
-- status` derives a product's readable prefixes from them.
ALTER TABLE provisioner_products DROP COLUMN read_prefixes;
