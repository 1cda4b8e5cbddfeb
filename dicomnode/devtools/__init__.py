"""Developer tools: realistic DICOM test studies with ground truth, generated from the labelled real datasets."""
