"""The interactive page of `vitlens explain`: one self-contained HTML file, plain JavaScript.

Everything is inlined (images as data URLs, maps as base64 bytes in one JSON object) and a
Content-Security-Policy forbids any network request. The page shows, per image: the image with the
selected block's patch grid; clicking or hovering a patch shows where that query attends in the
chosen block and head; beside it, where the class token attends, the attention rollout and the
gradient rollout; then the position-embedding similarity (click a position), the embedding
filters' principal components, and the token-norm and attention-distance charts.

The page's template, style and script are the files of `vitlens/report/assets/`. The attention
of every grid query is stored as bytes: each row scaled so its maximum is 255
(the page shows each map scaled to its own maximum), so a ViT-B/16 image costs about 5 MB.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class PageImage:
    """One image as the page shows it: its pixels, and what the model made of it."""

    name: str
    pixels: np.ndarray  # uint8 (H, W) or (H, W, 3)
    label: int
    predicted: int
    explained: int


def quantized_rows(full: torch.Tensor, prefix: int) -> torch.Tensor:
    """(heads, P + G, P + G) attention -> uint8 (heads, G, G): each grid query's row over the grid
    keys, scaled so that its maximum is 255."""
    rows = full[:, prefix:, prefix:].double()
    peak = rows.amax(-1, keepdim=True).clamp_min(1e-30)
    return (rows / peak * 255).round().to(torch.uint8)


def b64(data: bytes | np.ndarray | torch.Tensor) -> str:
    if isinstance(data, torch.Tensor):
        data = data.cpu().numpy()
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).tobytes()
    return base64.b64encode(data).decode("ascii")


def png_data_url(pixels: np.ndarray, scale: int = 1) -> str:
    """A data URL of a uint8 (H, W) or (H, W, 3) image, enlarged `scale` times (nearest)."""
    img = Image.fromarray(pixels)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return "data:image/png;base64," + b64(buffer.getvalue())


def file_data_url(path: Path) -> str:
    return "data:image/png;base64," + b64(path.read_bytes())


def component_pixels(values: list[float], shape: list[int]) -> np.ndarray:
    """One principal component as a uint8 image scaled to its own range."""
    c, h, w = shape
    comp = np.asarray(values, dtype=float).reshape(c, h, w)
    comp = (comp - comp.min()) / max(comp.max() - comp.min(), 1e-12)
    comp = (comp * 255).round().astype(np.uint8)
    return comp[0] if c != 3 else comp.transpose(1, 2, 0)


def payload(
    model: str,
    images: list[PageImage],
    rows: list[list[torch.Tensor]],
    maps: Any,
    embeddings: Any | None,
    charts: dict[str, Path],
    notes: list[str],
) -> dict[str, Any]:
    """The page's data: `rows[image][block]` from `quantized_rows`, `maps` an
    AttentionMapsResult, `embeddings` an EmbeddingsResult (or None), `charts` name -> PNG."""
    data: dict[str, Any] = {
        "model": model,
        "notes": notes,
        "blocks": [
            {"name": n, "heads": h, "grid": g, "query": q}
            for n, h, g, q in zip(maps.names, maps.heads, maps.grids, maps.queries, strict=True)
        ],
        "images": [
            {
                "name": im.name,
                "src": png_data_url(im.pixels),
                "label": im.label,
                "predicted": im.predicted,
                "explained": im.explained,
            }
            for im in images
        ],
        "rows": [[b64(block) for block in per_image] for per_image in rows],
        "cls": maps.maps,
        "rollout": maps.rollout,
        "gradient": maps.gradient_rollout,
        "rolloutNote": maps.rollout_note,
        "unread": maps.unread,
        "charts": {name: file_data_url(path) for name, path in charts.items()},
    }
    if embeddings is not None and embeddings.position_similarity:
        data["positions"] = {
            "grid": embeddings.position_grid,
            "similarity": embeddings.position_similarity,
            "parameter": embeddings.position_parameter,
        }
    if embeddings is not None and embeddings.components:
        data["filters"] = [
            {"src": png_data_url(component_pixels(c, embeddings.filter_shape), 8), "share": s}
            for c, s in zip(embeddings.components, embeddings.explained_variance, strict=True)
        ]
    return data


def asset(name: str) -> str:
    """A file of `vitlens/report/assets/` (the page's HTML, CSS and JavaScript)."""
    return resources.files("vitlens.report").joinpath("assets", name).read_text(encoding="utf-8")


def render(data: dict[str, Any]) -> str:
    """The whole page as one string: the template with its style, script and data inlined."""
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (
        asset("explain.html")
        .replace("__TITLE__", html.escape(f"How {data['model']} sees"))
        .replace("__STYLE__", asset("explain.css"))
        .replace("__SCRIPT__", asset("explain.js"))
        .replace("__DATA__", blob)
    )
