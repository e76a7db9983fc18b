"""What a model needs to know about a dataset: classes, channels, size and normalization.

`DatasetInfo` is the small, JSON-friendly description that travels with a run (configs,
checkpoints, reports). The constants here pin the built-in datasets so `dataset_info` answers
without touching the data. CIFAR normalization constants are the authors' (official repo,
`configs/cifar*_vit.yaml`); the (Fashion-)MNIST ones are the per-pixel mean and standard deviation
of the training set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class DatasetInfo:
    """Description of an image classification dataset.

    Attributes:
        name: Canonical dataset name (as accepted by `load_dataset`).
        num_classes: Number of classes; labels are `0 .. num_classes - 1`.
        classes: Human-readable class names, indexed by label.
        in_chans: Image channels (1 for grayscale, 3 for RGB).
        image_size: Height and width of the (square) images.
        mean: Per-channel mean of the training images, on the [0, 1] scale.
        std: Per-channel standard deviation of the training images, on the [0, 1] scale.
        hflip: Whether horizontal flips keep an image in its class (False for digits).
    """

    name: str
    num_classes: int
    classes: tuple[str, ...]
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool

    def __post_init__(self) -> None:
        # Programming errors, not user errors: a malformed info would silently mis-normalize.
        if len(self.classes) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.classes)} class names for {self.num_classes}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"{self.name}: mean/std need {self.in_chans} values each")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"{self.name}: std must be positive, got {self.std}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form for JSON/YAML (tuples become lists)."""
        d = asdict(self)
        for key in ("classes", "mean", "std"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetInfo:
        """Inverse of `to_dict`."""
        return cls(
            name=str(d["name"]),
            num_classes=int(d["num_classes"]),
            classes=tuple(str(c) for c in d["classes"]),
            in_chans=int(d["in_chans"]),
            image_size=int(d["image_size"]),
            mean=tuple(float(m) for m in d["mean"]),
            std=tuple(float(s) for s in d["std"]),
            hflip=bool(d["hflip"]),
        )

    def with_image_size(self, image_size: int) -> DatasetInfo:
        """The same dataset, resized to `image_size`."""
        return replace(self, image_size=int(image_size))


FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# The `fine_label_names` of cifar-100-python/meta, in label order.
CIFAR100_CLASSES = tuple(
    """
    apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
    camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
    cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp
    lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
    oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
    possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake
    spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor
    train trout tulip turtle wardrobe whale willow_tree wolf woman worm
    """.split()  # noqa: SIM905 - 100 names read better as words than as 100 lines
)

BUILTIN_INFOS: dict[str, DatasetInfo] = {
    # Mean/std of the 10,000 shipped training images (pinned by a test against the file).
    "fashion-mnist-mini": DatasetInfo(
        name="fashion-mnist-mini",
        num_classes=10,
        classes=FASHION_MNIST_CLASSES,
        in_chans=1,
        image_size=28,
        mean=(0.2869,),
        std=(0.3531,),
        hflip=True,
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        num_classes=10,
        classes=FASHION_MNIST_CLASSES,
        in_chans=1,
        image_size=28,
        mean=(0.2860,),
        std=(0.3530,),
        hflip=True,
    ),
    "mnist": DatasetInfo(
        name="mnist",
        num_classes=10,
        classes=tuple(str(d) for d in range(10)),
        in_chans=1,
        image_size=28,
        mean=(0.1307,),
        std=(0.3081,),
        hflip=False,  # a flipped 2 is not a 2
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        classes=CIFAR10_CLASSES,
        in_chans=3,
        image_size=32,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
        hflip=True,
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        num_classes=100,
        classes=CIFAR100_CLASSES,
        in_chans=3,
        image_size=32,
        mean=(0.5071, 0.4867, 0.4408),
        std=(0.2675, 0.2565, 0.2761),
        hflip=True,
    ),
}
