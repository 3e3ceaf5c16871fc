"""Many runs on many processes and machines: which runs share a stage (``grid``), where they run (``launch``:
local workers, Slurm), speed ratios (``bench``) and the GPU check (``gpucheck``, ``gpucell``)."""
