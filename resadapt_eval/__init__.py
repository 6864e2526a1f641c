"""resadapt-eval: budget-controlled evaluation of multimodal LLMs."""

__version__ = "0.1.0"
