-- Issue 16: tokenization runs requested from DataHub (a `tokenize-now` tag on a dataset or on one of its fields).
-- One row per (dataset urn, audit stamp): the key of the request, so a redelivered event (Kafka and pg_queue deliver
-- at least once) finds its row and queues nothing. The row also holds what the run did, so its report to DataHub
-- (a DataProcessInstance) can be posted again from here while DataHub is unreachable: the local record comes first.
CREATE TABLE provisioner_datahub_runs (
    dataset_urn text NOT NULL,
    stamp       bigint NOT NULL,                 -- auditStamp.time (ms) of the tag event, or of the tag's aspect (scan)
    actor       text,                            -- who added the tag, as DataHub says
    fields      text[],                          -- field paths of field-level events; NULL: the dataset itself
    origin      text NOT NULL CHECK (origin IN ('event', 'scan')),
    state       text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'complete')),
    result      text CHECK (result IN ('SUCCESS', 'FAILURE')),
    retryable   boolean NOT NULL DEFAULT false,  -- a FAILURE that may pass (DataHub or the tenant unreachable)
    run_id      uuid,                            -- tokenize_runs.run_id of the local run record
    dpi_urn     text,                            -- the DataProcessInstance reporting the run in DataHub
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb, -- tenant, dry_run, rows_by_column, total_rows, error, times
    reported    boolean NOT NULL DEFAULT false,  -- the COMPLETE run event was accepted by DataHub
    job_id      bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (dataset_urn, stamp)
);
CREATE INDEX provisioner_datahub_runs_unreported ON provisioner_datahub_runs (created_at) WHERE NOT reported;

-- Record a request and queue its job in one round trip (what the Actions plugin's act() does; it must return
-- within milliseconds). Returns the new job id, or NULL when the request was absorbed:
--   * the same (dataset, stamp) already recorded: a redelivery. While its job still waits, a field-level request
--     adds its field (one aspect write that tagged several fields has one stamp); NULL fields (the dataset) absorb all.
--   * p_origin = 'scan' (the lost-event repair) queues again a run whose FAILURE was retryable, and a run whose end
--     DataHub has not accepted yet (the job then only posts the report).
-- Jobs go to the 'datahub' queue, locked per dataset (two runs on one dataset take turns).
CREATE FUNCTION provisioner_datahub_enqueue(
    p_dataset_urn text, p_stamp bigint, p_field text, p_actor text, p_origin text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_row provisioner_datahub_runs%ROWTYPE;
    v_jobs bigint[];
    v_inserted boolean := false;
BEGIN
    INSERT INTO provisioner_datahub_runs (dataset_urn, stamp, actor, fields, origin)
    VALUES (p_dataset_urn, p_stamp, p_actor, CASE WHEN p_field IS NULL THEN NULL ELSE ARRAY[p_field] END, p_origin)
    ON CONFLICT (dataset_urn, stamp) DO NOTHING
    RETURNING true INTO v_inserted;
    IF v_inserted IS NULL THEN
        SELECT * INTO v_row FROM provisioner_datahub_runs
        WHERE dataset_urn = p_dataset_urn AND stamp = p_stamp FOR UPDATE;
        IF v_row.state = 'queued' THEN
            UPDATE provisioner_datahub_runs SET fields = CASE
                    WHEN fields IS NULL OR p_field IS NULL THEN NULL
                    WHEN p_field = ANY (fields) THEN fields
                    ELSE fields || p_field END
            WHERE dataset_urn = p_dataset_urn AND stamp = p_stamp;
            RETURN NULL;
        END IF;
        IF p_origin <> 'scan' OR v_row.state <> 'complete'
           OR NOT ((v_row.result = 'FAILURE' AND v_row.retryable) OR NOT v_row.reported) THEN
            RETURN NULL;
        END IF;
        IF v_row.result = 'FAILURE' AND v_row.retryable THEN
            UPDATE provisioner_datahub_runs SET state = 'queued', result = NULL, retryable = false, reported = false
            WHERE dataset_urn = p_dataset_urn AND stamp = p_stamp;
        END IF;
    END IF;
    v_jobs := provisioner_defer(
        jsonb_build_array(jsonb_build_object(
            'task', 'tokenize_dataset',
            'lock', 'dataset:' || p_dataset_urn,
            'queueing_lock', 'tokenize_dataset:' || p_dataset_urn || '@' || p_stamp,
            'args', jsonb_build_object('dataset_urn', p_dataset_urn, 'stamp', p_stamp))),
        'datahub', true);
    UPDATE provisioner_datahub_runs SET job_id = coalesce(v_jobs[1], job_id)
    WHERE dataset_urn = p_dataset_urn AND stamp = p_stamp;
    RETURN v_jobs[1];
END;
$$;
