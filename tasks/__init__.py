"""Benchmark task runners (VTAB-1k, few-shot FGVC, domain generalization, video, segmentation): one file per
benchmark family. Filled by the image-classification and later issues."""
