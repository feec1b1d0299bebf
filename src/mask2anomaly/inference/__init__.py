"""Prediction: the Predictor (official inference path), annotating images and videos, media
I/O, pictures, and ONNX export."""
