"""The foundations every other folder stands on: the names (``registry``), a run's configuration
(``config``), user errors, checked files and the cached-file primitive, the console, statistics, which
process this is (``distributed``) and which device it computes on (``hardware``)."""
