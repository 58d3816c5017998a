"""The model formats edgefashion exports, and which float model each int8 one is checked against."""

FORMATS = ("tflite-int8", "tflite-f32", "onnx-f32", "onnx-int8")
FLOAT_OF = {"tflite-int8": "tflite-f32", "onnx-int8": "onnx-f32"}
FIRMWARE_FORMAT = "tflite-int8-firmware"  # the full-int8 model for TFLM when model_int8.tflite keeps float layers
