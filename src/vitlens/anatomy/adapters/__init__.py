"""Adapters that describe models vitlens does not own: timm, torchvision, Hugging Face, generic.

Importing this package registers them with `vitlens.anatomy.register_adapter`; each adapter module
imports only torch and checks class names, so none of those libraries is needed to import it.
"""

# Adapters are asked newest first, so the generic fallback is imported (registered) first and
# asked last; the others do not overlap.
from vitlens.anatomy.adapters import generic  # noqa: F401, I001
from vitlens.anatomy.adapters import huggingface, timm_models, torchvision_models  # noqa: F401
