"""Loss modules (robust and unnormalized-model objectives)."""
