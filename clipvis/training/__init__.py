"""Training the segmenter: the loop, the Hungarian matcher and the losses."""
