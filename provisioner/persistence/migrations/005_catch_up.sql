-- Issue 12, items 5 to 7: v1 decisions are never dropped, the queue catches up at once, permanent failures park.

-- (5) v1 deliveries carry no id, and every approve, revoke and remove on one output port has the same body: an
-- identical v1 body is a new decision, not a redelivery. Only a delivery id (CloudEvents source+id, Standard
-- Webhooks webhook-id) proves a redelivery, and such keys never expire. p_dedup_seconds is ignored from here on
-- (kept so the signature, and provisioner_intake_batch which calls it, stay as they were).
CREATE OR REPLACE FUNCTION provisioner_intake(
    p_generation text, p_delivery_id text, p_dedup_key text, p_dedup_seconds integer,
    p_event_type text, p_entity text, p_ignored_reason text, p_body jsonb, p_jobs jsonb
) RETURNS TABLE (inbox_id bigint, outcome text, job_ids bigint[], coalesced integer) LANGUAGE plpgsql AS $$
DECLARE
    fresh boolean := true;
    deferred bigint[] := '{}';
    v_outcome text;
    v_job_ids bigint[];
    v_coalesced integer := 0;
    v_id bigint;
BEGIN
    IF p_delivery_id IS NOT NULL THEN
        fresh := NULL;
        INSERT INTO provisioner_inbox_keys (dedup_key) VALUES (p_dedup_key)
        ON CONFLICT (dedup_key) DO NOTHING
        RETURNING true INTO fresh;
    END IF;
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

-- (6) Jobs waiting on an entity's lock are looked up by lock (here, at every job's end, and by procrastinate's
-- own fetch, which skips a job whose lock has an older waiting job).
CREATE INDEX provisioner_jobs_todo_lock ON procrastinate_jobs (lock) WHERE status = 'todo';

-- (6) A new trigger for an entity whose job waits for a retry makes it run now: every job of that entity (lock)
-- that waits after a failure is due at once, and the workers are told (procrastinate only notifies on insert).
-- p_wake is false for the periodic resync: it names every product that is not converged, a failing one
-- included, and must not turn each failing product's backoff into the resync period.
DROP FUNCTION provisioner_defer(jsonb, text);
CREATE FUNCTION provisioner_defer(p_jobs jsonb, queue text DEFAULT 'provisioner', p_wake boolean DEFAULT true)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    result bigint[] := '{}';
    job jsonb;
    v_id bigint;
    v_woken bigint;
BEGIN
    FOR job IN SELECT j FROM jsonb_array_elements(p_jobs) WITH ORDINALITY AS t(j, n) ORDER BY n LOOP
        INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, queueing_lock, args)
        VALUES (queue, job->>'task', 0, job->>'lock', job->>'queueing_lock', job->'args')
        ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
        RETURNING id INTO v_id;
        result := result || v_id;
        IF p_wake THEN
            WITH woken AS (
                UPDATE procrastinate_jobs SET scheduled_at = now()
                WHERE lock = job->>'lock' AND status = 'todo' AND attempts > 0 AND scheduled_at > now()
                RETURNING id
            )
            SELECT min(id) INTO v_woken FROM woken;
            IF v_woken IS NOT NULL THEN
                PERFORM provisioner_notify_job_ready(queue, v_woken);
            END IF;
        END IF;
    END LOOP;
    RETURN result;
END;
$$;

-- The message procrastinate's workers wait for (its procrastinate_notify_queue_job_inserted_v1 sends the same).
CREATE FUNCTION provisioner_notify_job_ready(p_queue text, p_job_id bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    payload text := json_build_object('type', 'job_inserted', 'job_id', p_job_id)::text;
BEGIN
    PERFORM pg_notify('procrastinate_queue_v1#' || p_queue, payload);
    PERFORM pg_notify('procrastinate_any_queue_v1', payload);
END;
$$;

-- (6) A job queued behind its entity's lock starts when the lock is freed, not at the workers' next poll:
-- procrastinate notifies only when a job is inserted, so a job that ends tells the workers when another job of
-- the same entity is due.
CREATE FUNCTION provisioner_notify_lock_freed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_next record;
BEGIN
    SELECT id, queue_name INTO v_next FROM procrastinate_jobs
    WHERE lock = NEW.lock AND status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())
    ORDER BY id LIMIT 1;
    IF FOUND THEN
        PERFORM provisioner_notify_job_ready(v_next.queue_name, v_next.id);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER provisioner_notify_lock_freed
    AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN (OLD.status = 'doing' AND NEW.status <> 'doing' AND NEW.lock IS NOT NULL)
    EXECUTE FUNCTION provisioner_notify_lock_freed();

-- (6) A job that fails while a newer job of the same entity and kind waits (a trigger arrived while it ran) would
-- go back to the queue for its backoff, and since it is older, procrastinate would hold the newer job behind it
-- for as long. The two would do the same (jobs are level triggered), so they merge: the newer job is cancelled
-- and the retry, which keeps its attempt count, runs now. Replaces 002's version, which kept both.
CREATE OR REPLACE FUNCTION provisioner_release_retry_queueing_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE procrastinate_jobs SET status = 'cancelled'
    WHERE queueing_lock = NEW.queueing_lock AND status = 'todo' AND id <> NEW.id;
    IF FOUND THEN
        NEW.scheduled_at := now();
    END IF;
    RETURN NEW;
END;
$$;

-- (7) Products that failed permanently (a changed namespace, a refused name, a namespace conflict...). Resync
-- leaves a parked product alone while the portal shows it as it was when it failed (same fingerprint); a change
-- in the portal, `provisioner provision`, or the release of the namespace it wanted tries it again.
CREATE TABLE provisioner_parked (
    product_id  text PRIMARY KEY,
    namespace   text NOT NULL,             -- as the portal shows it (it may be one the provisioner refuses)
    fingerprint text NOT NULL,             -- digest of the portal's product when it failed
    reason      text NOT NULL,             -- the kind of failure, e.g. NamespaceChanged
    error       text NOT NULL,             -- the message, for a person to act on
    parked_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provisioner_parked_namespace ON provisioner_parked (namespace);
