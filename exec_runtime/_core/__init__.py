"""The sans-IO core: pure, synchronous ordering rules. Nothing here imports trio."""
