"""LGE scar segmentation engine: anisotropic 3D U-Net, training on EMIDEC, ONNX export and evaluation."""
