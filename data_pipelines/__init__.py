"""Datasets and input pipelines that produce msp meta-batches."""
