#!/usr/bin/env bash
# Prepares what scripts/gpu/*.sh carry to the GPU machine (which reaches no registry): wheels for Python 3.12 of
# the packages its image lacks, in .whl/, and the LGE training data (EMIDEC PNGs; MyoPS LGE + labels, without the
# bSSFP files) in .data/datasets/. Both folders are git-ignored; together they stay under the 64 MiB carry limit.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl .data/datasets
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl monai nibabel pydicom pydantic pydantic-core annotated-types typing-inspection
shared="${DICOMNODE_SHARED_DATASETS:-../shared/datasets}"
tar -C "$shared" --exclude '*_C0.nii.gz' -cf - emidec-lge-png myops2020-lge | tar -C .data/datasets -xf -
du -sh .whl .data
