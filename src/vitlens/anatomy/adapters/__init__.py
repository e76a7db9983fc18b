"""Adapters that describe models vitlens does not own (timm, torchvision).

Importing this package registers them with `vitlens.anatomy.register_adapter`; each adapter module
imports only torch and checks class names, so neither timm nor torchvision is needed to import it.
"""

from vitlens.anatomy.adapters import timm_models, torchvision_models  # noqa: F401  (registers)
