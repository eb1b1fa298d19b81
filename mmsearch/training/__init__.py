"""Contrastive training of light heads on top of frozen towers (LiT-style), and its loss."""
