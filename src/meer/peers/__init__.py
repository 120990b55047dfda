"""Other recognisers, run with their own pipelines, as rows to compare meer against."""
