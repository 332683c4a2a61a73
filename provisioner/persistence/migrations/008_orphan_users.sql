-- Store users named like products (dp-*) that belong to no product, as resync found them. A user is removed only
-- once it has been an orphan for PROVISIONER_ORPHAN_GRACE_SECONDS since first_seen; a user that belongs to a
-- product again (or is gone) loses its row at the next resync.
CREATE TABLE provisioner_orphan_users (
    user_name  text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);
