"""The uContact simulator."""
