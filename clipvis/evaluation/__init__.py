"""Scoring: video AP/AR identical to the official LV-VIS, YouTube-VIS and BURST scorers (`clipvis score`)."""
