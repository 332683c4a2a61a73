-- Run records: one row per reconcile or command, so `provisioner status` and the portal can show it.
CREATE TABLE provisioner_runs (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,              -- product | delete | access | rotate | resync | job
    subject     text NOT NULL,              -- the portal id the run is about (product, consumer)
    namespace   text,
    status      text NOT NULL CHECK (status IN ('running', 'success', 'failure', 'skipped')),
    steps       jsonb NOT NULL DEFAULT '[]'::jsonb,  -- names of the steps that changed something
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb,  -- counts and notes; never a secret
    error       text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX provisioner_runs_subject ON provisioner_runs (subject, started_at DESC);
CREATE INDEX provisioner_runs_started ON provisioner_runs (started_at DESC);
