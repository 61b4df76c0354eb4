"""Export: srfeat generators in the formats other runtimes and apps load (ONNX).

```python
from srfeat.export.onnx import BUNDLED_INFO, export_onnx
from srfeat.weights import load_generator

export_onnx(load_generator("default"), "srfeat_default.onnx", BUNDLED_INFO["default"])
```

`srfeat export --model default -o model.onnx` does the same from the command line. `onnx` and
`onnxscript` (the `onnx` extra) are imported only when a model is exported.
"""
