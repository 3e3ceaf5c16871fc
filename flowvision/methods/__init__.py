"""The method, on models and tensors: timm models and their task-specific parts (``models``), FLOW's
weights (``weighting``, pure), the one training loop (``train``), inference passes (``evaluate``), the
forgetting measure (``forgetting``), the source model (``source``) and foreign checkpoints
(``importing``). Nothing here knows about run folders or stage keys."""
