"""Files shipped with the package: the demo pipeline."""
