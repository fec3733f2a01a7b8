"""Evaluation: realism and fidelity metrics, grid/seam scores and attention summaries (public names load lazily)."""

from .._lazy import lazy_attributes

_ATTRIBUTES = {
    "segment_nuclei": ".nuclei",
    "nuclei_metrics": ".nuclei",
    "match_centroids": ".nuclei",
    "radial_power_spectrum": ".spectrum",
    "power_spectrum_distance": ".spectrum",
    "high_frequency_ratio": ".spectrum",
    "intensity_histogram_distance": ".spectrum",
    "border_score": ".grid",
    "worst_phase_border_score": ".grid",
    "step_profile": ".grid",
    "fidelity_metrics": ".fidelity",
    "realism_metrics": ".metrics",
    "evaluation_report": ".report",
    "EvalReport": ".report",
    "seam_score": ".seams",
    "seam_score_array": ".seams",
    "pair_significance": ".attention_null",
    "expressed_pair_attention": ".attention_null",
    "pathway_map": ".maps",
    "perturb_genes": ".perturb",
    "cell_type_markers": ".perturb",
    "knockout_report": ".knockout",
}
__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES)
__all__ = sorted(_ATTRIBUTES)
