from .unet_genemorph_3d import GeneMorphUNet3DModel, GeneMorphUNet3DOutput, collage, patchify, unpatchify

__all__ = ["GeneMorphUNet3DModel", "GeneMorphUNet3DOutput", "collage", "patchify", "unpatchify"]
