"""Runs read back and shown: records as frames (``runs``), the paper's tables and the ledger, figures, the
frontier, what a command prints about a run or the demo (``report``), a finished run exported for timm,
and the cache's housekeeping."""
