"""Online learning: learners, domains and loss streams."""
