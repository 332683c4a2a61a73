"""The persistence room: the provisioner's own tables, their versioned migrations and every statement on them.

``migrations/NNN_name.sql`` are applied in order by ``provisioner.db.migrate`` (their ledger: ``schema.py``); a file's
name is its version, so a file is never renamed or edited once released (a database that applied it would not apply it
again). One module per table group holds its queries; ``records.py`` holds the typed rows; ``state.py`` is the door
(``StateStore``) the reconcilers and the CLI use, over the process's pool:

================================  ==================================================  ==============
table(s)                          what                                                module
================================  ==================================================  ==============
provisioner_products              what each product was converged to                  products.py
provisioner_grants                grant decisions: the one source of what a product   grants.py
                                  may read (its .env lists them; migration 012)
provisioner_grant_waits           approved ports not granted yet, and why             grants.py
provisioner_tokenize_outcomes     the last tokenization outcome per output port: its  grants.py
                                  run and verdict (counts stay in tokenize_runs; 015)
provisioner_runs                  one row per reconcile or command; ``recording``     runs.py
provisioner_processes             run liveness: the heartbeat, "worker died"          processes.py
provisioner_parked                products that failed permanently                    parked.py
provisioner_orphan_users          store users no product claims                       orphans.py
provisioner_inbox(_keys)          webhook deliveries (``provisioner_intake_batch``)   inbox.py
procrastinate_jobs                deferring jobs (``provisioner_defer``), counting    queue.py
provisioner_datahub_runs          tokenizations requested from DataHub                datahub.py
tokenize_runs                     the tokenization engine's records (written by the   processes.py,
                                  engine itself; here: liveness and retention)        retention.py
(all of the above)                retention's batched deletes                         retention.py
provisioner_migrations            the migration ledger                                schema.py
(advisory locks)                  entity locks: CLI commands and workers take turns   locks.py
================================  ==================================================  ==============

``connections.py`` says where a piece gets its connections (the process's pool, or a conninfo when used on its own).
Nothing else runs SQL on these tables (tests/test_persistence.py checks the source; import-linter keeps psycopg out
of the decision layer). The room imports nothing of the provisioner but errors and logs.
"""
