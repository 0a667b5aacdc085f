"""A run over many boards: the station's config file, the workers, the run itself, its records.

- :mod:`~atflash.run.config`: the bench (station) file behind ``--config``, and the checks
  that every image builds and every output can be written, before any board.
- :mod:`~atflash.run.workers`: the worker pool that runs one session per board, retries,
  and stops the safe way on Ctrl-C and SIGTERM.
- :mod:`~atflash.run.runner`: a whole write or verify run: ports, plans, workers, exit code.
- :mod:`~atflash.run.report`, :mod:`~atflash.run.audit`, :mod:`~atflash.run.records`: the
  JSON report, the append-only provisioning log, and writing both apart.
- :mod:`~atflash.run.reconcile`: a ledger brought up to date from a log or report.

This layer sits above ``backends/``, ``factory/`` and ``issue/``, and below the
public API (:mod:`atflash.api`) and the CLI.
"""
