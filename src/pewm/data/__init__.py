"""The on-disk dataset format: episodes, dataset directories, verification and imports.

See ``docs/data-format.md``. Depends only on numpy, the standard library, ``pewm.geometry`` and
``pewm.atomic`` (Pillow is imported lazily by the TUM importer, rich lazily for progress bars).
"""

from pewm.atomic import TEMP_SUFFIX, atomic_write
from pewm.data.dataset import (
    DATASET_FORMAT_VERSION,
    DATASET_JSON,
    EPISODES_DIR,
    MANIFEST_JSON,
    Dataset,
    DatasetError,
    DatasetSpec,
    Problem,
    completeness_problems,
    create_dataset,
    open_dataset,
    require_complete,
    verify_dataset,
)
from pewm.data.episode import KINDS, SPLITS, Episode, EpisodeError
from pewm.data.io import (
    FORMAT_VERSION,
    EpisodeInfo,
    check_episode_file,
    read_episode,
    read_episode_info,
    write_episode,
    write_episode_frames,
)
from pewm.data.manifest import Manifest, file_sha256
from pewm.data.tum import TUM_FR1_INTRINSICS, TumFormatError, TumImportReport, import_tum


__all__ = [
    "DATASET_FORMAT_VERSION",
    "DATASET_JSON",
    "EPISODES_DIR",
    "FORMAT_VERSION",
    "KINDS",
    "MANIFEST_JSON",
    "SPLITS",
    "TEMP_SUFFIX",
    "TUM_FR1_INTRINSICS",
    "Dataset",
    "DatasetError",
    "DatasetSpec",
    "Episode",
    "EpisodeError",
    "EpisodeInfo",
    "Manifest",
    "Problem",
    "TumFormatError",
    "TumImportReport",
    "atomic_write",
    "check_episode_file",
    "completeness_problems",
    "create_dataset",
    "file_sha256",
    "import_tum",
    "open_dataset",
    "read_episode",
    "read_episode_info",
    "require_complete",
    "verify_dataset",
    "write_episode",
    "write_episode_frames",
]
