-- Approved output ports that are not granted yet, and why (issue 12 §3): no tokenization decision, a failed
-- tokenization, a producer not provisioned yet, a policy over the store's size limit. `provisioner grants` and the
-- access run record show them; every access reconcile of the consumer replaces its rows.
CREATE TABLE provisioner_grant_waits (
    consumer_id           text NOT NULL,
    output_port_id        text NOT NULL,
    producer_id           text NOT NULL,
    producer_namespace    text NOT NULL DEFAULT '',
    output_port_namespace text NOT NULL DEFAULT '',
    reason                text NOT NULL,
    since                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_id, output_port_id)
);
