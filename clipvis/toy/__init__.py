"""The embedded toy world: its generator and renderer, and the toy CLIP's pretraining."""
