"""meer: masked face recognition with mask decoupling and generative de-occlusion (MEER)."""

__version__ = "0.1.0"
