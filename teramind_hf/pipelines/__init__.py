"""TeraMindPipeline and tera-scale generation (names load on first use)."""

from .._lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(
    __name__, {"TeraMindPipeline": ".pipeline_teramind", "TeraMindPipelineOutput": ".pipeline_teramind"}
)
__all__ = ["TeraMindPipeline", "TeraMindPipelineOutput"]
