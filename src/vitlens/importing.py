"""`vitlens import SOURCE --out RUN`: a model trained elsewhere becomes a run folder.

SOURCE is one of

- `timm:NAME` — any timm model, random init or `--weights` (.safetensors, .pth/.pth.tar read with
  `torch.load(weights_only=True)`, or a Google .npz for timm's ViT family);
- `torchvision:NAME` — any torchvision classification model, with `--weights` as above;
- `hf:DIR` — a Hugging Face folder written by `save_pretrained` (`config.json`, and
  `model.safetensors` unless the model is to start from random weights), always loaded as its
  `...ForImageClassification` model so that it has logits;
- `authors:NAME` — the how-do-vits-work CIFAR-100 release (`vit_ti`, `pit_ti`, `swin_ti`,
  `resnet50`, `alternet50`): a vitlens model, `--weights` being the released `{name, state_dict}`.

The run folder is what `vitlens train` leaves: `config.yaml` and `checkpoints/final.json` +
`final.model.safetensors`, so `eval`, `analyze`, `study` and `train --init` accept it. The record's
`model_spec` names the model so that `vitlens.models.create_model` rebuilds it (outside models are
built by `build_foreign`), and its `import` entry says where it came from: source, weights file
name and SHA-256, and the normalisation of the dataset it is evaluated on (`--dataset`, whose
mean/std every command applies) next to the one the model declares, if any.

Bad input (an unknown prefix or name, a folder without config.json, weights that do not fit, a
pickle that `weights_only` refuses, an image size the model cannot take, a dataset that does not
fit) raises a `VitlensError`, and nothing is written to `--out`: the folder is assembled under a
temporary name and renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitlens.atomic import file_digest
from vitlens.data.preprocess import Preprocessing, from_hf
from vitlens.errors import VitlensError
from vitlens.models.foreign import (
    _PICKLES,
    _hf_config,
    _hf_model,
    _library,
    _unknown,
    parse_source,
)
from vitlens.pretrained import (
    build_timm_pretrained,
    hf_snapshot,
    hub_repo,
    is_weights_enum,
    load_with_new_head,
    timm_preprocessing,
    timm_pretrained_cfg,
    timm_weights,
    torchvision_found,
)

# -------------------------------------------------------------------------------- weights


def read_weights(path: Path) -> dict[str, Any]:
    """A state dict from .safetensors, or from a pickle read with `weights_only=True` only."""
    if not path.is_file():
        raise VitlensError(f"no weights file at {path}")
    name = path.name.lower()
    if name.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as err:
            raise VitlensError(f"{path} is not a readable safetensors file: {err}") from None
    if not name.endswith(_PICKLES):
        raise VitlensError(
            f"{path}: weights must be .safetensors, .pth/.pth.tar (or a Google .npz for timm)"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError and friends: whatever the restricted unpickler says
        raise VitlensError(
            f"{path} is a pickle that torch.load(weights_only=True) refuses to read, so vitlens "
            f"will not open it (it could run code). Convert it to .safetensors where it was "
            f"made. torch said: {str(err).splitlines()[0]}"
        ) from None
    if not isinstance(loaded, dict):
        raise VitlensError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    return loaded


def _load_into(prefix: str, name: str, model: nn.Module, path: Path) -> None:
    from vitlens.models.convert import AUTHORS, load_converted

    if path.name.lower().endswith(".npz"):
        if prefix != "timm" or not hasattr(model, "load_pretrained"):
            raise VitlensError(f"{path}: Google .npz weights load into timm's ViT family only")
        try:
            model.load_pretrained(str(path))
        except Exception as err:  # timm's npz reader raises whatever numpy or torch raise
            raise VitlensError(f"{path} does not fit timm:{name}: {err}") from None
        return
    source = AUTHORS[name].source if prefix == "authors" else "native"
    load_converted(model, read_weights(path), source)


# ------------------------------------------------------------------------------ importing


@dataclass
class Imported:
    """What `import_model` built, before it is written."""

    model: nn.Module
    spec: dict[str, Any]
    origin: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing | None = None  # the pretrained model's own, applied later


def _hf_import(name: str, num_classes, image_size, in_chans) -> Imported:
    """A save_pretrained folder, or a hub id's snapshot in the Hugging Face cache."""
    hub = hub_repo(name)
    found = hf_snapshot(*hub) if hub else None
    folder = str(found.path) if found else name
    config = _hf_config(folder, None, num_classes, image_size, in_chans)
    num_classes, in_chans = config.num_labels, getattr(config, "num_channels", 3)
    image_size = image_size or getattr(config, "image_size", None) or 224
    weights = Path(folder) / "model.safetensors"
    pickled = [p.name for p in Path(folder).glob("*.bin")]
    if not weights.is_file() and pickled:
        raise VitlensError(
            f"{folder} holds its weights only as {', '.join(pickled)}, a pickle that vitlens does "
            "not execute; save them as model.safetensors (model.save_pretrained(folder, "
            "safe_serialization=True)) and import again"
        )
    if not weights.is_file():
        model, origin = _hf_model(config), {"weights": None}
    else:
        model = _hf_pretrained(folder, config)
        origin = {"weights": weights.name, "weights_sha256": file_digest(weights)}
    origin["config_sha256"] = file_digest(Path(folder) / "config.json")
    if found:
        origin["pretrained"] = found.origin
        run_name = f"hf:{found.origin['repo']}@{found.origin['revision']}"
    else:
        run_name = f"hf:{Path(folder).resolve()}"
    spec = _spec(run_name, num_classes, image_size, in_chans)
    spec["args"] = {"config": config.to_dict()}
    return Imported(model, spec, origin, _hf_preprocessing(Path(folder), image_size))


def _hf_preprocessing(folder: Path, image_size: int) -> Preprocessing | None:
    processor = folder / "preprocessor_config.json"
    if not processor.is_file():
        return None
    try:
        values = json.loads(processor.read_text())
    except (OSError, ValueError) as err:
        raise VitlensError(f"{processor} is not readable JSON: {err}") from None
    if not isinstance(values, dict):
        raise VitlensError(f"{processor} is not a JSON mapping")
    return from_hf(values, image_size, "preprocessor_config.json")


def _hf_pretrained(folder: str, config) -> nn.Module:
    """The folder's classification model, its weights checked key by key."""
    transformers = _library("transformers", "hf")
    try:
        model, info = transformers.AutoModelForImageClassification.from_pretrained(
            folder, config=config, output_loading_info=True, ignore_mismatched_sizes=True
        )
    except Exception as err:  # OSError, ValueError, SafetensorError: a damaged or foreign file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VitlensError(f"transformers cannot load {folder}: {first}") from None
    _check_hf_loading(folder, info)
    return model


def _check_hf_loading(folder: str, info: dict[str, list]) -> None:
    from vitlens.models.convert import _listing

    problems = [
        f"{label} keys ({len(keys)}): {_listing(sorted(map(str, keys)))}"
        for label, keys in (
            ("missing", info.get("missing_keys") or []),
            ("unexpected", info.get("unexpected_keys") or []),
            ("mismatched", info.get("mismatched_keys") or []),
        )
        if keys
    ]
    if problems:
        raise VitlensError(
            f"the weights in {folder} do not fit its config (a bare backbone has no classifier: "
            "save the ...ForImageClassification model).\n  " + "\n  ".join(problems)
        )


def _spec(name: str, num_classes: int, image_size: int, in_chans: int) -> dict[str, Any]:
    return {
        "name": name,
        "num_classes": num_classes,
        "image_size": image_size,
        "in_chans": in_chans,
        "args": {},
    }


def _declared_size(prefix: str, name: str) -> int:
    """The input side a model is made for, used when --image-size is not given."""
    if prefix == "authors":
        return 32
    if prefix == "timm":
        cfg = _library("timm", "timm").models.get_pretrained_cfg(name)
        return int(cfg.input_size[-1]) if cfg and cfg.input_size else 224
    return 224


def build_import(
    source: str, *, weights, num_classes, image_size, in_chans, pretrained: bool = False
) -> Imported:
    """The model a SOURCE names, with its weights, and the spec its run records."""
    from vitlens.models import create_model
    from vitlens.models.convert import AUTHORS

    prefix, name = parse_source(source)
    _check_pretrained_flags(prefix, weights, pretrained)
    if prefix == "hf":
        return _hf_import(name, num_classes, image_size, in_chans)
    if prefix == "timm" and pretrained:
        return _timm_pretrained_import(name, num_classes, image_size, in_chans)
    if prefix == "torchvision" and weights is not None and is_weights_enum(str(weights)):
        return _torchvision_enum_import(name, str(weights), num_classes, image_size)
    if prefix == "authors" and name not in AUTHORS:
        raise _unknown("authors'", name, list(AUTHORS))
    if prefix == "timm" and name not in _library("timm", "timm").list_models():
        raise _unknown("timm", name, _library("timm", "timm").list_models())
    image_size = image_size or _declared_size(prefix, name)
    # The authors' models are vitlens models: their runs are native (`train vit_ti --init RUN`).
    run_name = AUTHORS[name].model if prefix == "authors" else source

    model = create_model(
        run_name, num_classes=num_classes, image_size=image_size, in_chans=in_chans
    )
    origin: dict[str, Any] = {"weights": None}
    if weights is not None:
        path = Path(weights)
        _load_into(prefix, name, model, path)
        origin = {"weights": path.name, "weights_sha256": file_digest(path)}
    return Imported(model, _spec(run_name, num_classes, image_size, in_chans), origin)


def _check_pretrained_flags(prefix: str, weights, pretrained: bool) -> None:
    if pretrained and prefix != "timm":
        raise VitlensError(
            "--pretrained is for timm:NAME[.TAG]; torchvision takes --weights DEFAULT or an enum "
            "name, and hf:ORG/NAME is pretrained by itself"
        )
    if pretrained and weights is not None:
        raise VitlensError("give either --pretrained (timm's own weights) or --weights FILE")
    if prefix == "hf" and weights is not None:
        raise VitlensError("hf:DIR reads DIR/model.safetensors; --weights is not used")


def _timm_pretrained_import(name: str, num_classes, image_size, in_chans) -> Imported:
    found = timm_weights(name)
    tag = found.origin["tag"]
    cfg = timm_pretrained_cfg(name)
    image_size = image_size or int(cfg.input_size[-1])
    num_classes = num_classes or cfg.num_classes
    model = build_timm_pretrained(
        tag, found, num_classes=num_classes, in_chans=in_chans, image_size=image_size
    )
    run_name = f"timm:{tag}"
    model.vitlens_name = run_name
    model.vitlens_config = {"num_classes": num_classes, "image_size": image_size}
    origin = {**found.origin, "pretrained": True}
    pre = timm_preprocessing(model, image_size, tag)
    return Imported(model, _spec(run_name, num_classes, image_size, in_chans), origin, pre)


def _torchvision_enum_import(name: str, choice: str, num_classes, image_size) -> Imported:
    from vitlens.models import create_model

    found = torchvision_found(name, choice, image_size)
    size = found.preprocessing.size
    num_classes = num_classes or found.origin["categories"]
    run_name = f"torchvision:{name}"
    model = create_model(run_name, num_classes=num_classes, image_size=size, in_chans=3)
    new_head = load_with_new_head(model, read_weights(found.path), f"torchvision:{name}")
    origin = {**found.origin, "new_head": new_head}
    return Imported(model, _spec(run_name, num_classes, size, 3), origin, found.preprocessing)


def _check_forward(model: nn.Module, spec: dict[str, Any]) -> None:
    """The model takes a batch at the recorded size and returns one logit per class."""
    from vitlens.anatomy import anatomy_of

    side, chans = spec["image_size"], spec["in_chans"]
    model.eval()
    try:
        with torch.no_grad():
            logits = anatomy_of(model, need_blocks=False).forward(
                model, torch.zeros(2, chans, side, side)
            )
    except VitlensError:
        raise
    except Exception as err:  # the model's own complaint, e.g. a patch grid that does not fit
        raise VitlensError(
            f"{spec['name']} cannot take {chans}x{side}x{side} images (try another --image-size): "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    if logits.ndim != 2 or logits.shape[1] != spec["num_classes"]:
        raise VitlensError(
            f"{spec['name']} returns logits of shape {tuple(logits.shape)}, not "
            f"(batch, {spec['num_classes']})"
        )


def _check_dataset(info, spec: dict[str, Any]) -> None:
    if info.in_chans != spec["in_chans"] or info.num_classes != spec["num_classes"]:
        raise VitlensError(
            f"{info.name} has {info.in_chans} channels and {info.num_classes} classes, but the "
            f"model takes {spec['in_chans']} channels and predicts {spec['num_classes']} classes; "
            "pick a --dataset that fits, or --num-classes / --in-chans for a new model"
        )


def _model_normalisation(model: nn.Module, built: Imported) -> dict | None:
    """The mean/std the model declares (its recorded preprocessing, timm pretrained_cfg)."""
    from vitlens.anatomy import anatomy_of

    if built.preprocessing is not None and built.preprocessing.mean:
        return {"mean": list(built.preprocessing.mean), "std": list(built.preprocessing.std)}
    spec = anatomy_of(model, need_blocks=False).input
    if spec.mean and spec.std:
        return {"mean": list(spec.mean), "std": list(spec.std)}
    return None


@dataclass(frozen=True)
class ImportReport:
    out: Path
    model: str
    dataset: str
    parameters: int
    blocks: str  # what the anatomy found, or why it cannot see inside
    pretrained: bool = True  # False: random init, no weights were given


def import_model(
    source: str,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    image_size: int | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    pretrained: bool = False,
) -> ImportReport:
    """Build SOURCE (with `weights`), check it against `dataset`, and write the run folder `out`."""
    from vitlens.config import MAX_IMAGE_SIZE
    from vitlens.data import DEFAULT_DATASET, dataset_info

    out = Path(out)
    if image_size is not None and not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise VitlensError(f"--image-size must be between 1 and {MAX_IMAGE_SIZE} pixels")
    for flag, value in (("--num-classes", num_classes), ("--in-chans", in_chans)):
        if value is not None and value < 1:  # refused, never replaced by a default
            raise VitlensError(f"{flag} must be at least 1, got {value}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VitlensError(f"{out} already exists and is not empty; choose a new --out")
    info = dataset_info(dataset or DEFAULT_DATASET, data_dir, image_size)
    prefix, name = parse_source(source)
    if prefix != "hf":  # an HF folder brings its own classes and channels
        num_classes = num_classes or info.num_classes
        in_chans = in_chans or info.in_chans
    built = build_import(
        source,
        weights=weights,
        num_classes=num_classes,
        image_size=image_size,
        in_chans=in_chans,
        pretrained=pretrained,
    )
    _check_forward(built.model, built.spec)
    _check_dataset(info, built.spec)
    pre = built.preprocessing.for_channels(info.in_chans) if built.preprocessing else None
    built.origin.update(
        source=source,
        dataset=info.name,
        normalisation={"dataset": {"mean": list(info.mean), "std": list(info.std)}}
        | {"model": _model_normalisation(built.model, built)},
        preprocessing=pre.to_dict() if pre else None,
        # Said in the record, not left to be inferred: no weights means random initialisation.
        random_init=not (built.origin.get("weights") or built.origin.get("pretrained")),
    )
    _write_run(out, built, info, data_dir)
    return ImportReport(
        out,
        built.spec["name"],
        info.name,
        sum(p.numel() for p in built.model.parameters()),
        _anatomy_summary(built.model),
        pretrained=not built.origin["random_init"],
    )


def _anatomy_summary(model: nn.Module) -> str:
    from vitlens.anatomy import anatomy_of

    try:
        blocks = anatomy_of(model).blocks
    except VitlensError as err:
        return f"no blocks: {err}"
    kinds: dict[str, int] = {}
    for b in blocks:
        kinds[b.kind] = kinds.get(b.kind, 0) + 1
    return f"{len(blocks)} blocks (" + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")"


def _write_run(out: Path, built: Imported, info, data_dir: str | None) -> None:
    """config.yaml and checkpoints/final.* under a temporary name, then renamed to `out`."""
    from vitlens.atomic import write_text as atomic_write_text
    from vitlens.config import dump_yaml, make_config
    from vitlens.train.checkpoint import save_checkpoint

    config = make_config(
        "quick",
        model=built.spec["name"],
        dataset=info.name,
        image_size=built.spec["image_size"],
        augment="none",  # how it was trained is unknown: analyses see plain training images
        data_dir=data_dir,
        model_args=built.spec["args"],
    )
    tmp = out.with_name(f".{out.name}.import{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as err:
        raise VitlensError(f"cannot write the run folder {out}: {err.strerror or err}") from None
    try:
        atomic_write_text(tmp / "config.yaml", dump_yaml(config))
        state = {
            "config": config.to_dict(),
            "model_spec": built.spec,
            "dataset": info.name,
            "classes": list(info.classes),
            "import": built.origin,
        }
        save_checkpoint(tmp / "checkpoints", "final", built.model, None, state)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
