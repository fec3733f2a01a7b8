from .pipeline_teramind import TeraMindPipeline, TeraMindPipelineOutput

__all__ = ["TeraMindPipeline", "TeraMindPipelineOutput"]
