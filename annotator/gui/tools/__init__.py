"""Canvas tools: each owns one way of editing and paints its own feedback."""
