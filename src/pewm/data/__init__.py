"""The on-disk dataset format: episodes, dataset directories, verification and imports.

See ``docs/data-format.md``. Depends only on numpy, the standard library, ``pewm.geometry`` and
``pewm.atomic`` (Pillow and scipy.sparse are imported lazily by the importers and the fit, rich
lazily for progress bars).
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
from pewm.data.fit import fit_frames, fit_intrinsics, fov_deg
from pewm.data.importing import ImportFormatError, ImportReport
from pewm.data.scannet import ScanNetFormatError, import_scannet
from pewm.data.folder import FolderFormatError, import_folder
from pewm.data.export import LAYOUTS, export_episode, export_folder, export_scannet, export_tum


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
    "FolderFormatError",
    "ImportFormatError",
    "ImportReport",
    "LAYOUTS",
    "Manifest",
    "Problem",
    "ScanNetFormatError",
    "TumFormatError",
    "TumImportReport",
    "atomic_write",
    "check_episode_file",
    "completeness_problems",
    "create_dataset",
    "export_episode",
    "export_folder",
    "export_scannet",
    "export_tum",
    "file_sha256",
    "fit_frames",
    "fit_intrinsics",
    "fov_deg",
    "import_folder",
    "import_scannet",
    "import_tum",
    "open_dataset",
    "read_episode",
    "read_episode_info",
    "require_complete",
    "verify_dataset",
    "write_episode",
    "write_episode_frames",
]
