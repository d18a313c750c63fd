"""Patch grids: same-grid checks and bilinear resampling, for the fusions that align tokens position by position."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import ConfigError


def check_same_grid(specs: list, resample: bool) -> None:
    grids = [s.grid for s in specs]
    if len(set(grids)) > 1 and not resample:
        names = ", ".join(f"{s.type} {g[0]}x{g[1]} (image {s.image_size}px / patch {s.patch_size})" for s, g in zip(specs, grids))
        raise ConfigError(
            f"MofConfig: the encoders' patch grids differ ({names}); choose image sizes that give the same grid "
            "or set fusion.resample=true to resize every grid to the first encoder's"
        )


def resample_to_grid(features: torch.Tensor, grid: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize `[n, rows*cols, width]` patch features to another grid."""
    if grid == target:
        return features
    n, _, width = features.shape
    maps = features.transpose(1, 2).reshape(n, width, *grid)
    maps = F.interpolate(maps, size=target, mode="bilinear", align_corners=False)
    return maps.flatten(2).transpose(1, 2)


def aligned(features: list[torch.Tensor], specs: list, resample: bool) -> list[torch.Tensor]:
    """Every encoder's features on the first encoder's grid (a no-op unless `resample`)."""
    if not resample:
        return features
    return [resample_to_grid(f, s.grid, specs[0].grid) for f, s in zip(features, specs)]


def windows(features: torch.Tensor, grid: tuple[int, int], side: int) -> torch.Tensor:
    """`[n, rows*cols, width]` -> `[n * side², (rows/side) * (cols/side), width]`: the patches of each cell of a
    side x side grid over the map, cells in raster order, patches in raster order within a cell."""
    n, _, width = features.shape
    rows, cols = grid
    x = features.reshape(n, side, rows // side, side, cols // side, width).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n * side * side, (rows // side) * (cols // side), width)
