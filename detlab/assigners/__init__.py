"""Label assigners: match predictions (anchors, points) to ground-truth boxes for the losses."""
