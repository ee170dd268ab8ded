"""Network, layers and the face pipeline (decode, detect, align, embed)."""
