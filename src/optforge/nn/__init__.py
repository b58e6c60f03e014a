"""Neural-network building blocks (memory-efficient layers)."""
