"""leanops: lean, provably correct incremental batch pipelines on AWS serverless."""

__version__ = "0.1.0"
