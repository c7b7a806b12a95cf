"""Catalogue tagging: Fashion-MNIST categories for product photos."""
