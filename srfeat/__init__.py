"""SRFeat: single-image super-resolution with feature discrimination (Park et al., ECCV 2018)."""

__version__ = "0.1.0"
