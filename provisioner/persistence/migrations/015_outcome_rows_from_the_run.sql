-- Issue 14 §2: one source of truth per fact. The rows a tokenization run changed are the run's own record
-- (tokenize_runs.total_rows, in this database); the port's last outcome kept a copy, written in another transaction.
-- The outcome now keeps what only it knows: which run it was (run_id), the port's verdict (the engine's result, or
-- FAILURE when the residual-PII gate blocked a successful run or the run never started) and that verdict's reason.
-- Readers take the row count from the run (provisioner.persistence.grants.tokenize_outcomes).
ALTER TABLE provisioner_tokenize_outcomes DROP COLUMN rows_changed;
