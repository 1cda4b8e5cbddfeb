"""dicomnode: a PACS-integrated DICOM node for cardiac MRI."""

__version__ = "0.1.0"
