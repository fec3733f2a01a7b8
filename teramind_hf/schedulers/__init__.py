from .scheduling_boundary_aware import BoundaryAwareScheduler, BoundaryAwareSchedulerOutput, tile_seed

__all__ = ["BoundaryAwareScheduler", "BoundaryAwareSchedulerOutput", "tile_seed"]
