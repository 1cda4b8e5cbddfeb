"""dicomnode: a PACS-integrated DICOM node for cardiac MRI."""

__version__ = "0.1.0"


def _tolerate_real_world_values() -> None:
    """Archives hold values that break the letter of PS3.5 (e.g. UIDs with leading zeros): read them quietly."""
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


_tolerate_real_world_values()
