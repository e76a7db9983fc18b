"""Where the tokens of an attention map sit on the image: global grids after prefix tokens, or
windows tiling the grid. Shared by the attention statistics and the attention maps.

Windowed attention (Swin, AlterNet) runs on (B * windows, heads, w², w²) maps. The window is read
from the nearest module above `Block.attention` with an integer `window` (vitlens Swin and
AlterNet) or a `window_size` (timm Swin) attribute, and must account for N; without one, an
attention that does not cover the whole grid is taken to use square windows of side √N. Windows
tile the block's grid row-major after zero-padding at the bottom and right (the order vitlens and
timm use, after Swin's cyclic shift); distances are between positions inside a window; padded
positions are dropped as queries and keys. Positions inside a shifted window are measured in the
shifted frame, which is exact because tokens wrapped around the map's edge are masked from the
others.

Attention over pooled keys (PVT's spatial reduction, Twins' global sub-sampled attention, MViT's
pooling attention, Next-ViT) runs on (B, heads, P + H*W, P + h*w) maps: every query of the grid
attends to a coarser h x w grid of keys, found as the grid one stride per axis gives; distances
are then between cell centres of the two grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vitlens.anatomy import Block
from vitlens.errors import VitlensError


@dataclass(frozen=True)
class Geometry:
    """Where the tokens of one block's attention maps sit.

    Attributes:
        window: (h, w) grid positions in one window (the whole grid for global attention).
        n_windows: windows per image (1 for global attention).
        prefix: tokens before the grid tokens in each map (class tokens), 0 when windowed.
        pixels: input pixels per grid step along rows and columns.
        valid: (n_windows, h * w) bool, False at padding positions.
        keys: the (h, w) grid of the keys when it is not the query grid (PVT's spatial
            reduction, Twins' sub-sampled and MViT's pooled attention: every query of the grid
            attends to a coarser grid of keys; MViT's pooled queries: to a finer one); None
            when queries and keys are the same tokens.
    """

    window: tuple[int, int]
    n_windows: int
    prefix: int
    pixels: tuple[float, float]
    valid: torch.Tensor
    keys: tuple[int, int] | None = None

    @staticmethod
    def global_grid(
        grid: tuple[int, int], prefix: int = 0, pixels: tuple[float, float] = (1.0, 1.0)
    ) -> Geometry:
        """Global attention over an H x W grid after `prefix` tokens."""
        valid = torch.ones(1, grid[0] * grid[1], dtype=torch.bool)
        return Geometry(tuple(grid), 1, prefix, pixels, valid)

    @staticmethod
    def windowed(
        grid: tuple[int, int], window: tuple[int, int], pixels: tuple[float, float] = (1.0, 1.0)
    ) -> Geometry:
        """Non-overlapping windows tiling an H x W grid zero-padded at the bottom and right."""
        (H, W), (wh, ww) = grid, window
        nh, nw = -(-H // wh), -(-W // ww)
        valid = torch.zeros(nh * wh, nw * ww, dtype=torch.bool)
        valid[:H, :W] = True
        # (nh*wh, nw*ww) -> (nh, wh, nw, ww) -> (nh*nw, wh*ww), windows in row-major order
        valid = valid.view(nh, wh, nw, ww).permute(0, 2, 1, 3).reshape(nh * nw, wh * ww)
        return Geometry((wh, ww), nh * nw, 0, pixels, valid)

    @staticmethod
    def reduced(
        grid: tuple[int, int],
        keys: tuple[int, int],
        prefix: int = 0,
        pixels: tuple[float, float] = (1.0, 1.0),
    ) -> Geometry:
        """Every query of an H x W grid (after `prefix` tokens) attending to an h x w grid of
        pooled keys (after the same prefix tokens)."""
        valid = torch.ones(1, grid[0] * grid[1], dtype=torch.bool)
        return Geometry(tuple(grid), 1, prefix, pixels, valid, tuple(keys))

    @property
    def key_grid(self) -> tuple[int, int]:
        return self.keys or self.window

    @property
    def key_valid(self) -> torch.Tensor:
        """(n_windows, keys) bool: the real grid keys of each window."""
        if self.keys is None:
            return self.valid
        return torch.ones(1, self.keys[0] * self.keys[1], dtype=torch.bool)

    def distances(self) -> torch.Tensor:
        """(queries, keys) distances in input pixels between the grid tokens' centres."""
        if self.keys is None:
            return distance_matrix(self.window, self.pixels)
        (H, W), (h, w) = self.window, self.keys
        key_pixels = (self.pixels[0] * H / h, self.pixels[1] * W / w)
        return cross_distances(self.window, self.pixels, self.keys, key_pixels)


def cross_distances(queries, query_pixels, keys, key_pixels) -> torch.Tensor:
    """(Hq*Wq, Hk*Wk) Euclidean distances between the cell centres of two grids over the same
    image, each cell (i + 0.5) of its own size in input pixels from the image's corner."""

    def centres(grid, pixels):
        h, w = grid
        rows = (torch.arange(h, dtype=torch.float64) + 0.5).repeat_interleave(w) * pixels[0]
        cols = (torch.arange(w, dtype=torch.float64) + 0.5).repeat(h) * pixels[1]
        return rows, cols

    (qr, qc), (kr, kc) = centres(queries, query_pixels), centres(keys, key_pixels)
    return torch.hypot(qr[:, None] - kr[None, :], qc[:, None] - kc[None, :])


def pooled_grid(keys: int, grid: tuple[int, int]) -> tuple[int, int] | None:
    """The h x w grid of `keys` tokens one stride per axis apart from the H x W query grid:
    coarser (keys pooled, with the last cell partial as a padded strided conv or pool gives)
    or finer (queries pooled: MViT's stage transitions), if there is one."""
    H, W = grid
    for stride in range(2, max(H, W) + 1):
        coarser = ((-(-H // stride), -(-W // stride)), (H // stride, W // stride))
        for h, w in (*coarser, (H * stride, W * stride)):
            if h * w == keys and h > 0 and w > 0:
                return h, w
    return None


def distance_matrix(window: tuple[int, int], pixels: tuple[float, float] = (1.0, 1.0)):
    """(h*w, h*w) Euclidean distances between token centres of an h x w grid, in input pixels."""
    h, w = window
    rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w) * pixels[0]  # row-major
    cols = torch.arange(w, dtype=torch.float64).repeat(h) * pixels[1]
    return torch.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])


def window_of(model: nn.Module, module: nn.Module) -> tuple[int, int] | None:
    """The window size of the nearest module at or above `module` that declares one."""
    parents = {id(c): m for m in model.modules() for c in m.children()}
    while module is not None:
        for attr in ("window", "window_size"):
            value = getattr(module, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value, value
            if (
                isinstance(value, tuple | list)
                and len(value) == 2
                and all(isinstance(v, int) for v in value)
            ):
                return int(value[0]), int(value[1])
        module = parents.get(id(module))
    return None


def resolve_geometry(
    block: Block,
    attn_shape: tuple[int, ...],
    batch: int,
    grid: tuple[int, int],
    image_size: tuple[int, int],
    window: tuple[int, int] | None,
) -> Geometry:
    """How a block's (B * nW, heads, N, M) maps sit on its H x W grid (see the module docstring).

    Raises:
        VitlensError: the maps fit neither global attention over the grid, nor pooled keys,
            nor square windows.
    """
    H, W = grid
    pixels = (image_size[0] / H, image_size[1] / W)
    n_windows, N, queries = attn_shape[0] // batch, attn_shape[-1], attn_shape[-2]
    prefix = block.layout.prefix if block.layout.kind == "tokens" else 0
    fits = []  # in order of preference; the first with the maps' window count is taken
    if window is not None and window[0] * window[1] == N:
        fits.append(Geometry.windowed(grid, window, pixels))
    if n_windows == 1 and prefix + H * W == N:
        fits.append(Geometry.global_grid(grid, prefix, pixels))
    if math.isqrt(N) ** 2 == N and queries == N:
        fits.append(Geometry.windowed(grid, (math.isqrt(N),) * 2, pixels))
    keys = pooled_grid(N - prefix, grid)
    if keys and n_windows == 1 and prefix + H * W == queries != N:
        fits.append(Geometry.reduced(grid, keys, prefix, pixels))
    if keys and n_windows == 1 and queries == N:  # queries and keys pooled (EfficientFormerV2)
        coarse = (image_size[0] / keys[0], image_size[1] / keys[1])
        fits.append(Geometry.reduced(keys, keys, prefix, coarse))
    for geometry in fits:
        if geometry.n_windows == n_windows and attn_shape[0] % batch == 0:
            return geometry
    raise VitlensError(
        f"cannot place the {tuple(attn_shape)} attention maps of {block.name} on its "
        f"{H}x{W} token grid for a batch of {batch}: they are neither global attention "
        f"(N = prefix + H*W), nor every query of the grid attending to a pooled grid of "
        f"keys, nor attention on a pooled grid, nor square windows tiling the grid"
    )


def place(
    block: Block,
    candidates: list[torch.Tensor],
    batch: int,
    grid: tuple[int, int],
    image_size: tuple[int, int],
    window: tuple[int, int] | None,
) -> tuple[torch.Tensor, Geometry]:
    """The one attention map among a block's `candidates` that fits its grid, with where its
    tokens sit. A block computing several attentions (TNT: pixels within each patch, then the
    patches) is read by the one over its own grid.

    Raises:
        VitlensError: none fits (the first one's reason), or several do (stacked layers in one
            block: which one is the block's attention cannot be told).
    """
    fits, errors = [], []
    for attn in candidates:
        try:
            shape = tuple(attn.shape)
            fits.append((attn, resolve_geometry(block, shape, batch, grid, image_size, window)))
        except VitlensError as err:
            errors.append(err)
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise errors[0]
    raise VitlensError(
        f"{block.name} computed {len(candidates)} attention maps of which {len(fits)} fit its "
        f"{grid[0]}x{grid[1]} grid (several attention layers inside one block): which is the "
        "block's cannot be told, so none is read"
    )
