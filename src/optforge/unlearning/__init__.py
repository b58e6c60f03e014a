"""Language-model unlearning: losses, LoRA initialisation, metrics."""
