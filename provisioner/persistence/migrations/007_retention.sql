-- Retention (provisioner/retention.py) deletes delivery keys by age in batches: find the old ones by index.
CREATE INDEX provisioner_inbox_keys_seen ON provisioner_inbox_keys (seen_at);
