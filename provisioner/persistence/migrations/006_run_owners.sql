-- Run liveness (issue 13 §3): every process that records runs beats here; a run names the process that runs it.
-- A run still `running` whose process stopped beating (kill -9, OOM, a lost machine) becomes `failure`
-- ("worker died"): provisioner.db.fail_dead_runs, at every process start and with every heartbeat.
CREATE TABLE provisioner_processes (
    owner        text PRIMARY KEY,          -- host:pid:random, unique per process start
    host         text NOT NULL,
    pid          integer NOT NULL,
    command      text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE provisioner_runs ADD COLUMN owner text;
CREATE INDEX provisioner_runs_running ON provisioner_runs (owner) WHERE status = 'running';

-- Runs left `running` before runs had owners cannot be tied to a live process: their workers are gone (a run
-- still going during the upgrade writes its real outcome over this when it ends).
UPDATE provisioner_runs
   SET status = 'failure', finished_at = now(),
       error = 'worker died: the run was left running by a process that stopped before the upgrade to run owners'
 WHERE status = 'running';
