"""Numbers shared by the library and the command line, in a module with no heavy imports (the CLI reads them
to print its help without importing torch)."""

# Pixel size (microns) of the phantom tissue the embedded default model was trained on; everything that makes
# tissue for the default model (demo, examples, benchmarks, tests) uses this one value. At 0.5 um/px a 16-px
# gene bin is 8 um, finer than the cells, so the genes say where each cell is, not only which type it is
# (at 1.0 um/px, stages 1-3 of scripts/train_default_model.py, they could not: docs/architecture.md).
DEFAULT_MODEL_UM_PER_PX = 0.5

MERSCOPE_UM_PER_PX = 0.108  # MERSCOPE mosaic pixel; the default physical scale of real data
DEFAULT_SECTION_SPACING_UM = 150.0  # sections of a brain are 100-200 um apart
DEFAULT_STEP_BUFFER_LIMIT = 64 * 2**20  # bytes of step buffers kept in memory; above it they go to disk
# level-0 shard side in tiles (= the work unit of `teramind generate`): 4 x 4 tiles x 2 sections x 2 stains per
# object, ~190 k objects for a whole brain instead of ~12 M chunk files (docs/tera-scale.md)
DEFAULT_SHARD_TILES = 4
PHANTOM_FORMATS = ("table", "official", "store", "merscope")
STAIN_NAMES = ("DAPI", "PolyT")  # the model's output channels, in order (OME-Zarr channel labels, SpatialData c)
