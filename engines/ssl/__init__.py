"""Self-supervised CMR backbone: DICOM-geometry pretext data, pretraining, few-shot evaluation, view classifier."""
