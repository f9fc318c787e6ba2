"""The on-disk dataset format: episodes, dataset directories, verification and imports.

See ``docs/data-format.md``. Depends only on numpy, the standard library, ``pewm.geometry`` and
``pewm.atomic`` (Pillow is imported lazily by the TUM importer, rich lazily for progress bars).
"""

from pewm.atomic import TEMP_SUFFIX, atomic_write
from pewm.data.dataset import (
    DATASET_FORMAT_VERSION,
    DATASET_JSON,
    EPISODES_DIR,
    Dataset,
    DatasetError,
    DatasetSpec,
    Problem,
    create_dataset,
    open_dataset,
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
from pewm.data.tum import TUM_FR1_INTRINSICS, TumFormatError, TumImportReport, import_tum


__all__ = [
    "DATASET_FORMAT_VERSION",
    "DATASET_JSON",
    "EPISODES_DIR",
    "FORMAT_VERSION",
    "KINDS",
    "SPLITS",
    "TEMP_SUFFIX",
    "TUM_FR1_INTRINSICS",
    "Dataset",
    "DatasetError",
    "DatasetSpec",
    "Episode",
    "EpisodeError",
    "EpisodeInfo",
    "Problem",
    "TumFormatError",
    "TumImportReport",
    "atomic_write",
    "check_episode_file",
    "create_dataset",
    "import_tum",
    "open_dataset",
    "read_episode",
    "read_episode_info",
    "verify_dataset",
    "write_episode",
    "write_episode_frames",
]
