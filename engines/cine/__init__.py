"""Cine short-axis segmentation engine: U-Net definition, data, augmentation, training, ONNX export, evaluation."""
