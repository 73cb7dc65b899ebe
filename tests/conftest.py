"""Shared fixtures: the real data of ../shared/data (skipped where absent) and made-up data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """``$WSI_AUG_DATA`` if set, else ``../shared/data`` beside the repository; None if absent."""
    env = os.environ.get("WSI_AUG_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real slides and tiles; the test is skipped with the reason where they are absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("real data not found: set WSI_AUG_DATA or place it at ../shared/data")
    return path


@pytest.fixture(scope="session")
def tiny_work(tmp_path_factory: pytest.TempPathFactory):
    """A work folder with small extract.zarr and structure.zarr stores (64 px, 16 patches)."""
    from tests.factories import make_tiny_work

    return make_tiny_work(tmp_path_factory.mktemp("tiny-work"))


@pytest.fixture(scope="session")
def tiny_work_uncut(tmp_path_factory: pytest.TempPathFactory):
    """`tiny_work` without its patches that cross a tile edge: the pinned GAN weights' data."""
    from tests.factories import make_tiny_work

    return make_tiny_work(tmp_path_factory.mktemp("tiny-work-uncut"), tile_edges=False)


@pytest.fixture(scope="session")
def phantom_slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three small phantom slides (1536 px square, 0.5 µm/px) with GeoJSON beside."""
    from wsi_aug.phantom import make_phantom_dataset

    out = tmp_path_factory.mktemp("phantom")
    make_phantom_dataset(out, slides=3, seed=0, width=1536, height=1536, mpp=0.5)
    return out


@pytest.fixture(scope="session")
def phantom_work(phantom_slides: Path, tmp_path_factory: pytest.TempPathFactory):
    """A work folder with patches (64 px at 2 µm/px, with negatives) from the phantom slides."""
    from wsi_aug.stages.extract import ExtractParams, extract
    from wsi_aug.store import WorkDir

    work = tmp_path_factory.mktemp("phantom-work")
    params = ExtractParams(
        inputs=(phantom_slides,), size=64, mpp=2.0, negatives=3, split=(0.34, 0.33, 0.33), seed=0
    )
    extract(work, params, progress=False)
    return WorkDir(work)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one torch thread, and do not stall on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
