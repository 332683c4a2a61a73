-- Group commit for the intake: many deliveries in one statement, one transaction and one WAL flush.
-- p_items: a JSON array of provisioner_intake's nine arguments per delivery, in order
-- [generation, delivery_id, dedup_key, dedup_seconds, event_type, entity, ignored_reason, body, jobs].
-- Deliveries are taken in array order, so a redelivery inside the same batch sees the first one's key.
CREATE FUNCTION provisioner_intake_batch(p_items jsonb)
RETURNS TABLE (n bigint, inbox_id bigint, outcome text, job_ids bigint[], coalesced integer)
LANGUAGE plpgsql AS $$
DECLARE
    item jsonb;
    i bigint;
BEGIN
    FOR item, i IN SELECT t.j, t.n FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t(j, n) ORDER BY t.n LOOP
        RETURN QUERY
            SELECT i, r.inbox_id, r.outcome, r.job_ids, r.coalesced
            FROM provisioner_intake(item->>0, item->>1, item->>2, (item->>3)::integer, item->>4, item->>5,
                                    item->>6, item->7, item->8) AS r;
    END LOOP;
END;
$$;
