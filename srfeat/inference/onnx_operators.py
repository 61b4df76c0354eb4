"""ONNX operators grouped by what they do to the shapes of their inputs, for `onnx_growth` to follow the image's
size through them and `onnx_constants` the shapes of what constants alone make."""

from __future__ import annotations

from srfeat.inference.onnx_pads import POOLING

__all__ = ["BROADCASTING", "ENLARGING", "KEEPS_AXES", "OF_SHAPES", "SAME_SHAPE"]

# Operators whose output has their first input's shape (`onnx_constants` follows constants' through them)
SAME_SHAPE = frozenset(
    {"Identity", "Cast", "Neg", "Abs", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal"}
    | {"Floor", "Ceil", "Round", "Sign", "Not", "Clip", "Erf", "Softplus", "Elu", "HardSigmoid", "IsNaN", "IsInf"}
    | {"Selu", "HardSwish", "Gelu", "Mish", "Dropout", "Softmax", "LogSoftmax", "CastLike", "LpNormalization"}
    | {"BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization"}
    | {"QuantizeLinear", "DequantizeLinear"}
)
# Operators whose output is their inputs broadcast together (numpy's rules)
BROADCASTING = frozenset(
    {"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Where", "And", "Or", "Xor"}
    | {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "BitShift", "PRelu"}
)
# Operators that compute a shape from shapes (a ConstantOfShape of the image's shape is the image's size)
OF_SHAPES = BROADCASTING | {"Gather", "Slice", "Concat", "Identity", "Cast", "Floor", "Ceil", "Round", "Reshape"}
OF_SHAPES |= {"Squeeze", "Unsqueeze", "Neg", "Abs", "Range"}  # Range: a ScatterND's index grid, of its sizes alone
# Operators that enlarge the image by constant factors on its axes (what was padded before them too)
ENLARGING = frozenset({"Resize", "Upsample", "ConvTranspose"})
# Operators that keep each axis where it is: a pad on one stays on it
KEEPS_AXES = (
    SAME_SHAPE | BROADCASTING | POOLING | {"Conv", "ConvTranspose", "Resize", "Upsample", "Pad", "Slice", "Concat"}
)
