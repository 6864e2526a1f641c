"""Task adapters: read a benchmark's official layout, build prompts, score and break down results.

One module per benchmark registers its adapter name; a YAML card in `tasks/` names the adapter
and holds the data location, split, prompt variant, frame count and generation length.
"""

from resadapt_eval.core.registry import ADAPTER_GROUP, Registry

ADAPTERS = Registry("task adapter", __name__, ADAPTER_GROUP)
register = ADAPTERS.register
