"""Reports: Tables I–VI beside the paper's numbers, figures, overlays, index.html, and MLflow run comparison."""
