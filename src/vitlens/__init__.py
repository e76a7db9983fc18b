"""vitlens: how do vision transformers work? (Park & Kim, ICLR 2022) as software."""

from vitlens.errors import VitlensError

__version__ = "0.1.0"

__all__ = ["VitlensError", "__version__"]
