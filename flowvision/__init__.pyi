# The types of flowvision's public names (``__init__.py`` loads them lazily, so type checkers read them here).
from .methods.evaluate import per_sample_losses as per_sample_losses
from .methods.forgetting import forgetting as forgetting
from .methods.forgetting import measured_model as measured_model
from .methods.regularizers import EWC as EWC
from .methods.regularizers import L2SP as L2SP
from .methods.regularizers import LwF as LwF
from .methods.weighting import flow_weights as flow_weights
from .methods.weighting import weighted_loss as weighted_loss

__version__: str
__all__ = ["per_sample_losses", "flow_weights", "weighted_loss", "measured_model", "forgetting", "L2SP", "EWC",
           "LwF"]
