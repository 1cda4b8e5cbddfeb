"""`dicomnode devtools ...` subcommands (make-study) added to the main argparse parser by add_devtools_parser."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dicomnode.devtools.make_study import TRANSFER_SYNTAXES, VARIANTS, make_study


def add_devtools_parser(subparsers) -> argparse.ArgumentParser:
    """Add `devtools make-study` to an argparse subparsers object; each leaf sets `func(args) -> int` as default."""
    devtools = subparsers.add_parser("devtools", help="developer tools (test data)")
    commands = devtools.add_subparsers(dest="devtools_command", required=True)
    make = commands.add_parser(
        "make-study", help="write a DICOM test study with ground truth from the labelled real datasets",
        description="Sources: emidec:Case_P043 (8-bit PNG LGE, assumed geometry), myops:Case3002 (MyoPS 2020: real "
                    "12-bit LGE, magnitude only, the scanner's spacing and orientation; research use only), acdc:patient001, acdc4d:patient090, "
                    "sunnybrook:SCD0000101 (copied as is). Writes OUT/dicom/*.dcm, OUT/ground_truth.npz (expert labels "
                    "as node labels) and OUT/LICENSE.txt (derived data keeps its licence).")
    make.add_argument("source", help="dataset:case, e.g. emidec:Case_P043")
    make.add_argument("--out", required=True, type=Path, help="output folder")
    make.add_argument("--variant", default="ge", choices=VARIANTS, help="how a site would send it (default ge)")
    make.add_argument("--transfer-syntax", default=None, choices=[k for k in TRANSFER_SYNTAXES if k],
                      help="lossless encoding of the pixel data (default explicit VR little endian)")
    make.add_argument("--seed", type=int, default=None,
                      help="changes every UID of the study (study, series, SOP instance, frame of reference), so "
                           "that the same source can be sent again as another study; without it the UIDs are fixed "
                           "per source/variant/transfer syntax (sunnybrook: its original UIDs)")
    make.add_argument("--datasets", type=Path, default=None,
                      help="shared datasets folder (default $DICOMNODE_SHARED_DATASETS or <repo>/../shared/datasets)")
    make.add_argument("--no-description", action="store_true", help="leave SeriesDescription empty")
    make.add_argument("--odd-dates", action="store_true", help="invalid dates as in Sunnybrook (20120000)")
    make.add_argument("--shared-series-uid", action="store_true", help="one SeriesInstanceUID for every series")
    make.add_argument("--mixed-frames", action="store_true",
                      help="philips-enhanced LGE: PSIR and magnitude frames in one instance (not myops: magnitude only)")
    make.add_argument("--no-localizers", action="store_true", help="sunnybrook: leave out the 3-plane localizer")
    make.set_defaults(func=run_make_study)
    return make


def run_make_study(args: argparse.Namespace) -> int:
    options = {key: True for key in ("no_description", "odd_dates", "shared_series_uid", "mixed_frames")
               if getattr(args, key)}
    if args.source.startswith("sunnybrook:"):
        options["with_localizers"] = not args.no_localizers
    try:
        study = make_study(args.source, args.out, variant=args.variant, transfer_syntax=args.transfer_syntax,
                           seed=args.seed, datasets=args.datasets, **options)
    except (ValueError, KeyError, FileNotFoundError) as exc:  # a source that does not exist or is malformed
        print(f"devtools make-study: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    print(json.dumps({"out_dir": str(study.out_dir), "files": len(study.paths),
                      "study_instance_uid": study.study_instance_uid, "variant": study.variant,
                      "transfer_syntax": study.transfer_syntax, "ground_truth": str(study.ground_truth_path)}))
    return 0
