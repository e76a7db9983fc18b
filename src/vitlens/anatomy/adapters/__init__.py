"""Adapters that describe models vitlens does not own (timm, torchvision).

Importing this package registers them with `vitlens.anatomy.register_adapter`; each adapter module
imports only torch and checks class names, so neither timm nor torchvision is needed to import it.
"""

# generic first: adapters are checked newest first, so the fallback is asked last.
from vitlens.anatomy.adapters import (  # noqa: F401  (registers)
    huggingface,
    timm_models,
    torchvision_models,
)
