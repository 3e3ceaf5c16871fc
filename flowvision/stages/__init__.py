"""One run as declared stages: the stage store (``store``: declarations, derived keys, the Run), the stage
list (``pipeline``), one run's folder and files (``run``), its record, state file and trackers, the sample
audit, the dry run and the cost model."""
