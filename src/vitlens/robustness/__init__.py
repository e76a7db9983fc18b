"""Robustness: the 15 common corruptions, the released CIFAR-C arrays, and frequency-band noise.

- `corrupt(images, name, severity, seed=...)`: Hendrycks & Dietterich's (ICLR 2019) corruptions,
  batched and seeded, with the CIFAR-10-C parameters for images up to 32x32 and the ImageNet-C ones
  above (`params=` to choose). Images are float in [0, 1] before normalisation, or uint8.
- `load_cifar_c`, `cifar_c_batches`: the released CIFAR-10-C / CIFAR-100-C `.npy` files.
- `band_noise`, `band_pass`, `sign_noise`: the frequency-band noise of Park & Kim (ICLR 2022),
  Fig. 2b.

The evaluations built on these are `vitlens.analysis.corruptions` and
`vitlens.analysis.freqnoise`.
"""

from vitlens.robustness.cifar_c import RELEASED, check_cifar_c, cifar_c_batches, load_cifar_c
from vitlens.robustness.corruptions import (
    CORRUPTIONS,
    FUNCTIONS,
    GROUPS,
    SEVERITIES,
    corrupt,
    corruption_parameter,
)
from vitlens.robustness.freqnoise import (
    DEFAULT_FREQUENCIES,
    band_mask,
    band_noise,
    band_pass,
    radial_frequency,
    sign_noise,
)
from vitlens.robustness.weather import frost_texture

__all__ = [
    "CORRUPTIONS",
    "DEFAULT_FREQUENCIES",
    "FUNCTIONS",
    "GROUPS",
    "RELEASED",
    "SEVERITIES",
    "band_mask",
    "band_noise",
    "band_pass",
    "check_cifar_c",
    "cifar_c_batches",
    "corrupt",
    "corruption_parameter",
    "frost_texture",
    "load_cifar_c",
    "radial_frequency",
    "sign_noise",
]
