"""Convolutional transforms applied tile by tile, so that memory stays bounded on large images.

A tile is computed with a margin of context around it and only its interior is kept. Every
network of the prior reaches at most 3 cells of its own grid (the channel context's three 3×3
convolutions, on y; the hyper transforms on z reach fewer), so with a margin at least that wide
(MARGIN, or a network's exact reach: prior.py's margins) the stitched result is the whole-image
result: exactly so for the integer prior, whose tables must not depend on tiling. The analysis
and synthesis reach further, but fade: their tiles' margins keep pixels within a level.
"""

from .allocator import release_freed_memory

TILE_PIXELS = 1024  # tile side in image pixels: images up to 1024×1024 are a single tile
# The side that `tile_side` gives a larger image. At 24 MP with N=192 and M=320 (model 2), tiles
# of 1024 pixels held, besides their results: 0.4 GB in the analysis (its first layer's float
# output and the bf16 copy the next layers take), 0.3 GB in the exact hyper-synthesis and 0.18 GB
# in the non-anchors' correction of the largest channel group; tiles of 512 pixels about 0.1,
# 0.15 and 0.07 GB (with prior.py's margins). A multiple of 64: whole cells of z, and an even
# number of cells of y (the checkerboard).
LARGE_IMAGE_TILE_PIXELS = 512
MARGIN = 4  # grid cells of context on each side of a tile


def tile_side(height, width):
    """The tile side for the transforms that hold the most per pixel (the analysis, the exact
    hyper-synthesis and non-anchor correction) over an image of height × width pixels: one tile
    where it fits (TILE_PIXELS: no margins to pay), else LARGE_IMAGE_TILE_PIXELS, in a few per
    cent more time."""
    return TILE_PIXELS if max(height, width) <= TILE_PIXELS else LARGE_IMAGE_TILE_PIXELS


def by_tiles(transform, source, in_unit, out_unit, cell, out=None, tile_pixels=None,
             margin=None):
    """Apply `transform` to overlapping tiles of `source` [1, C, H, W] (or of each tensor of a
    tuple of such, passed to `transform` as that many arguments) and stitch the interiors, into
    `out` when given; a transform that returns a tuple of tiles gives a tuple of results.
    `out` may be a source when the transform is pointwise in it: a tile's interior then reads
    only its own elements, which no other tile writes.

    The tiles are `tile_pixels` image pixels square (TILE_PIXELS unless given), with `margin`
    cells of context on each side (MARGIN unless given), on a grid whose cells are `cell` image
    pixels, `in_unit` elements of the source (or a tuple: of each source) and `out_unit`
    elements of the result."""
    sources = source if isinstance(source, tuple) else (source,)
    units = in_unit if isinstance(in_unit, tuple) else (in_unit,) * len(sources)
    tile = (tile_pixels or TILE_PIXELS) // cell
    margin = MARGIN if margin is None else margin
    rows, cols = sources[0].shape[2] // units[0], sources[0].shape[3] // units[0]
    results, several = (None if out is None else (out,)), False
    for top in range(0, rows, tile):
        for left in range(0, cols, tile):
            r0, c0 = max(top - margin, 0), max(left - margin, 0)
            r1, c1 = min(top + tile + margin, rows), min(left + tile + margin, cols)
            pieces = transform(*(s[:, :, r0 * u:r1 * u, c0 * u:c1 * u]
                                 for s, u in zip(sources, units)))
            several = isinstance(pieces, tuple)
            pieces = pieces if several else (pieces,)
            if len(pieces) != len(results or pieces):
                raise ValueError("a transform with several outputs takes no `out`")
            if results is None:
                results = tuple(piece.new_empty(1, piece.shape[1], rows * out_unit,
                                                cols * out_unit) for piece in pieces)
            h, w = min(tile, rows - top) * out_unit, min(tile, cols - left) * out_unit
            dy, dx = (top - r0) * out_unit, (left - c0) * out_unit
            for result, piece in zip(results, pieces):
                result[:, :, top * out_unit:top * out_unit + h,
                       left * out_unit:left * out_unit + w] = piece[:, :, dy:dy + h, dx:dx + w]
    if rows > tile or cols > tile:  # a large image: its tiles' intermediates go back
        release_freed_memory()
    return results if several else results[0]
