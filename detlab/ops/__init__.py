"""Pure tensor functions shared by heads, losses and post-processors (boxes, NMS, polygons)."""
