-- Webhook inbox: every authenticated, well-formed delivery, with what the intake did about it.
-- Written in the same transaction as the jobs it enqueued, so a 202 never loses work.
-- Holds no request headers (they may carry signatures or tokens).
CREATE TABLE provisioner_inbox (
    id             bigserial PRIMARY KEY,
    delivery_id    text,                      -- CloudEvents id or webhook-id; NULL for v1 (it has none)
    dedup_key      text NOT NULL,             -- sha256 of source+id, webhook-id, or the v1 body
    generation     text NOT NULL CHECK (generation IN ('v1', 'v2', 'standard')),
    event_type     text NOT NULL,
    entity         text,                      -- e.g. product:<id>, the first trigger's entity
    outcome        text NOT NULL CHECK (outcome IN ('enqueued', 'duplicate', 'ignored', 'coalesced')),
    ignored_reason text,
    job_ids        bigint[] NOT NULL DEFAULT '{}',
    coalesced      integer NOT NULL DEFAULT 0, -- triggers absorbed by a job already waiting
    received_at    timestamptz NOT NULL DEFAULT now(),
    body           jsonb NOT NULL
);
CREATE INDEX provisioner_inbox_received ON provisioner_inbox (received_at DESC);

-- One row per delivery key seen. v1 keys expire after the dedup window (the same body may be a new
-- change later); CloudEvents and webhook ids never do. ON CONFLICT makes concurrent redeliveries safe.
CREATE TABLE provisioner_inbox_keys (
    dedup_key text PRIMARY KEY,
    seen_at   timestamptz NOT NULL DEFAULT now()
);

-- Defer jobs into procrastinate's table, one row per trigger. A job already waiting with the same
-- queueing lock absorbs the new one (coalesced: NULL in the result) through ON CONFLICT on procrastinate's
-- own partial unique index, so nothing fails and no sub-transaction is needed. The columns are those
-- procrastinate_defer_jobs_v1 fills; its triggers (events, NOTIFY) fire on this insert as on its own.
-- p_jobs: a JSON array of {"task", "lock", "queueing_lock", "args"} (one JSON text is cheaper to send than
-- four parallel arrays). Returns the new job ids in order, NULL where the job was coalesced.
CREATE FUNCTION provisioner_defer(p_jobs jsonb, queue text DEFAULT 'provisioner') RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    result bigint[] := '{}';
    job jsonb;
    v_id bigint;
BEGIN
    FOR job IN SELECT j FROM jsonb_array_elements(p_jobs) WITH ORDINALITY AS t(j, n) ORDER BY n LOOP
        INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, queueing_lock, args)
        VALUES (queue, job->>'task', 0, job->>'lock', job->>'queueing_lock', job->'args')
        ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
        RETURNING id INTO v_id;
        result := result || v_id;
    END LOOP;
    RETURN result;
END;
$$;

-- The whole intake in one round trip: deduplicate, defer (coalesced), record the delivery.
CREATE FUNCTION provisioner_intake(
    p_generation text, p_delivery_id text, p_dedup_key text, p_dedup_seconds integer,
    p_event_type text, p_entity text, p_ignored_reason text, p_body jsonb, p_jobs jsonb
) RETURNS TABLE (inbox_id bigint, outcome text, job_ids bigint[], coalesced integer) LANGUAGE plpgsql AS $$
DECLARE
    fresh boolean;
    deferred bigint[] := '{}';
    v_outcome text;
    v_job_ids bigint[];
    v_coalesced integer := 0;
    v_id bigint;
BEGIN
    INSERT INTO provisioner_inbox_keys AS k (dedup_key) VALUES (p_dedup_key)
    ON CONFLICT (dedup_key) DO UPDATE SET seen_at = now()
        WHERE p_dedup_seconds IS NOT NULL
          AND (p_dedup_seconds = 0 OR k.seen_at < now() - make_interval(secs => p_dedup_seconds))
    RETURNING true INTO fresh;
    IF fresh IS NULL THEN
        v_outcome := 'duplicate';
    ELSIF p_ignored_reason IS NOT NULL OR jsonb_array_length(p_jobs) = 0 THEN
        v_outcome := 'ignored';
    ELSE
        deferred := provisioner_defer(p_jobs);
        v_job_ids := array_remove(deferred, NULL);
        v_coalesced := array_length(deferred, 1) - coalesce(array_length(v_job_ids, 1), 0);
        v_outcome := CASE WHEN coalesce(array_length(v_job_ids, 1), 0) > 0 THEN 'enqueued' ELSE 'coalesced' END;
    END IF;
    INSERT INTO provisioner_inbox AS i
        (delivery_id, dedup_key, generation, event_type, entity, outcome, ignored_reason, job_ids, coalesced, body)
    VALUES (p_delivery_id, p_dedup_key, p_generation, p_event_type, p_entity, v_outcome, p_ignored_reason,
            coalesce(v_job_ids, '{}'), v_coalesced, p_body)
    RETURNING i.id INTO v_id;
    RETURN QUERY SELECT v_id, v_outcome, coalesce(v_job_ids, '{}'::bigint[]), v_coalesced;
END;
$$;

-- procrastinate puts a failed job back to 'todo' to retry it. If a fresh job with the same queueing
-- lock is already waiting, that update would break the unique index and lose the retry; drop the
-- retry's queueing lock instead (the entity lock still keeps the two from running at once).
CREATE FUNCTION provisioner_release_retry_queueing_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM procrastinate_jobs
               WHERE queueing_lock = NEW.queueing_lock AND status = 'todo' AND id <> NEW.id) THEN
        NEW.queueing_lock := NULL;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER provisioner_release_retry_queueing_lock
    BEFORE UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN (OLD.status <> 'todo' AND NEW.status = 'todo' AND NEW.queueing_lock IS NOT NULL)
    EXECUTE FUNCTION provisioner_release_retry_queueing_lock();
