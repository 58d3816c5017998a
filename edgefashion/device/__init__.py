"""Device side: numpy and one interpreter (LiteRT or ONNX Runtime). Never imports edgefashion.host."""
