"""teramind-hf: gene-conditioned 3D brain morphology diffusion (Tera-MIND) for diffusers."""

__version__ = "0.1.0"
