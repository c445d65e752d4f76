"""ebm-vision: energy-inspired self-supervised pretraining of Vision Transformers in JAX/Flax."""
from ebm_vision.transfer.pretrained import load_pretrained

__all__ = ["load_pretrained"]
