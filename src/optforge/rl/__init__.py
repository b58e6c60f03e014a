"""Policy-gradient post-training pieces for language models."""
