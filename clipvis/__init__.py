"""clipvis: open-vocabulary video instance segmentation with a frozen convolutional CLIP (CLIP-VIS)."""

__version__ = "0.1.0"
