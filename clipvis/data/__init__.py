"""Dataset formats, benchmarks, the toy world, video reading, augmentation and data loading."""
