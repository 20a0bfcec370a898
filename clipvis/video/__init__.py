"""Video inference: matching queries across frames into tracks, streaming inference and result writing."""
