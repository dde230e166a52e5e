"""Export a detlab checkpoint for deployment (``detlab export``) and run the exported model.

One module per job:

* :mod:`~detlab.export.graphs`: the traceable modules: raw head outputs, or raw outputs plus
  post-processing (YOLO decode + NMS, Faster R-CNN's full graph, segmentation
  sigmoid/threshold, DB's probability map);
* :mod:`~detlab.export.onnx`: ``torch.onnx.export`` with the metadata a deployed model needs
  (input geometry, normalization, class names, head family) stored as ONNX ``metadata_props``;
* :mod:`~detlab.export.checkpoint`: checkpoint -> val batch -> graph -> file -> parity report
  (what ``detlab export`` runs);
* :mod:`~detlab.export.torchscript`: the second format, a traced TorchScript module;
* :mod:`~detlab.export.parity`: the exported graph against the checkpoint on a real val batch
  (onnxruntime);
* :mod:`~detlab.export.runtime`: ``detlab predict MODEL.onnx``: onnxruntime over image files,
  the same prediction files as a checkpoint writes, and :func:`~detlab.export.runtime.
  db_polygons` (DB's polygon step over an exported probability map).

onnx and onnxruntime are the optional extra ``detlab[export]``.
"""
